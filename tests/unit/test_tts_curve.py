"""``sglang_ilsi_lab.tts_curve``: the test-time-scaling summary and plot from a bench run's
results (made-up cells here; the real run is ``docs/test-time-scaling*.json``)."""

from __future__ import annotations

from sglang_ilsi_lab import tts_curve


def _cell(method: str, accuracy: float, tokens: float, effects: dict[str, float]) -> dict:
    return {"task": "arithmetic", "method": method,
            "metrics": {"accuracy": {"mean": accuracy, "ci_low": accuracy - 0.05,
                                     "ci_high": accuracy + 0.05, "n": 200}},
            "cost": {"forward_tokens": tokens, "seconds_per_item": 0.1},
            "effects": [{"baseline": b, "diff": d, "ci_low": d - 0.04, "ci_high": d + 0.04,
                         "n": 200, "cost_ratio": {"forward_tokens": 1.0}}
                        for b, d in effects.items()]}


def test_verifier_lines_and_claims_sit_beside_the_trained_ones(tmp_path):
    results = {"cells": [
        _cell("sample", 0.55, 24, {}), _cell("greedy", 0.60, 24, {}),
        _cell("self_consistency@4", 0.61, 96, {"sample": 0.06}),
        _cell("best_of_n_orm@4", 0.58, 96, {"self_consistency@4": -0.03}),
        _cell("best_of_n_verifier@4", 0.72, 96, {"self_consistency@4": 0.11}),
        _cell("prm_beam_search_verifier@4", 0.76, 96, {"self_consistency@4": 0.15,
                                                        "best_of_n_verifier@4": 0.035}),
    ]}
    summary = tts_curve.summarise(results)
    assert [p["n"] for p in summary["curve"]["best_of_n_verifier"]] == [1, 4]
    assert summary["curve"]["dvts_verifier"] == [summary["curve"]["dvts"][0]]  # N = 1 only
    claims = summary["claims"]
    against = claims["verifier_guided_vs_majority_same_n"]
    assert against["reproduced_at"] == ["best_of_n_verifier@4", "prm_beam_search_verifier@4"]
    assert against["effects"]["best_of_n_orm@4"]["sign"] == "0"
    assert claims["prm_beam_search_vs_best_of_n"]["effects"][
        "prm_beam_search_verifier@4"]["diff"] == 0.035
    tts_curve.plot(summary, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 10_000
