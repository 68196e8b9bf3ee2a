"""Speculative rows: lossless speed-ups, against greedy decoding (and, for
speculative contrastive decoding, against contrastive decoding).

Each row serves the same target with a speculative algorithm (its own server,
SGLang's flags): ``STANDALONE`` with the target's same-tokenizer draft
(``lab-draft`` for the lab models, ``smollm2-amateur`` for SmolLM2), ``NGRAM``
(n-gram drafts from the prompt and the output so far) and our registered
``SELF_SPECULATIVE`` (the target skipping every other layer drafts) and
``LOOKAHEAD`` (a Jacobi window feeding the n-gram pool); on the code-completion task,
``REST`` (drafts retrieved from the text of the task's store) beside NGRAM. The
published claim is the same for all, a ``speed`` claim: outputs identical to
greedy decoding (effect 0 on the task metric, margin 0) at a lower wall time,
judged on the time ratio; the per-item metrics
``accept_length`` (tokens per target forward) and ``accept_rate`` (accepted
share of drafted tokens) come from SGLang's ``meta_info``.
"""

from __future__ import annotations

from sglang_ilsi_lab.bench.spec import Generation, Item, MethodSpec, Published, register_method
from sglang_ilsi_lab.bench.specs.multi_distribution import AMATEURS, companion_path

# the same-tokenizer companion of each target doubles as its draft
DRAFTS = AMATEURS
SHAPE = ["--speculative-num-steps", "3", "--speculative-eagle-topk", "1",
         "--speculative-num-draft-tokens", "4"]
TASKS = ("arithmetic", "open_text")


def draft_args(model: str) -> list[str]:
    """STANDALONE flags with ``model``'s same-tokenizer draft (built if missing)."""
    return ["--speculative-algorithm", "STANDALONE", "--speculative-draft-model-path",
            companion_path(model, "draft"), *SHAPE]


def acceptance(item: Item, gen: Generation) -> dict[str, float]:
    """Tokens per target forward and the accepted share of drafts (SGLang's meta_info)."""
    out = {}
    if "spec_accept_length" in gen.meta:
        out["accept_length"] = float(gen.meta["spec_accept_length"])
    if gen.meta.get("spec_accept_rate") is not None:
        out["accept_rate"] = float(gen.meta["spec_accept_rate"])
    return out


def lossless_speed(source: str, claim: str) -> Published:
    """A speed claim whose quality check is identity: the metric's effect CI must be
    exactly [0, 0]."""
    return Published(source, claim, kind="speed", margin=0.0)


LOSSLESS = ("; the row is lossless by construction (tests check greedy token identity), so "
            "the effect must be exactly 0 and the time column is the speed-up (below 1) or "
            "slow-down (above 1); on this 2-core CPU every forward carries a fixed scheduler "
            "cost of the same order as a small model's compute, which drafting multiplies")

register_method(MethodSpec(
    name="speculative_standalone", family="speculative", tasks=TASKS, temperature=0.0,
    baselines=("greedy",), expected_sign=0, server_args=draft_args, models=tuple(DRAFTS),
    metrics_hook=acceptance,
    published=lossless_speed(
        "Leviathan et al. 2023, Fast Inference from Transformers via Speculative Decoding",
        "identical outputs, 2-3x faster than greedy decoding for T5-XXL with a T5-small draft"),
    notes="draft: lab-draft (lab models) or smollm2-amateur (SmolLM2), 3 draft steps" + LOSSLESS,
))
register_method(MethodSpec(
    name="speculative_ngram", family="speculative", tasks=(*TASKS, "code_completion"),
    temperature=0.0,
    baselines=("greedy",), expected_sign=0, metrics_hook=acceptance,
    server_args=["--speculative-algorithm", "NGRAM", "--speculative-num-draft-tokens", "4"],
    published=lossless_speed(
        "Fu et al. 2024, Break the Sequential Dependency of LLM Inference Using Lookahead "
        "Decoding (n-gram drafts verified in one forward)",
        "identical outputs, 1.5-2.3x faster than greedy decoding on MT-Bench and code"),
    notes="SGLang's NGRAM: drafts from an n-gram trie over the prompt and the output so far "
          "(no Jacobi lookahead branch)" + LOSSLESS,
))
register_method(MethodSpec(
    name="self_speculative", family="speculative", tasks=TASKS, temperature=0.0,
    baselines=("greedy",), expected_sign=0, metrics_hook=acceptance,
    server_args=["--speculative-algorithm", "SELF_SPECULATIVE", *SHAPE],
    published=lossless_speed(
        "Zhang et al. 2024, Draft & Verify: Lossless Large Language Model Acceleration via "
        "Self-Speculative Decoding",
        "identical outputs, up to 1.99x faster on LLaMA-2-13B with about half the layers "
        "skipped (chosen by Bayesian optimisation)"),
    notes="draft: the target skipping every other layer (first and last kept; a fixed rule, "
          "not the paper's search)" + LOSSLESS,
))
register_method(MethodSpec(
    name="lookahead", family="speculative", tasks=TASKS, temperature=0.0,
    baselines=("greedy",), expected_sign=0, metrics_hook=acceptance,
    server_args=["--speculative-algorithm", "LOOKAHEAD"],
    published=lossless_speed(
        "Fu et al. 2024, Break the Sequential Dependency of LLM Inference Using Lookahead "
        "Decoding",
        "identical outputs, 1.5-2.3x faster than greedy decoding on MT-Bench and code "
        "(LLaMA-2 7B-70B, W=15 N=5 on A100)"),
    notes="window W=4, N=3 (8 nodes) plus an 8-token pool tree, 16 tokens verified per "
          "step" + LOSSLESS,
))


def rest_args(model: str) -> list[str]:
    """REST drafting from the text of the code-completion task's store (the ``email``
    package's other files), NGRAM's draft budget."""
    from sglang_ilsi_lab.bench.specs.code_completion import store_path

    return ["--speculative-algorithm", "REST", "--ilsi-rest-datastore", str(store_path(model)),
            "--speculative-num-draft-tokens", "4"]


register_method(MethodSpec(
    name="speculative_rest", family="speculative", tasks=("code_completion",),
    temperature=0.0, baselines=("greedy", "speculative_ngram"), expected_sign=0,
    metrics_hook=acceptance, server_args=rest_args, models=("smollm2-135m-instruct",),
    published=lossless_speed(
        "He et al. 2024, REST: Retrieval-Based Speculative Decoding (NAACL)",
        "identical outputs, 1.62-2.36x faster than greedy decoding (HumanEval with CodeLlama "
        "7B/13B drafting from a datastore of The Stack; MT-Bench with Vicuna)"),
    notes="drafts from the text of the store the kNN-LM and NEST rows read (the email "
          "package's files other than the held-out ones), 4 draft tokens as NGRAM's row"
          + LOSSLESS,
))


def contrastive_args(model: str) -> list[str]:
    """SPECULATIVE_CONTRASTIVE with ``model``'s same-tokenizer draft as the amateur,
    α and β as in the ``contrastive_decoding_beta`` row."""
    return ["--speculative-algorithm", "SPECULATIVE_CONTRASTIVE",
            "--speculative-draft-model-path", companion_path(model, "draft"), *SHAPE,
            "--ilsi-scd-alpha", "0.1", "--ilsi-scd-beta", "0.5"]


register_method(MethodSpec(
    name="speculative_contrastive", family="speculative", tasks=TASKS, temperature=0.0,
    baselines=("contrastive_decoding_beta", "greedy"), expected_sign=0,
    metric={"open_text": "diversity", "arithmetic": "accuracy"},
    metrics_hook=acceptance, server_args=contrastive_args, models=tuple(DRAFTS),
    published=lossless_speed(
        "Yuan et al. 2024, Speculative Contrastive Decoding (ACL)",
        "one smaller LM drafts and is the amateur: on four diverse tasks, acceleration "
        "comparable to speculative decoding with the quality gains of contrastive decoding"),
    notes="compared with contrastive_decoding_beta (same amateur, α = 0.1, β = 0.5, which "
          "SPECULATIVE_CONTRASTIVE verifies against): greedy outputs are those of CD by "
          "construction (tests check token identity against a transformers CD oracle), so "
          "the effect must be 0 and the time column is the speed-up over CD; 'fwd tokens' "
          "counts the amateur's contrast forwards (every verified position) but, as in the "
          "other speculative rows, not the draft steps",
))
