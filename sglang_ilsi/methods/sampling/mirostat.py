"""Mirostat 2.0 (perplexity-controlled sampling).

Basu, Ramachandran, Keskar & Varshney, "Mirostat: A Neural Text Decoding
Algorithm that Directly Controls Perplexity", ICLR 2021 (arXiv:2007.14966),
Algorithm 2 ("Mirostat 2.0").

Per request a threshold μ is kept (initialised to 2τ). At each step, with
p = softmax(logits / T) and the surprise of a token s(y) = -log2 p(y):

    A = {y : s(y) ≤ μ}  (the argmax is always kept),
    q = p restricted to A and renormalised.

After the engine samples token x from q (``on_token``), the observed surprise
s_x = -log2 q(x) drives a feedback update toward the target surprise τ:

    μ ← μ - η (s_x - τ).

So the average surprise (log-perplexity, in bits) of the text tracks τ. If the
sampled token lies outside A (another filter or the engine forced it), the
update is skipped, since its surprise under q is infinite.

Implementation: the test s(y) ≤ μ is made on log p directly, against the exact
float32 boundary of ``log p / ln 2 ≥ -μ``; q is not materialised: ``on_token``
computes log2 q(x) = (log p(x) - log Σ_A p) / ln 2 for the sampled token only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext, on_device, scaled
from sglang_ilsi.methods.common import add_kept, count_true, scratch, select
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register

_LN2 = math.log(2.0)
_LN2_F32 = np.float32(_LN2)  # torch divides a float32 tensor by a Python float in float32


def _log_threshold(t: torch.Tensor) -> torch.Tensor | None:
    """Per entry of the float32 ``t``, the smallest float32 x with x / ln 2 ≥ t as
    torch computes it (x / ln 2 is within an ulp or two of x · (1 / ln 2), so x lies a
    few ulps from t · ln 2); None if that is not bracketed for some entry."""
    x = t * _LN2_F32.item()
    down, up = torch.full_like(x, float("-inf")), torch.full_like(x, float("inf"))
    below, above = [x], [x]
    for _ in range(4):
        below.append(torch.nextafter(below[-1], down))
        above.append(torch.nextafter(above[-1], up))
    cands = torch.stack(below[:0:-1] + above, dim=-1)  # ascending, 9 per entry
    passes = torch.div(cands, _LN2) >= t.unsqueeze(-1)
    if not bool((passes[:, -1] & ~passes[:, 0]).all()):
        return None
    return cands.gather(-1, passes.to(torch.int8).argmax(dim=-1, keepdim=True)).squeeze(-1)


@register
class Mirostat(LogitsMethod):
    """Mirostat 2.0: drop tokens whose surprise exceeds μ; adapt μ toward the target τ."""

    name = "mirostat"
    family = "independent/sampling"
    paper = ("Basu et al. 2021, Mirostat: A Neural Text Decoding Algorithm that Directly "
             "Controls Perplexity (ICLR), arXiv:2007.14966")
    argmax_invariant = True
    params = (
        Param("tau", "float", 3.0, "τ: target surprise in bits (log2 of the target perplexity)",
              minimum=0.0, maximum=20.0, exclusive_minimum=True),
        Param("eta", "float", 0.1, "η: learning rate of the μ feedback update",
              minimum=0.0, maximum=1.0, exclusive_minimum=True),
    )

    @staticmethod
    def mu(row: RowContext) -> float:
        """The row's current threshold μ (2τ before the first update)."""
        return float(row.state.get("mu", 2.0 * float(row.params["tau"])))

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        s = scaled(logits, rows, out=scratch("s", logits))
        logp = torch.log_softmax(s, dim=-1)  # not scratch: on_token reads it
        mus = [cls.mu(r) for r in rows]
        neg_mu = [-np.float32(mu) for mu in mus]
        # -log2 p ≤ μ  ⇔  fl(log p / ln 2) ≥ -μ  ⇔  log p ≥ x*, the exact float32 boundary
        # (one compare instead of a division and a compare over the vocabulary).
        t = -on_device(mus, s.dtype, s.device)
        bound = _log_threshold(t) if logits.numel() >= 1 << 16 else None
        if bound is None:  # small input, or non-finite μ: the division itself
            keep = torch.ge(torch.div(logp, _LN2), t.unsqueeze(1),
                            out=scratch("keep", logp, torch.bool))
        else:
            keep = torch.ge(logp, bound.unsqueeze(1), out=scratch("keep", logp, torch.bool))
        n, vocab = logits.shape
        # |A| ≤ 2^μ (every kept p ≥ 2^-μ): index the kept entries when that is small.
        if sum(min(2.0 ** min(mu, 64.0), vocab) for mu in mus) <= n * vocab / 16:
            r, c = keep.nonzero(as_tuple=True)
            z = torch.zeros(n, dtype=torch.float64, device=s.device)
            z.index_add_(0, r, logp[r, c].double().exp())
            out = torch.full_like(logits, float("-inf"))
            out[r, c] = logits[r, c]
            counts = torch.bincount(r, minlength=n).double()
        else:
            p = torch.softmax(s, dim=-1, out=scratch("p", s))
            z = torch.mul(p, keep, out=p).sum(dim=-1, dtype=torch.float64)
            counts = count_true(keep)
            out = select(keep, logits, counts.tolist())
            counts = counts.double()
        # Z = Σ_A p, so that log q(x) = log p(x) - log Z on A.
        synced = torch.stack([counts, z], dim=1).tolist()
        kept = []
        for i, row in enumerate(rows):
            c, zi = synced[i]
            forced = None
            log_z = math.log(zi) if zi > 0 else 0.0
            if not c:  # nothing passes: keep the argmax alone (q = 1 there)
                forced = int(s[i].argmax())
                out[i, forced] = logits[i, forced]
                log_z = float(logp[i, forced])
            kept.append(int(c) or 1)
            row.state["mu"] = mus[i]
            row.state["log2q"] = (logp[i], neg_mu[i], forced, log_z)
            row.stats["mu"] = mus[i]
        add_kept(rows, kept)
        return out

    @classmethod
    def on_token(cls, row: RowContext, token_id: int) -> None:
        entry = row.state.pop("log2q", None)
        if entry is None:
            return
        logp, neg_mu, forced, log_z = entry
        if not 0 <= token_id < logp.shape[-1]:
            return
        lp = float(logp[token_id])
        kept = token_id == forced if forced is not None else (
            np.float32(lp) / _LN2_F32 >= neg_mu)  # the test of apply, in float32
        if not kept or not math.isfinite(lp):
            return
        lq = (lp - log_z) / _LN2
        tau, eta = float(row.params["tau"]), float(row.params["eta"])
        row.state["mu"] = cls.mu(row) - eta * (-lq - tau)
        row.stats["mu"] = row.state["mu"]
