"""Anti-repetition rows on open-ended text, against greedy decoding."""

from __future__ import annotations

from sglang_ilsi_lab.bench.spec import MethodSpec, Published, register_method

register_method(MethodSpec(
    name="look_back", family="repetition", tasks=("open_text",),
    ilsi={"method": "look_back", "alpha": 0.5, "top_k": 8}, temperature=0.0,
    baselines=("greedy",), metric="diversity",
    published=Published("Xu et al. 2023, Look-back Decoding for Open-Ended Text Generation "
                        "(EMNLP)",
                        "far fewer repetitions than greedy decoding (diversity up) on "
                        "WikiText-103 and WritingPrompts continuations"),
    notes="greedy except when a step's distribution matches an earlier one (KL < alpha)",
))
register_method(MethodSpec(
    name="penalty_decoding", family="repetition", tasks=("open_text",),
    ilsi={"method": "penalty_decoding", "penalty": 1.5, "window": 64}, temperature=0.0,
    baselines=("greedy",), metric="diversity",
    published=Published("Zhu et al. 2023, Penalty Decoding: Well Suppress the Self-"
                        "Reinforcement Effect in Open-Ended Text Generation",
                        "a forgetting-window repetition penalty makes greedy output far less "
                        "repetitive (rep-n down, diversity up)"),
))
