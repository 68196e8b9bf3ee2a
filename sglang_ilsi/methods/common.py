"""Small helpers shared by the built-in truncation methods."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import RowContext


def keep_argmax(keep: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``keep`` (bool ``[n, vocab]``) with each row's argmax of ``scores`` forced True."""
    return keep.scatter(-1, scores.argmax(dim=-1, keepdim=True), True)


def count_kept(keep: torch.Tensor, rows: Sequence[RowContext]) -> None:
    """Add each row's number of kept tokens to ``stats["kept_tokens"]`` (one sync per
    call), so the cost report shows the average support size."""
    for row, kept in zip(rows, keep.sum(dim=-1).tolist(), strict=True):
        row.stats["kept_tokens"] = row.stats.get("kept_tokens", 0.0) + float(kept)
