"""Epsilon sampling.

Hewitt, Manning & Liang, "Truncation Sampling as Language Model Desmoothing",
Findings of EMNLP 2022 (arXiv:2210.15191).

With p = softmax(logits / T), keep exactly the tokens whose probability exceeds a
fixed floor: A = {x : p(x) > ε}. The argmax is always kept, so the set is never
empty. Everything else is set to -inf.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext, column, scaled
from sglang_ilsi.methods.common import scratch, truncate
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register


@register
class EpsilonSampling(LogitsMethod):
    """Keep the tokens whose probability exceeds a fixed floor ε."""

    name = "epsilon"
    family = "independent/sampling"
    paper = ("Hewitt, Manning & Liang 2022, Truncation Sampling as Language Model "
             "Desmoothing (Findings of EMNLP), arXiv:2210.15191")
    argmax_invariant = True
    params = (
        Param("epsilon", "float", 3e-4, "ε: tokens with probability ≤ ε are removed",
              minimum=0.0, maximum=1.0, exclusive_minimum=True, exclusive_maximum=True),
    )

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        s = scaled(logits, rows, out=scratch("s", logits))
        p = torch.softmax(s, dim=-1, out=scratch("p", logits))
        keep = torch.gt(p, column(rows, "epsilon", logits), out=scratch("keep", p, torch.bool))
        # p is monotone in s, so a row keeps its argmax unless it keeps nothing.
        return truncate(logits, keep, s, rows)
