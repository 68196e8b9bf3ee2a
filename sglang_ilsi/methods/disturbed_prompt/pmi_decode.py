"""PMI-decode: pointwise mutual information with the grounding document.

Nandwani, Kumar, Feng, Marcus, Su, Lee & Chen, "Pointwise Mutual Information
Based Metric and Decoding Strategy for Faithful Generation in Document
Grounded Dialogs", EMNLP 2023 (arXiv:2305.12191).

Within the nucleus (top-p) of the grounded distribution p(y | d, h), tokens are
scored by their log-probability plus λ times their pointwise mutual
information with the document d:

    score(y) = log p(y | d, h) + λ · [log p(y | d, h) − log p(y | h)]   (y in the nucleus),

−inf outside the nucleus. The second context is the prompt without the
document (``remove`` or ``second_prompt``). Our reading: the paper combines the
two terms for the tokens of the nucleus; p = 0.9 and λ = 1 are our defaults.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import SECOND, RowContext, column, stacked
from sglang_ilsi.methods.disturbed_prompt.second_context import (
    SECOND_PROMPT_PARAMS,
    SecondContextMethod,
)
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register


def nucleus(log_p: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask of each row's smallest set of most likely tokens with mass ≥ top_p
    (ties broken by the sort; the top token always kept)."""
    sorted_lp, order = log_p.sort(dim=-1, descending=True)
    mass_before = sorted_lp.exp().cumsum(dim=-1) - sorted_lp.exp()
    keep_sorted = mass_before < top_p
    keep_sorted[:, 0] = True
    return torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)


@register
class PmiDecode(SecondContextMethod):
    """PMI-decode: log p(y|d,h) + λ·PMI(y; d | h) within the top-p nucleus."""

    name = "pmi_decode"
    family = "context-aware/disturbed-prompt"
    paper = "Nandwani et al. 2023, PMI-Decode (arXiv:2305.12191)"
    example = {"second_prompt": "Answer:"}  # the prompt without its document
    params = (
        Param("lam", "float", 1.0, "weight λ of the PMI term", minimum=0.0, maximum=10.0),
        Param("top_p", "float", 0.9, "nucleus of the grounded distribution",
              minimum=0.0, maximum=1.0, exclusive_minimum=True),
        *SECOND_PROMPT_PARAMS,
    )

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        grounded = torch.log_softmax(logits, dim=-1)
        plain = torch.log_softmax(stacked(rows, SECOND, logits), dim=-1)
        score = grounded + column(rows, "lam", logits) * (grounded - plain)
        keep = nucleus(grounded, column(rows, "top_p", logits))
        return score.masked_fill_(~keep, float("-inf"))
