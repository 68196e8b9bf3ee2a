"""Truncation-sampling rows, at T=1, against pure sampling at T=1."""

from __future__ import annotations

from sglang_ilsi.bench.spec import MethodSpec, Published, register_method

TASKS = ("arithmetic", "open_text")
METRIC = {"arithmetic": "accuracy", "open_text": "ppl"}

ROWS = [
    ("typical", {"method": "typical", "mass": 0.9}, True,
     Published("Meister et al. 2023, Locally Typical Sampling (TACL)",
               "more human-like, less degenerate text than ancestral sampling at T=1 "
               "(higher MAUVE, fewer repetitions than greedy)")),
    ("eta", {"method": "eta", "epsilon": 0.0009}, False,
     Published("Hewitt et al. 2022, Truncation Sampling as Language Model Desmoothing",
               "cutting low-probability tokens beats pure sampling on MAUVE and human "
               "judgements")),
    ("epsilon", {"method": "epsilon", "epsilon": 0.0009}, False,
     Published("Hewitt et al. 2022, Truncation Sampling as Language Model Desmoothing",
               "epsilon truncation beats pure sampling on MAUVE")),
    ("mirostat", {"method": "mirostat", "tau": 3.0}, False,
     Published("Basu et al. 2021, Mirostat (ICLR)",
               "holds perplexity at a target, avoiding both the boredom trap (repetition) and "
               "the confusion trap (incoherence) of plain sampling")),
    ("top_n_sigma", {"method": "top_n_sigma", "n": 1.0}, False,
     Published("Tang et al. 2024, Top-nσ: Not All Logits Are You Need",
               "keeps reasoning accuracy at high temperature where plain sampling collapses "
               "(GSM8K)")),
    ("adaptive", {"method": "adaptive", "epsilon": 0.001}, False,
     Published("Zhu et al. 2024, Improving Open-Ended Text Generation via Adaptive Decoding "
               "(ICML)",
               "higher MAUVE and coherence than pure and top-p sampling at similar diversity")),
]

for name, ilsi, quick, published in ROWS:
    register_method(MethodSpec(
        name=name, family="truncation sampling", tasks=TASKS, ilsi=ilsi, temperature=1.0,
        baselines=("sample_t1",), metric=METRIC, published=published, quick=quick,
    ))
    # the same at T=1.5 on arithmetic, where truncation has more to cut (cf. Top-nσ)
    register_method(MethodSpec(
        name=f"{name}@T1.5", family="truncation sampling", tasks=("arithmetic",), ilsi=ilsi,
        temperature=1.5, baselines=("sample_t1.5",), metric="accuracy", published=published,
    ))
