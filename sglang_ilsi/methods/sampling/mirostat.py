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
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext, scaled
from sglang_ilsi.methods.common import count_kept, keep_argmax
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register

_LN2 = math.log(2.0)


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
        s = scaled(logits, rows)
        log2p = torch.log_softmax(s, dim=-1) / _LN2
        mu = torch.tensor([cls.mu(r) for r in rows], dtype=s.dtype, device=s.device)
        keep = keep_argmax(-log2p <= mu.unsqueeze(1), s)
        # Surprise of each token under the renormalised truncated distribution q.
        trunc_log2q = torch.log_softmax(s.masked_fill(~keep, float("-inf")), dim=-1) / _LN2
        for i, row in enumerate(rows):
            row.state["mu"] = cls.mu(row)
            row.state["log2q"] = trunc_log2q[i].clone()
            row.stats["mu"] = row.state["mu"]
        count_kept(keep, rows)
        return logits.masked_fill(~keep, float("-inf"))

    @classmethod
    def on_token(cls, row: RowContext, token_id: int) -> None:
        log2q = row.state.pop("log2q", None)
        if log2q is None or not 0 <= token_id < log2q.shape[-1]:
            return
        lq = float(log2q[token_id])
        if not math.isfinite(lq):
            return
        tau, eta = float(row.params["tau"]), float(row.params["eta"])
        row.state["mu"] = cls.mu(row) - eta * (-lq - tau)
        row.stats["mu"] = row.state["mu"]
