"""Grammar-constrained decoding rows: a named grammar vs unconstrained greedy."""

from __future__ import annotations

from sglang_ilsi.bench.spec import MethodSpec, Published, register_method

register_method(MethodSpec(
    name="json_grammar", family="grammar", tasks=("json",),
    ilsi={"grammar": "json-object"}, temperature=0.0, baselines=("greedy",), metric="valid",
    quick=True,
    published=Published("Willard & Louf 2023 (Outlines); Geng et al. 2023, Grammar-Constrained "
                        "Decoding for Structured NLP Tasks without Finetuning",
                        "constrained decoding makes every output parse (validity 100%) and "
                        "improves structured tasks over unconstrained decoding"),
    notes="grammar 'json-object' from the library, compiled by the server's xgrammar backend",
))
