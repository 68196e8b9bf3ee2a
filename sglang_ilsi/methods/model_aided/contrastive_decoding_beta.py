"""Contrastive decoding in logit space with a β weight (the reasoning variant).

O'Brien & Lewis, "Contrastive Decoding Improves Reasoning in Large Language
Models", 2023 (arXiv:2309.09117).

With s_e and s_a the expert's (target's) and the amateur's logits,

    CD_β(x) = (1 + β) · s_e(x) − β · s_a(x)     for x with s_e(x) ≥ log α + max_w s_e(w),

and −inf elsewhere (the α-mask is applied to the expert's logits, as in the
paper). β = 0 is plain decoding over the α-head; the paper uses β = 0.5,
α = 0.1. Returned as the row's new logits, so greedy decoding takes its argmax
and sampling samples softmax(CD_β / T).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import RowContext, column
from sglang_ilsi.methods.model_aided.contrastive_decoding import AMATEUR, AmateurMethod
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register


@register
class ContrastiveDecodingBeta(AmateurMethod):
    """Contrastive decoding in logit space: (1+β)·s_expert − β·s_amateur, α-masked."""

    name = "contrastive_decoding_beta"
    family = "model-aided/small-lm"
    paper = "O'Brien & Lewis 2023, Contrastive Decoding Improves Reasoning (arXiv:2309.09117)"
    params = (
        AMATEUR,
        Param("alpha", "float", 0.1, "plausibility threshold α, applied in logit space",
              minimum=0.0, maximum=1.0, exclusive_minimum=True),
        Param("beta", "float", 0.5, "contrast weight β", minimum=0.0, maximum=10.0),
    )

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        return contrast_beta(logits, cls.amateur_logits(rows, logits),
                             column(rows, "alpha", logits), column(rows, "beta", logits))


def contrast_beta(expert: torch.Tensor, amateur: torch.Tensor,
                  alpha: torch.Tensor | float, beta: torch.Tensor | float) -> torch.Tensor:
    """CD_β over rows of logits (``[rows, vocab]``): ``(1+β)·s_e − β·s_a`` where
    ``s_e ≥ log α + max s_e``, −inf elsewhere. ``alpha``/``beta`` are floats
    or ``[rows, 1]`` columns. Also the verified distribution of speculative
    contrastive decoding (``engine/speculative/contrastive.py``)."""
    alpha = torch.as_tensor(alpha, dtype=expert.dtype, device=expert.device)
    cutoff = alpha.log() + expert.max(dim=-1, keepdim=True).values
    score = (1.0 + beta) * expert - beta * amateur
    return score.masked_fill_(expert < cutoff, float("-inf"))
