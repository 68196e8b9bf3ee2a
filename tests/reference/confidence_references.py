"""Plain references for the confidence family: the ``confidence`` method's
statistics and stopping point, DeepConf's vote, self-certainty best-of-N and
its Borda vote (Fu et al. 2025; Kang et al. 2025), written from the papers'
formulas with NumPy and plain Python loops."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def log_softmax(row: np.ndarray) -> np.ndarray:
    finite = np.isfinite(row)
    out = np.full(row.shape, -np.inf)
    top = row[finite].max()
    out[finite] = row[finite] - top - np.log(np.exp(row[finite] - top).sum())
    return out


def token_measures(row: np.ndarray, top_k: int) -> tuple[float, float]:
    """(C_i, SC_i) of one step's raw logits."""
    lp = log_softmax(np.asarray(row, dtype=np.float64))
    finite = lp[np.isfinite(lp)]
    top = np.sort(finite)[::-1][:top_k]
    confidence = -float(np.mean(top))
    certainty = -math.log(len(finite)) - float(np.mean(finite))
    return confidence, certainty


def trace_statistics(rows: Sequence[np.ndarray], top_k: int, window: int,
                     stop_below: float = 0.0) -> dict[str, float]:
    """The statistics of a trace whose steps had these raw logits; measuring ends
    at the first complete window below ``stop_below`` (the stop)."""
    confidences: list[float] = []
    certainties: list[float] = []
    groups: list[float] = []
    stopped_at = None
    for row in rows:
        c, sc = token_measures(row, top_k)
        confidences.append(c)
        certainties.append(sc)
        if len(confidences) >= window:
            groups.append(float(np.mean(confidences[-window:])))
            if stop_below > 0 and groups[-1] < stop_below:
                stopped_at = len(confidences)
                break
    mean = float(np.mean(confidences))
    stats = {"tokens": float(len(confidences)), "mean_confidence": mean,
             "lowest_group_confidence": min(groups) if groups else mean,
             "tail_confidence": float(np.mean(confidences[-window:])),
             "self_certainty": float(np.mean(certainties)),
             "stopped": 0.0 if stopped_at is None else 1.0}
    if stopped_at is not None:
        stats["stopped_at"] = float(stopped_at)
    return stats


def _weighted_winner(answers: Sequence[str | None], weights: Sequence[float],
                     voters: Sequence[int]) -> str | None:
    totals: dict[str, float] = {}
    for t in voters:
        if answers[t] is not None:
            totals[answers[t]] = totals.get(answers[t], 0.0) + weights[t]
    if not totals:
        return None
    best = max(totals.values())
    return [a for a in totals if math.isclose(totals[a], best, rel_tol=0, abs_tol=1e-12)][0]


def deepconf(answers: Sequence[str | None], confidences: Sequence[float],
             stopped: Sequence[bool], mode: str, warmup: int, keep_percent: float
             ) -> tuple[int, list[int]]:
    """(chosen position, voters) of DeepConf over measured candidates."""
    n = len(answers)
    if mode == "offline":
        count = max(1, math.ceil(keep_percent / 100 * n))
        order = sorted(range(n), key=lambda t: (-confidences[t], t))
        voters = sorted(order[:count])
    else:
        bar = float(np.percentile(list(confidences[:warmup]), 100 - keep_percent))
        voters = [t for t in range(n) if not stopped[t] and confidences[t] >= bar]
    winner = _weighted_winner(answers, confidences, voters)
    pool = [t for t in voters if answers[t] == winner] if winner is not None else voters
    best = max(confidences[t] for t in pool)
    return min(t for t in pool if confidences[t] == best), voters


def self_certainty_best(certainties: Sequence[float]) -> int:
    best = max(certainties)
    return min(k for k, c in enumerate(certainties) if c == best)


def self_certainty_vote(answers: Sequence[str | None], certainties: Sequence[float],
                        power: float) -> int:
    n = len(answers)
    ranked = sorted(range(n), key=lambda k: (-certainties[k], k))
    weight = {k: (n - r) ** power for r, k in enumerate(ranked)}
    winner = _weighted_winner(answers, [weight[k] for k in range(n)], range(n))
    pool = [k for k in range(n) if winner is None or answers[k] == winner]
    best = max(weight[k] for k in pool)
    return min(k for k in pool if weight[k] == best)
