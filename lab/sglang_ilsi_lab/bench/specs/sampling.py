"""Truncation-sampling rows, at T=1, against pure sampling at T=1."""

from __future__ import annotations

from sglang_ilsi_lab.bench.spec import MethodSpec, Published, register_method

TASKS = ("arithmetic", "open_text")
METRIC = {"arithmetic": "accuracy", "open_text": "ppl"}
NOTE = ("perplexity under the same model falls by construction when the tail is cut, so "
        "the ppl row is shown but not counted as evidence; the papers' MAUVE (registry: "
        "mauve-text) needs a reference corpus and a feature model this offline machine "
        "lacks, and docs/evidence.json keeps only two texts per cell, so repetition and "
        "diversity cannot be re-judged per item without a rerun (their cell means are in "
        "the table of every cell)")


def by_construction(published: Published) -> Published:
    """The open_text claim of a truncation sampler: its ppl row falls by construction."""
    return Published(published.source, published.claim, kind="by_construction")

ARITHMETIC = Published(
    "no arithmetic result in the paper; expected from the same mechanism (cutting the "
    "unreliable tail) and from Tang et al. 2024, who compare truncation samplers on GSM8K",
    "higher accuracy than pure sampling at the same temperature, more so at high T")

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
               "a temperature-invariant cut below max - n·σ of the logits: keeps reasoning "
               "accuracy at high temperature where plain sampling collapses (GSM8K), and "
               "generation coherent")),
    ("adaptive", {"method": "adaptive", "epsilon": 0.001}, False,
     Published("Zhu et al. 2024, Improving Open-Ended Text Generation via Adaptive Decoding "
               "(ICML)",
               "higher MAUVE and coherence than pure and top-p sampling at similar diversity")),
]

for name, ilsi, quick, published in ROWS:
    own = name == "top_n_sigma"  # the only paper here that reports reasoning accuracy
    on_arithmetic = published if own else ARITHMETIC
    register_method(MethodSpec(
        name=name, family="truncation sampling", tasks=TASKS, ilsi=ilsi, temperature=1.0,
        baselines=("sample_t1",), metric=METRIC, quick=quick, notes={"open_text": NOTE},
        published={"open_text": by_construction(published), "arithmetic": on_arithmetic},
    ))
    # the same at T=1.5 on arithmetic, where truncation has more to cut (cf. Top-nσ)
    register_method(MethodSpec(
        name=f"{name}@T1.5", family="truncation sampling", tasks=("arithmetic",), ilsi=ilsi,
        temperature=1.5, baselines=("sample_t1.5",), metric="accuracy",
        published=on_arithmetic,
    ))
