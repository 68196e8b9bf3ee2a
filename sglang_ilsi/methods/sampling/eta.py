"""Eta sampling.

Hewitt, Manning & Liang, "Truncation Sampling as Language Model Desmoothing",
Findings of EMNLP 2022 (arXiv:2210.15191).

With p = softmax(logits / T) and entropy H = -Σ p log p (nats), the threshold is
entropy-dependent:

    η = min(ε, √ε · exp(-H)),    A = {x : p(x) > η}.

High-entropy (flat) distributions use the full floor ε; peaked ones a lower
floor, so plausible low-probability tokens survive. The argmax is always kept.
Everything outside A is set to -inf.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext, column, scaled
from sglang_ilsi.methods.common import count_kept, keep_argmax
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register


@register
class EtaSampling(LogitsMethod):
    """Keep tokens with p > η, where η = min(ε, √ε·exp(-H)) adapts to the entropy."""

    name = "eta"
    family = "independent/sampling"
    paper = ("Hewitt, Manning & Liang 2022, Truncation Sampling as Language Model "
             "Desmoothing (Findings of EMNLP), arXiv:2210.15191")
    argmax_invariant = True
    params = (
        Param("epsilon", "float", 3e-4, "ε: the largest possible threshold η",
              minimum=0.0, maximum=0.5, exclusive_minimum=True, exclusive_maximum=True),
    )

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        s = scaled(logits, rows)
        p = torch.softmax(s, dim=-1)
        entropy = torch.special.entr(p).sum(dim=-1, keepdim=True)  # entr(0) = 0
        eps = column(rows, "epsilon", logits)
        eta = torch.minimum(eps, eps.sqrt() * torch.exp(-entropy))
        keep = keep_argmax(p > eta, s)
        count_kept(keep, rows)
        return logits.masked_fill(~keep, float("-inf"))
