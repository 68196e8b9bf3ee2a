"""A brute-force reference for the ``monitor`` method (numpy, no tries, no windows)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def allowed_tokens(history: Sequence[int], triggers: Sequence[Sequence[int]],
                   names: Sequence[Sequence[int]]) -> set[int] | None:
    """A(s) after the latest trigger occurrence in ``history``, or None when unconstrained."""
    history = list(history)
    ends = [j for t in triggers for j in range(len(t), len(history) + 1)
            if history[j - len(t):j] == list(t)]
    if not ends:
        return None
    s = history[max(ends):]
    if any(list(n) == s for n in names):
        return None
    nxt = {n[len(s)] for n in names if len(n) > len(s) and list(n[:len(s)]) == s}
    return nxt or None


def monitor(row: np.ndarray, prompt_ids: Sequence[int], output_ids: Sequence[int],
            triggers: Sequence[Sequence[int]], names: Sequence[Sequence[int]]) -> np.ndarray:
    allowed = allowed_tokens(list(prompt_ids) + list(output_ids), triggers, names)
    if allowed is None:
        return row
    out = np.full_like(row, -np.inf)
    keep = sorted(allowed)
    out[keep] = row[keep]
    if not np.isfinite(out).any():
        return row
    return out
