"""Statistics for the bench: text metrics and bootstrap confidence intervals.

Confidence intervals are percentile bootstrap intervals from
``scipy.stats.bootstrap`` (seeded, so a report is reproducible); an effect is
the *paired* difference of a metric between two rows on the same items
(``paired=True`` resamples items, keeping each item's pair together).

Text metrics follow the contrastive-decoding literature (Welleck et al. 2020;
Su et al. 2022; Li et al. 2023): ``rep-n`` is the share of a text's word
n-grams that repeat an earlier n-gram of the same text, and ``diversity`` is
``prod_{n=2..4} (1 - rep-n)`` (1 = no repeated n-gram, 0 = a loop).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0


def rep_n(text: str, n: int) -> float:
    """Share of word n-grams of ``text`` that are repeats (0 when it has none)."""
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def diversity(text: str) -> float:
    return math.prod(1.0 - rep_n(text, n) for n in (2, 3, 4))


def perplexity(logprobs: Sequence[float]) -> float:
    """exp(-mean log p); NaN for an empty sequence."""
    if not logprobs:
        return float("nan")
    return float(math.exp(-sum(logprobs) / len(logprobs)))


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]


def mean_ci(values: Sequence[float]) -> dict[str, float | int | None]:
    """``{"mean", "ci_low", "ci_high", "n"}`` over the finite values."""
    from scipy.stats import bootstrap

    arr = _finite(values)
    if arr.size == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = float(arr.mean())
    if arr.size < 2 or np.all(arr == arr[0]):
        return {"mean": mean, "ci_low": mean, "ci_high": mean, "n": int(arr.size)}
    res = bootstrap((arr,), np.mean, confidence_level=CONFIDENCE, n_resamples=RESAMPLES,
                    method="percentile", rng=np.random.default_rng(SEED))
    return {"mean": mean, "ci_low": float(res.confidence_interval.low),
            "ci_high": float(res.confidence_interval.high), "n": int(arr.size)}


def paired_diff_ci(a: Sequence[float], b: Sequence[float]) -> dict[str, float | int | None]:
    """Mean of ``a - b`` over pairs where both are finite, with a paired bootstrap CI."""
    from scipy.stats import bootstrap

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size == 0:
        return {"diff": None, "ci_low": None, "ci_high": None, "n": 0}
    diff = float(x.mean() - y.mean())
    d = x - y
    if x.size < 2 or np.all(d == d[0]):
        return {"diff": diff, "ci_low": diff, "ci_high": diff, "n": int(x.size)}

    def statistic(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return u.mean(axis=axis) - v.mean(axis=axis)

    res = bootstrap((x, y), statistic, paired=True, vectorized=True,
                    confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="percentile",
                    rng=np.random.default_rng(SEED))
    return {"diff": diff, "ci_low": float(res.confidence_interval.low),
            "ci_high": float(res.confidence_interval.high), "n": int(x.size)}


def paired_ratio_ci(a: Sequence[float], b: Sequence[float]) -> dict[str, float | int | None]:
    """``mean(a) / mean(b)`` over pairs where both are finite (and ``mean(b) > 0``), with a
    paired bootstrap CI (e.g. the per-item wall-time ratio of two rows)."""
    from scipy.stats import bootstrap

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size == 0 or y.mean() <= 0:
        return {"ratio": None, "ci_low": None, "ci_high": None, "n": 0}
    ratio = float(x.mean() / y.mean())
    if x.size < 2 or (np.all(x == x[0]) and np.all(y == y[0])):
        return {"ratio": ratio, "ci_low": ratio, "ci_high": ratio, "n": int(x.size)}

    def statistic(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return u.mean(axis=axis) / v.mean(axis=axis)

    res = bootstrap((x, y), statistic, paired=True, vectorized=True,
                    confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="percentile",
                    rng=np.random.default_rng(SEED))
    return {"ratio": ratio, "ci_low": float(res.confidence_interval.low),
            "ci_high": float(res.confidence_interval.high), "n": int(x.size)}


def verdict(effect: dict, expected_sign: int) -> str:
    """Whether a measured effect has the published sign, from its CI (the test of an
    ``effect`` claim; :mod:`sglang_ilsi_lab.bench.verdicts` picks the test per claim kind).

    ``reproduced``: the CI excludes 0 on the expected side; ``opposite``: it
    excludes 0 on the other side; ``inconclusive``: the CI contains 0. With
    ``expected_sign == 0`` (the paper reports no change, e.g. ESC's accuracy),
    ``reproduced`` means the CI contains 0.
    """
    low, high = effect.get("ci_low"), effect.get("ci_high")
    if low is None or high is None:
        return "no data"
    if expected_sign == 0:
        return "reproduced" if low <= 0 <= high else "opposite"
    if low > 0:
        return "reproduced" if expected_sign > 0 else "opposite"
    if high < 0:
        return "reproduced" if expected_sign < 0 else "opposite"
    return "inconclusive"
