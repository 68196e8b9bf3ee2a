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
from sglang_ilsi.methods.common import count_true, scratch, truncate
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
        s = scaled(logits, rows, out=scratch("s", logits))
        # nan_to_num(x, 0, 0, 0) = where(isfinite(x), x, 0), without where's branches
        # (slow on CPU for grammar-masked rows); z == s is isfinite(s).
        z = torch.nan_to_num(s, nan=0.0, posinf=0.0, neginf=0.0, out=scratch("z", s))
        finite = torch.eq(z, s, out=scratch("mask", s, torch.bool))
        n_finite = count_true(finite, keepdim=True).to(s.dtype)
        mean = z.sum(dim=-1, keepdim=True) / n_finite.clamp(min=1)
        # s - mean is finite exactly where s is (for |s| < 1e38), so this is the
        # masked sum of squares (s - mean)^2 over the finite entries.
        dev = torch.sub(s, mean, out=z).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        sq = torch.pow(dev, 2, out=dev).sum(dim=-1, keepdim=True)
        sigma = (sq / (n_finite - 1).clamp(min=1)).sqrt()
        top = s.amax(dim=-1, keepdim=True)
        keep = torch.ge(s, top - column(rows, "n", logits) * sigma, out=finite)
        # An upper set of s: a row keeps its argmax unless it keeps nothing.
        return truncate(logits, keep, s, rows)
