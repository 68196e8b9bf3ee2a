"""Plain references for the methods that combine several next-token
distributions (contrastive decoding, DExperts, MOD, CAD and the other
disturbed-prompt methods, DoLa, SLED).

Written independently of ``sglang_ilsi.methods``: one row at a time, float64
numpy, each formula from its definition. ``row`` is the target's raw logits
(``-inf`` where a grammar masked a token); ``other`` is the amateur's, the
second context's, or a dict of layer → early-exit logits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

NEG_INF = float("-inf")


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    top = x[finite].max()
    out = np.full_like(x, NEG_INF)
    out[finite] = x[finite] - top - math.log(np.exp(x[finite] - top).sum())
    return out


def contrastive_decoding(row, amateur, alpha: float, amateur_temperature: float) -> np.ndarray:
    lp_e = log_softmax(row)
    lp_a = log_softmax(np.asarray(amateur, dtype=np.float64) / amateur_temperature)
    p_e = np.exp(lp_e)
    head = p_e >= alpha * p_e.max()
    out = np.full(len(row), NEG_INF)
    out[head] = lp_e[head] - lp_a[head]
    return out


def contrastive_decoding_beta(row, amateur, alpha: float, beta: float) -> np.ndarray:
    row = np.asarray(row, dtype=np.float64)
    head = row >= math.log(alpha) + row[np.isfinite(row)].max()
    out = np.full(len(row), NEG_INF)
    out[head] = (1 + beta) * row[head] - beta * np.asarray(amateur, dtype=np.float64)[head]
    return out


def dexperts(row, expert, anti, alpha: float) -> np.ndarray:
    out = np.asarray(row, dtype=np.float64).copy()
    if expert is not None:
        out = out + alpha * np.asarray(expert, dtype=np.float64)
    if anti is not None:
        out = out - alpha * np.asarray(anti, dtype=np.float64)
    return out


def linear_combination(row, others: Sequence[np.ndarray], weights: Sequence[float],
                       target_weight: float) -> np.ndarray:
    out = target_weight * log_softmax(row)
    for other, w in zip(others, weights):
        out = out + w * log_softmax(other)
    return out


def cad(row, second, alpha: float) -> np.ndarray:
    return (1 + alpha) * np.asarray(row, np.float64) - alpha * np.asarray(second, np.float64)


def contrast(row, second, weight: float) -> np.ndarray:
    """Instructive decoding (ε) and ROSE (α): z − w·z_second."""
    return np.asarray(row, np.float64) - weight * np.asarray(second, np.float64)


def pmi_decode(row, second, lam: float, top_p: float) -> np.ndarray:
    lp = log_softmax(row)
    lp_plain = log_softmax(second)
    order = sorted(range(len(row)), key=lambda i: (-lp[i], i))
    keep, mass = set(), 0.0
    for i in order:
        if mass >= top_p and keep:
            break
        keep.add(i)
        mass += math.exp(lp[i]) if np.isfinite(lp[i]) else 0.0
    out = np.full(len(row), NEG_INF)
    for i in keep:
        out[i] = lp[i] + lam * (lp[i] - lp_plain[i])
    return out


def cfg(row, second, gamma: float) -> np.ndarray:
    cond, uncond = log_softmax(row), log_softmax(second)
    return uncond + gamma * (cond - uncond)


def jsd(p: np.ndarray, q: np.ndarray) -> float:
    m = (p + q) / 2
    total = 0.0
    for a, b in ((p, m), (q, m)):
        nz = a > 0
        total += float((a[nz] * (np.log(a[nz]) - np.log(b[nz]))).sum())
    return total / 2


def dola(row, layers: dict[int, np.ndarray], alpha: float) -> tuple[np.ndarray, int]:
    """(scores, chosen premature layer)."""
    lp_final = log_softmax(row)
    p_final = np.exp(lp_final)
    divergences = {j: jsd(p_final, np.exp(log_softmax(z))) for j, z in layers.items()}
    chosen = max(divergences, key=lambda j: (divergences[j], -list(layers).index(j)))
    lp_early = log_softmax(layers[chosen])
    head = p_final >= alpha * p_final.max()
    out = np.full(len(row), NEG_INF)
    out[head] = lp_final[head] - lp_early[head]
    return out, chosen


def sled(row, layers: dict[int, np.ndarray], rate: float, scale: int) -> np.ndarray:
    z = np.asarray(row, np.float64)
    finite = np.isfinite(z)
    p = np.exp(log_softmax(z))
    k = min(scale, int(finite.sum()))
    top = sorted(range(len(z)), key=lambda i: (-z[i], i))[:k]
    m = np.zeros((len(layers), k))
    for a, early in enumerate(layers.values()):
        g = np.where(finite, z, 0.0) - np.where(finite, np.asarray(early, np.float64), 0.0)
        for b, i in enumerate(top):
            e = -p.copy()
            e[i] += 1.0  # e_i − P_N
            direction = -e  # P_N − e_i
            cos = float(g @ direction) / (np.linalg.norm(g) * np.linalg.norm(direction))
            m[a, b] = max(cos, 0.0) ** 2
    out = np.full(len(z), NEG_INF)
    total = m.sum()
    for b, i in enumerate(top):
        lat = m[:, b].sum() / total if total > 0 else p[i]
        out[i] = z[i] - rate * (p[i] - lat) if total > 0 else z[i]
    return out
