"""Eta sampling.

Hewitt, Manning & Liang, "Truncation Sampling as Language Model Desmoothing",
Findings of EMNLP 2022 (arXiv:2210.15191).

With p = softmax(logits / T) and entropy H = -Σ p log p (nats), the threshold is
entropy-dependent:

    η = min(ε, √ε · exp(-H)),    A = {x : p(x) > η}.

High-entropy (flat) distributions use the full floor ε; peaked ones a lower
floor, so plausible low-probability tokens survive. The argmax is always kept.
Everything outside A is set to -inf.

Implementation: above 4096 tokens, H is computed from log_softmax rather than
with ``torch.special.entr`` (a scalar libm loop, the bulk of the cost). The two
differ in the last bits, which can matter only where η < ε and some p lies
within a relative 1e-5 · (1 + H) of η; such rows are checked for that and, if
needed, recomputed with ``entr``, so the kept sets are exactly as before. On an
accelerator ``entr`` is cheap and choosing rows would cost host-device syncs: every
row uses it there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext, column, scaled
from sglang_ilsi.methods.common import count_true, scratch, truncate
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register

# The entropy below comes from log_softmax instead of torch.special.entr (a
# scalar loop with libm's log, ~6 ns per entry on CPU). The two agree to about
# 2e-7 · (1 + H); η is treated as uncertain within a band 50 times wider.
_H_TOL = 1e-5
_EXACT_VOCAB = 4096  # up to this width (and off the CPU) entr is cheap: use it directly


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
        s = scaled(logits, rows, out=scratch("s", logits))
        p = torch.softmax(s, dim=-1, out=scratch("p", logits))
        eps = column(rows, "epsilon", logits)
        if logits.shape[-1] <= _EXACT_VOCAB or logits.device.type != "cpu":
            entropy = torch.special.entr(p).sum(dim=-1, keepdim=True)  # entr(0) = 0
            eta = torch.minimum(eps, eps.sqrt() * torch.exp(-entropy))
            return truncate(logits, p > eta, s, rows)
        logp = torch.log_softmax(s, dim=-1, out=scratch("logp", logits))
        # 0 · log 0 = nan → 0
        entropy = -torch.mul(p, logp, out=logp).nansum(dim=-1, keepdim=True)
        floor = eps.sqrt() * torch.exp(-entropy)
        eta = torch.minimum(eps, floor)
        keep = torch.gt(p, eta, out=scratch("keep", p, torch.bool))
        # Where η depends on H, the bits of H matter at the threshold: every η the
        # entr-based H could give lies in [lo, hi]; a row is exact if no p falls there.
        band = _H_TOL * (1.0 + entropy) + 1e-6
        lo = torch.minimum(eps, floor * (1.0 - band))
        hi = torch.minimum(eps, floor * (1.0 + band))
        synced = torch.cat([count_true(keep, keepdim=True),
                            (lo < hi).to(torch.int32)], dim=-1).tolist()
        counts = [c for c, _ in synced]
        check = [i for i, (_, u) in enumerate(synced) if u]
        if check:
            r = torch.tensor(check, device=logits.device)
            pr = p.index_select(0, r)
            n_lo = count_true(pr > lo.index_select(0, r))
            n_hi = count_true(pr > hi.index_select(0, r))
            redo = [i for i, differ in zip(check, (n_lo != n_hi).tolist(), strict=True) if differ]
            if redo:  # recompute H exactly as before for these rows
                r = torch.tensor(redo, device=logits.device)
                pr = p.index_select(0, r)
                h = torch.special.entr(pr).sum(dim=-1, keepdim=True)
                er = eps.index_select(0, r)
                kr = pr > torch.minimum(er, er.sqrt() * torch.exp(-h))
                keep[r] = kr
                for i, c in zip(redo, count_true(kr).tolist(), strict=True):
                    counts[i] = c
        # p is monotone in s, so a row keeps its argmax unless it keeps nothing.
        return truncate(logits, keep, s, rows, counts)
