"""Top-nσ sampling.

Tang, Liu, Xu & Huang, "Top-nσ: Not All Logits Are You Need" (arXiv:2411.07641;
ACL 2025 as "Top-nσ: Eliminating Noise in Logit Space for Robust Token Sampling
of LLM").

On the temperature-scaled logits l = logits / T, with M = max(l) and σ the
standard deviation of the finite logits of the row, keep

    A = {x : l(x) ≥ M - n·σ}.

σ uses Bessel's correction (divides by N - 1, N the number of finite logits),
as ``torch.std`` does in the authors' reference code; -inf entries (grammar
masks) are excluded from σ. Because M and σ scale with 1/T the kept set does not
depend on the temperature. The argmax is always kept. Everything else is -inf.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext, column, scaled
from sglang_ilsi.methods.common import count_kept, keep_argmax
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register


@register
class TopNSigma(LogitsMethod):
    """Keep tokens whose scaled logit is within n standard deviations of the maximum."""

    name = "top_n_sigma"
    family = "independent/sampling"
    paper = "Tang et al. 2024, Top-nσ: Not All Logits Are You Need, arXiv:2411.07641"
    argmax_invariant = True
    params = (
        Param("n", "float", 1.0, "n: how many standard deviations below the max logit to keep",
              minimum=0.0, maximum=10.0),
    )

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        s = scaled(logits, rows)
        finite = torch.isfinite(s)
        n_finite = finite.sum(dim=-1, keepdim=True).to(s.dtype)
        zeros = torch.zeros_like(s)
        mean = torch.where(finite, s, zeros).sum(dim=-1, keepdim=True) / n_finite.clamp(min=1)
        sq = torch.where(finite, (s - mean) ** 2, zeros).sum(dim=-1, keepdim=True)
        sigma = (sq / (n_finite - 1).clamp(min=1)).sqrt()
        top = s.max(dim=-1, keepdim=True).values
        keep = keep_argmax(s >= top - column(rows, "n", logits) * sigma, s)
        count_kept(keep, rows)
        return logits.masked_fill(~keep, float("-inf"))
