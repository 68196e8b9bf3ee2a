"""Sample-and-select rows (one call, N samples inside the server)."""

from __future__ import annotations

from collections import Counter

from sglang_ilsi_lab.bench.spec import Generation, Item, MethodSpec, Published, register_method
from sglang_ilsi_lab.data import synthetic

N = 8
T = 0.7
# ESC's equivalence margin on accuracy (absolute): the paper reports "within 0.1 point"
# on GSM8K at far more items; 0.03 is what 400 paired items can resolve
ESC_MARGIN = 0.03


def candidate_metrics(item: Item, gen: Generation) -> dict[str, float]:
    """``oracle``: some candidate is right (pass@N); ``top_share``: the share of the
    candidates giving the most common answer (how much the samples agree)."""
    texts = [c["text"] for c in gen.report.get("candidates") or []]
    if not texts:
        return {}
    answers = [synthetic.extract_number(t) for t in texts]
    top = Counter(answers).most_common(1)[0][1]
    return {"oracle": float(any(synthetic.check("arithmetic", t, item) for t in texts)),
            "top_share": top / len(texts)}

register_method(MethodSpec(
    name=f"self_consistency@{N}", family="selection", tasks=("arithmetic",),
    ilsi={"method": "self_consistency", "n": N, "extractor": "hash_marker"}, temperature=T,
    metrics_hook=candidate_metrics, baselines=("sample", "greedy"), quick=True,
    published=Published(
        "Wang et al. 2023, Self-Consistency Improves Chain of Thought Reasoning (ICLR)",
        "majority vote over sampled reasoning paths beats a single path: GSM8K +17.9 points "
        "over greedy CoT with PaLM-540B (40 paths); gains shrink for small models"),
))
register_method(MethodSpec(
    name=f"esc@{N}", family="selection", tasks=("arithmetic",),
    ilsi={"method": "esc", "n": N, "window": 4, "extractor": "hash_marker"}, temperature=T,
    metrics_hook=candidate_metrics, baselines=(f"self_consistency@{N}", "sample"), expected_sign=0,
    published=Published(
        "Li et al. 2024, Escape Sky-high Cost: Early-stopping Self-Consistency (ICLR)",
        "the same accuracy as self-consistency with far fewer samples (GSM8K: -80% samples, "
        "accuracy within 0.1 point)",
        kind="equivalence", margin=ESC_MARGIN, cost_measure="forward_tokens"),
    notes="the effect shown is the accuracy difference to self-consistency (expected 0 "
          f"within ±{ESC_MARGIN:g}, a margin fixed in the spec); the saving is in the samples "
          "and forward-token columns",
))
register_method(MethodSpec(
    name=f"mbr@{N}", family="selection", tasks=("arithmetic",),
    ilsi={"method": "mbr", "n": N, "utility": "chrf"}, temperature=T,
    metrics_hook=candidate_metrics, baselines=("sample", "greedy"),
    published=Published(
        "Freitag et al. 2022 (MBR with neural metrics); Bertsch et al. 2023, It's MBR all the "
        "way down",
        "MBR over N samples beats a single sample / beam output; for reasoning, MBR with a "
        "match utility behaves like self-consistency"),
    notes="utility chrF over the whole worked solution, not only the final answer",
))
register_method(MethodSpec(
    name=f"best_of_n@{N}", family="selection", tasks=("arithmetic",),
    ilsi={"method": "best_of_n", "n": N, "reward": "verifier"}, temperature=T,
    metrics_hook=candidate_metrics, baselines=("sample",),
    published=Published(
        "Cobbe et al. 2021, Training Verifiers to Solve Math Word Problems",
        "a trained verifier picking among 100 samples beats a single sample of a fine-tuned "
        "model (GSM8K, about +20 points at 6B)"),
    notes="the reward is the policy itself asked 'Is the answer above correct?': the lab "
          "model never saw such a question, so this measures an untrained verifier",
))

# -- the confidence family (2025): measured inside the server while candidates decode ----------

DEEPCONF_N = 16
# DeepConf's claim is non-inferiority at a lower cost ("equal or higher accuracy with
# fewer tokens"); 0.05 is what the grid's paired items can resolve at N = 16
DEEPCONF_MARGIN = 0.05
DEEPCONF = {"method": "deepconf", "n": DEEPCONF_N, "warmup": 4, "window": 8,
            "extractor": "hash_marker"}
register_method(MethodSpec(
    name=f"self_consistency@{DEEPCONF_N}", family="selection", tasks=("arithmetic",),
    ilsi={"method": "self_consistency", "n": DEEPCONF_N, "extractor": "hash_marker"},
    temperature=T, metrics_hook=candidate_metrics, baselines=("sample",),
    published=Published(
        "Wang et al. 2023, Self-Consistency Improves Chain of Thought Reasoning (ICLR)",
        "majority vote over sampled reasoning paths beats a single path"),
    notes="the budget-matched baseline of the DeepConf rows",
))
for label, extra, claim in (
        ("deepconf", {}, "online (DeepConf-low, η = 10): the same or better accuracy than "
         "self-consistency at the same N with 43-85% fewer generated tokens"),
        ("deepconf_high", {"keep_percent": 90.0}, "online DeepConf-high (η = 90): accuracy "
         "on par with self-consistency, tokens -18 to -59%"),
        ("deepconf_offline", {"mode": "offline"}, "offline (filter the 10% most confident, "
         "weighted vote): the same or better accuracy than self-consistency; no token saving")):
    register_method(MethodSpec(
        name=f"{label}@{DEEPCONF_N}", family="selection", tasks=("arithmetic",),
        ilsi={**DEEPCONF, **extra}, temperature=T, metrics_hook=candidate_metrics,
        baselines=(f"self_consistency@{DEEPCONF_N}", "sample"), expected_sign=0,
        published=Published(
            "Fu et al. 2025, Deep Think with Confidence (arXiv:2508.15260)", claim,
            kind="non_inferiority", margin=DEEPCONF_MARGIN, cost_measure="forward_tokens"),
        notes="the effect shown is the accuracy difference to self-consistency at the same N "
              f"(expected ≥ −{DEEPCONF_MARGIN:g}); warm-up 4 traces, window 8 tokens "
              "(our traces are ~24 tokens, the paper's 2048-token window does not apply); s/item was measured while other jobs shared the 2 cores",
    ))
register_method(MethodSpec(
    name=f"self_certainty@{N}", family="selection", tasks=("arithmetic",),
    ilsi={"method": "self_certainty", "n": N}, temperature=T,
    metrics_hook=candidate_metrics, baselines=("sample", "greedy"),
    published=Published(
        "Kang, Zhao & Song 2025, Scalable Best-of-N Selection for LLMs via Self-Certainty",
        "choosing the most self-certain of N samples beats a single sample without a reward "
        "model (e.g. Llama-3.1-8B, MATH, N = 16-64)"),
))
register_method(MethodSpec(
    name=f"self_certainty_vote@{N}", family="selection", tasks=("arithmetic",),
    ilsi={"method": "self_certainty_vote", "n": N, "extractor": "hash_marker"}, temperature=T,
    metrics_hook=candidate_metrics, baselines=(f"self_consistency@{N}", "sample"),
    published=Published(
        "Kang, Zhao & Song 2025, Scalable Best-of-N Selection for LLMs via Self-Certainty",
        "Borda voting weighted by self-certainty rank matches or beats self-consistency "
        "(a small gain that grows with N)"),
))
