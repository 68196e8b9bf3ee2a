"""Adaptive decoding (entropy-based confidence increments).

Zhu, Hao, He, Ai & Wang, "Improving Open-Ended Text Generation via Adaptive
Decoding", ICML 2024 (arXiv:2402.18223).

With p = softmax(logits / T) sorted in descending order p_1 ≥ p_2 ≥ … ≥ p_V
(V = the number of finite logits of the row), the state after moving the top k
tokens into the candidate set A keeps their probabilities and spreads the rest
R_k = Σ_{i>k} p_i uniformly over the V - k remaining tokens. Its entropy is

    H_k = -Σ_{i≤k} p_i ln p_i - R_k ln(R_k / (V - k))        (H_0 = ln V)

and the confidence is Conf_k = 1 - H_k / ln V. Adding the k-th token raises the
confidence by

    ΔConf_k = (H_{k-1} - H_k) / ln V
            = [p_k ln p_k + R_k ln(R_k/(V-k)) - R_{k-1} ln(R_{k-1}/(V-k+1))] / ln V ≥ 0.

The set grows while the increment stays at or above ε: A = {1..K} with K the
last k such that ΔConf_j ≥ ε for all j ≤ k (K ≥ 1, so the argmax is always kept).
Everything else is set to -inf. The whole computation runs in float64.

Notes on fidelity: the paper defines Conf with a normalised entropy, which is
base-independent; the authors' release code divides a natural-log entropy
difference by log2 |V|, i.e. it tests ln2 · ΔConf_k against ε, so its ε equals
ours times ln 2 (≈ 0.69). The release code also drops each token whose own
increment is below ε rather than stopping at the first one; for the usual
monotone increments the two agree. V counts only finite logits, so grammar-
masked tokens are outside the vocabulary of the confidence measure.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext, column, scaled
from sglang_ilsi.methods.common import count_kept
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register


def _rlog_r_over_m(r: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """r · ln(r / m) with 0 where r ≤ 0 (and m ≥ 1 assumed where r > 0)."""
    safe_m = m.clamp(min=1.0)
    return torch.where(r > 0, torch.xlogy(r, r / safe_m), torch.zeros_like(r))


@register
class AdaptiveDecoding(LogitsMethod):
    """Grow the candidate set in probability order while the entropy-based confidence increment ≥ ε."""

    name = "adaptive"
    family = "independent/contrastive"
    paper = ("Zhu et al. 2024, Improving Open-Ended Text Generation via Adaptive Decoding "
             "(ICML), arXiv:2402.18223")
    argmax_invariant = True
    params = (
        Param("epsilon", "float", 1e-3,
              "ε: minimum confidence increment for a token to join the candidate set",
              minimum=0.0, maximum=1.0, exclusive_minimum=True, exclusive_maximum=True),
    )

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        s = scaled(logits, rows).double()
        p = torch.softmax(s, dim=-1)
        sp, order = p.sort(dim=-1, descending=True)
        n_vocab = torch.isfinite(s).sum(dim=-1, keepdim=True).double()  # V per row
        # R_k = Σ_{i>k} p_i (suffix sums: exact zero at the end), R_{k-1} = R_k + p_k.
        rest = sp.flip(-1).cumsum(-1).flip(-1) - sp
        rest_prev = rest + sp
        k = torch.arange(1, sp.shape[-1] + 1, device=s.device, dtype=s.dtype).unsqueeze(0)
        gain = (torch.xlogy(sp, sp) + _rlog_r_over_m(rest, n_vocab - k)
                - _rlog_r_over_m(rest_prev, n_vocab - k + 1))
        delta = gain / n_vocab.clamp(min=2.0).log()
        ok = (delta >= column(rows, "epsilon", delta)) & (k <= n_vocab)
        keep_sorted = ok.int().cumprod(dim=-1).bool()  # stop at the first increment below ε
        keep_sorted[:, 0] = True
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        count_kept(keep, rows)
        return logits.masked_fill(~keep, float("-inf"))
