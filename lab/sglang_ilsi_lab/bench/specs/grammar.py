"""Grammar-constrained decoding rows: a named grammar vs unconstrained greedy."""

from __future__ import annotations

from sglang_ilsi_lab.bench.spec import MethodSpec, Published, register_method

register_method(MethodSpec(
    name="json_grammar", family="grammar", tasks=("json",),
    ilsi={"grammar": "json-object"}, temperature=0.0, baselines=("greedy",), metric="valid",
    quick=True,
    published=Published("Willard & Louf 2023 (Outlines); Geng et al. 2023, Grammar-Constrained "
                        "Decoding for Structured NLP Tasks without Finetuning",
                        "constrained decoding makes every output parse (validity 100%) and "
                        "improves structured tasks over unconstrained decoding"),
    notes="grammar 'json-object' from the library, compiled by the server's xgrammar backend. "
          "The lab model was trained to answer with the single token ' {\"' (space, brace, "
          "quote); the grammar admits no leading space, so its first token must be '{' or "
          "'{\"', which the model never produced after 'JSON:' (a token-boundary mismatch, "
          "the problem token healing addresses): it then drifts, and an output cut at the "
          "token limit is not valid JSON even though every prefix was",
))
