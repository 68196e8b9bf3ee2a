"""Locally typical sampling.

Meister, Pimentel, Wiher & Cotterell, "Locally Typical Sampling", TACL 2023
(arXiv:2202.00666).

With p = softmax(logits / T) and conditional entropy H = -Σ p log p, rank the
tokens by |(-log p(y)) - H| (how far each token's information content is from
the expected one) and keep the smallest set, in that order, whose total
probability reaches ``mass`` (τ in the paper). Everything else is set to -inf.
Ties in |(-log p) - H| are ranked by token id.

Implementation: the ranking needs no full sort. For the M most likely tokens
(M = 512, then 4096) with smallest log-probability ℓ_M, every other token has
-log p ≥ -ℓ_M, so if -ℓ_M ≥ H its deviation is at least d_M = -ℓ_M - H. The
candidates with deviation below d_M therefore come first in the full ranking,
in the same order; when their mass reaches τ (with a margin for float32
rounding) and they number at least ``min_tokens_to_keep``, the kept set lies
among them and is computed exactly as from the full ranking. Rows where this
does not hold (flat distributions, τ close to 1) are ranked in full. (Token
probabilities below exp(-87) ≈ 1.6e-38 are taken as 0 rather than subnormal.)
On an accelerator every row is ranked in full: a sort there costs less than the
host-device syncs that choosing rows for the prefilter takes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext, column, scaled
from sglang_ilsi.methods.common import (
    SMALL,
    exp_normal,
    key_ids,
    order_keys,
    scratch,
    sort_rows,
    top_indices,
)
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register

PREFILTER = (512, 4096)  # candidate counts tried before ranking a row in full
# The candidates' mass must exceed τ by this much: the float32 cumulative sums of
# the full ranking (accumulated in float64, rounded to float32) may differ from
# the exact mass by a few float32 ulps of 1.
_MASS_MARGIN = 2.5e-7


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
        s = scaled(logits, rows, out=scratch("s", logits))
        logp = torch.log_softmax(s, dim=-1, out=scratch("logp", logits))
        if logits.numel() < SMALL:
            p = logp.exp()
        else:  # = logp.exp() (0 below 1.7e-38), without the slow subnormal path
            p = exp_normal(logp, out=scratch("p", logits))
        entropy = -torch.mul(p, logp, out=s).nan_to_num_().sum(dim=-1, keepdim=True)
        mass = column(rows, "mass", logits)
        min_keep = column(rows, "min_tokens_to_keep", logits, dtype=torch.int64)
        out = torch.full_like(logits, float("-inf"))
        vocab = logits.shape[-1]
        todo = torch.arange(logits.shape[0], device=logits.device)
        if logits.device.type != "cpu":  # one sort per row beats the prefilter's syncs there
            cls._ranked(out, logits, logp, p, entropy, mass, min_keep, todo)
            return out
        ranked = []  # rows that no prefilter can decide
        sizes = [m for m in PREFILTER if m * 2 <= vocab]
        for m, m_next in zip(sizes, [*sizes[1:], vocab], strict=False):
            if not len(todo):
                break
            todo, hopeless = cls._prefiltered(out, logits, logp, p, entropy, mass, min_keep,
                                              todo, m, m_next)
            ranked.append(todo[hopeless])
            todo = todo[~hopeless]
        todo = torch.cat([todo, *ranked]).sort().values
        if len(todo):
            cls._ranked(out, logits, logp, p, entropy, mass, min_keep, todo)
        return out

    @staticmethod
    def _rank(logp, p, entropy, ids):
        """The token ids ``ids`` of each row ordered by (deviation, id), with the
        sorted deviations and probabilities."""
        dev = (-logp.gather(-1, ids) - entropy).abs()  # +inf for masked tokens
        order = key_ids(sort_rows(order_keys(dev, ids)))
        return order, (-logp.gather(-1, order) - entropy).abs(), p.gather(-1, order)

    @staticmethod
    def _kept(sorted_p, mass, min_keep):
        # Accumulated in float64 and rounded, which is what float32 cumsum does on
        # CPU; on GPU it keeps a prefix of the candidates equal to the full ranking's.
        cum = sorted_p.double().cumsum(dim=-1).to(sorted_p.dtype)
        # Keep a token if the mass before it is still below τ (so the token that
        # crosses τ is included, as in HF's TypicalLogitsWarper).
        ranks = torch.arange(sorted_p.shape[-1], device=sorted_p.device).unsqueeze(0)
        return ((cum - sorted_p) < mass) | (ranks < min_keep), cum

    @classmethod
    def _prefiltered(cls, out, logits, logp, p, entropy, mass, min_keep, rows, m, m_next):
        """Rows ``rows`` from their top-m candidates. Returns the rows this cannot decide,
        and which of them m_next candidates cannot decide either."""
        every = len(rows) == logits.shape[0]  # first round: no row copies

        def sel(t):
            return t if every else t.index_select(0, rows)

        lp, ent = sel(logp), sel(entropy)
        ids = top_indices(lp, m)
        order, dev, sp = cls._rank(lp, sel(p), ent, ids)
        d_min = -lp.gather(-1, ids).amin(dim=-1, keepdim=True) - ent  # ≥ 0: a valid bound
        inside = dev < d_min  # a prefix: the candidates ranked before every other token
        n_inside = inside.sum(dim=-1, keepdim=True)
        mass_r, min_keep_r = sel(mass), sel(min_keep)
        keep, cum = cls._kept(sp, mass_r, min_keep_r)
        inside_mass = cum.gather(-1, (n_inside - 1).clamp(min=0)).double()
        ok = ((d_min >= 0) & (n_inside >= min_keep_r) & (n_inside > 0)
              & (inside_mass >= mass_r.double() + _MASS_MARGIN)).squeeze(1)
        # Undecided rows write -inf only (their candidates are written again later).
        keep &= inside & ok.unsqueeze(1)
        _write(out, logits, rows, order, keep, every)
        # The top m_next tokens hold at most the candidates' mass plus m_next - m times
        # the smallest candidate probability: if that is short of τ, skip that round.
        reach = sp.sum(dim=-1, keepdim=True, dtype=torch.float64) + (m_next - m) * sp.amin(
            dim=-1, keepdim=True).double()
        hopeless = (reach < mass_r.double() + _MASS_MARGIN) | (min_keep_r > m_next)
        return rows[~ok], hopeless.squeeze(1)[~ok]

    @classmethod
    def _ranked(cls, out, logits, logp, p, entropy, mass, min_keep, rows):
        """Rows ``rows`` from the full ranking."""
        every = len(rows) == logits.shape[0]

        def sel(t):
            return t if every else t.index_select(0, rows)

        lp, ent = sel(logp), sel(entropy)
        dev = (-lp - ent).abs()  # +inf for masked tokens
        if dev.numel() < SMALL:  # a stable sort orders ties by token id too
            order = dev.sort(dim=-1, stable=True).indices
        else:
            ids = torch.arange(lp.shape[-1], device=lp.device).expand_as(lp)
            order = key_ids(sort_rows(order_keys(dev, ids)))
        keep, _ = cls._kept(sel(p).gather(-1, order), sel(mass), sel(min_keep))
        _write(out, logits, rows, order, keep, every)


def _write(out, logits, rows, order, keep, every):
    """``out[rows[i], order[i, j]] = logits[...]`` where ``keep[i, j]``, else -inf
    (row-wise scatter: much faster than 2-D advanced indexing on CPU)."""
    if every:
        out.scatter_(-1, order, logits.gather(-1, order).masked_fill(~keep, float("-inf")))
        return
    vals = logits.index_select(0, rows).gather(-1, order).masked_fill(~keep, float("-inf"))
    out.index_copy_(0, rows, out.index_select(0, rows).scatter_(-1, order, vals))
