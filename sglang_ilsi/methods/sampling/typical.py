"""Locally typical sampling.

Meister, Pimentel, Wiher & Cotterell, "Locally Typical Sampling", TACL 2023
(arXiv:2202.00666).

With p = softmax(logits / T) and conditional entropy H = -Σ p log p, rank the
tokens by |(-log p(y)) - H| (how far each token's information content is from
the expected one) and keep the smallest set, in that order, whose total
probability reaches ``mass`` (τ in the paper). Everything else is set to -inf.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext, column, scaled
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register


@register
class TypicalSampling(LogitsMethod):
    """Keep the tokens whose surprisal is closest to the entropy, up to probability mass τ."""

    name = "typical"
    family = "independent/sampling"
    paper = "Meister et al. 2023, Locally Typical Sampling (TACL), arXiv:2202.00666"
    argmax_invariant = False
    params = (
        Param("mass", "float", 0.95, "τ: probability mass of the typical set",
              minimum=0.0, maximum=1.0, exclusive_minimum=True),
        Param("min_tokens_to_keep", "int", 1, "never keep fewer tokens than this",
              minimum=1, maximum=1024),
    )

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        logp = torch.log_softmax(scaled(logits, rows), dim=-1)
        p = logp.exp()
        entropy = -(p * logp).nan_to_num().sum(dim=-1, keepdim=True)
        deviation = (-logp - entropy).abs()  # +inf for masked tokens: ranked last
        sorted_dev, order = deviation.sort(dim=-1)
        sorted_p = p.gather(-1, order)
        cum = sorted_p.cumsum(dim=-1)
        # Keep a token if the mass before it is still below τ (so the token that
        # crosses τ is included, as in HF's TypicalLogitsWarper).
        keep_sorted = (cum - sorted_p) < column(rows, "mass", logits)
        min_keep = torch.tensor([r.params["min_tokens_to_keep"] for r in rows],
                                device=logits.device).unsqueeze(1)
        ranks = torch.arange(logits.shape[-1], device=logits.device).unsqueeze(0)
        keep_sorted |= ranks < min_keep
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        return logits.masked_fill(~keep, float("-inf"))
