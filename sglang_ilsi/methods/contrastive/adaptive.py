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
masked tokens are outside the vocabulary of the confidence measure. Tokens of
equal probability are ranked by token id.

Implementation: no full sort is needed. With u_k = R_{k-1} / (V - k + 1) the
average probability outside the first k - 1 tokens, ΔConf_k ≤ max(p_k,
2 u_k / ln V) (from ln x ≤ x - 1), so only the tokens with p ≥ ε can pass while
u stays small. Those candidates are ranked (R_k of the others is their summed
mass), the increments are computed as above, and a row falls back to ranking
the whole vocabulary when the run reaches the last candidate with u not small
enough, or when an increment lies within 1e-9 · ε of ε (the rest sums are
accumulated in a different order than in the full ranking). On an accelerator
every row is ranked in full: choosing rows for the candidates would take
host-device syncs, and a sort there is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext, column, scaled
from sglang_ilsi.methods.common import (
    SMALL,
    add_kept,
    count_true,
    defer_stat,
    key_ids,
    order_keys,
    scratch,
    sort_rows,
)
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register

# An increment this close to ε is re-derived from the full ranking.
_TOL_REL, _TOL_ABS = 1e-9, 1e-12
CANDIDATES = True  # False: rank every row's whole vocabulary (the reference path)
_MIN_VOCAB = 4096  # below this, ranking the whole vocabulary is cheaper


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
        s = scaled(logits, rows, out=scratch("s", logits))
        n, vocab = s.shape
        masked = torch.isneginf(s, out=scratch("mask", s, torch.bool))
        n_vocab = (vocab - count_true(masked, keepdim=True)).double()  # V per row
        eps = column(rows, "epsilon", n_vocab)
        if logits.device.type != "cpu":  # every row ranked in full: no host-device sync
            return cls._ranked_on_device(logits, s, n_vocab, eps, rows)
        if not CANDIDATES or vocab < _MIN_VOCAB:
            out = torch.full_like(logits, float("-inf"))
            add_kept(rows, cls._ranked(out, logits, s, n_vocab, eps, list(range(n)), [0] * n))
            return out
        sd = scratch("s64", s, torch.float64).copy_(s)
        p = torch.softmax(sd, dim=-1, out=scratch("p64", sd))
        # Slightly below ε, so that rounding in ΔConf cannot matter outside.
        floor = eps - (1e-6 * eps + 1e-14)
        cand = torch.ge(p, floor, out=masked)
        r, c = cand.nonzero(as_tuple=True)  # row-major: ids ascending per row
        counts = torch.bincount(r, minlength=n)
        width = max(max(counts.tolist(), default=0), 1)
        starts = counts.cumsum(0) - counts
        pos = torch.arange(len(r), device=s.device) - starts[r]
        ids = torch.zeros((n, width), dtype=torch.long, device=s.device)
        ids[r, pos] = c
        valid = torch.arange(width, device=s.device).unsqueeze(0) < counts.unsqueeze(1)
        keys = order_keys(s.gather(-1, ids), ids, descending=True)
        order = key_ids(sort_rows(keys.masked_fill(~valid, torch.iinfo(torch.int64).max)))
        order = order.masked_fill(~valid, 0)
        sp = p.gather(-1, order).masked_fill(~valid, 0.0)
        p[r, c] = 0.0
        tail = p.sum(dim=-1, keepdim=True)  # R after the candidates
        keep, delta, k = cls._run(torch.cat([sp, tail], dim=-1), n_vocab, eps)
        keep = keep[:, :width] & valid
        n_kept = keep.sum(dim=-1, keepdim=True)
        # Undecided rows: no candidate, a run through every candidate that the
        # next token might continue, or an increment too close to ε.
        last = counts.unsqueeze(1)
        u_next = tail / (n_vocab - last).clamp(min=1.0)
        open_end = ((n_kept == last) & (last < n_vocab)
                    & (2.0 * u_next >= floor * n_vocab.clamp(min=2.0).log()))
        near = (delta[:, :width] - eps).abs() <= _TOL_REL * eps + _TOL_ABS
        near &= valid & (k[:, :width] <= n_kept + 1)
        redo = (last == 0) | open_end | near.any(dim=-1, keepdim=True)
        synced = torch.cat([n_kept, redo], dim=-1).tolist()
        kept_counts = [int(kn) for kn, _ in synced]
        out = torch.full_like(logits, float("-inf"))
        kr, kc = keep.nonzero(as_tuple=True)
        redo_rows = [i for i, (_, f) in enumerate(synced) if f]
        if redo_rows:  # written below from the full ranking
            fast = ~torch.isin(kr, torch.tensor(redo_rows, device=s.device))
            kr, kc = kr[fast], kc[fast]
        cols = order[kr, kc]
        out[kr, cols] = logits[kr, cols]
        if redo_rows:
            kept_counts = cls._ranked(out, logits, s, n_vocab, eps, redo_rows, kept_counts)
        add_kept(rows, kept_counts)
        return out

    @staticmethod
    def _run(sp: torch.Tensor, n_vocab: torch.Tensor, eps: torch.Tensor):
        """Kept prefix of the probabilities ``sp`` sorted in descending order (the
        last column may hold the summed rest), with the increments and ranks."""
        # R_k = Σ_{i>k} p_i (suffix sums: exact zero at the end), R_{k-1} = R_k + p_k.
        rest = sp.flip(-1).cumsum(-1).flip(-1) - sp
        rest_prev = rest + sp
        k = torch.arange(1, sp.shape[-1] + 1, device=sp.device, dtype=sp.dtype).unsqueeze(0)
        gain = (torch.xlogy(sp, sp) + _rlog_r_over_m(rest, n_vocab - k)
                - _rlog_r_over_m(rest_prev, n_vocab - k + 1))
        delta = gain / n_vocab.clamp(min=2.0).log()
        ok = (delta >= eps) & (k <= n_vocab)
        keep = ok.int().cumprod(dim=-1).bool()  # stop at the first increment below ε
        keep[:, 0] = True
        return keep, delta, k

    @classmethod
    def _ranking(cls, sr, n_vocab, eps):
        """Each row's tokens by decreasing ``sr`` (ties by id) and its kept prefix."""
        if sr.numel() < SMALL:  # a stable sort orders ties by token id too
            order = sr.sort(dim=-1, descending=True, stable=True).indices
        else:
            ids = torch.arange(sr.shape[-1], device=sr.device).expand_as(sr)
            order = key_ids(sort_rows(order_keys(sr, ids, descending=True)))
        sp = torch.softmax(sr.double(), dim=-1).gather(-1, order)
        keep, _, _ = cls._run(sp, n_vocab, eps)
        return order, keep

    @classmethod
    def _ranked_on_device(cls, logits, s, n_vocab, eps, rows):
        """Every row from the full ranking (what :meth:`_ranked` computes), written
        with one scatter; the kept counts are deferred (no host read)."""
        order, keep = cls._ranking(s, n_vocab, eps)
        out = torch.full_like(logits, float("-inf"))
        out.scatter_(-1, order, logits.gather(-1, order).masked_fill(~keep, float("-inf")))
        defer_stat(rows, "kept_tokens", count_true(keep))
        return out

    @classmethod
    def _ranked(cls, out, logits, s, n_vocab, eps, redo_rows, kept_counts):
        """The rows ``redo_rows`` from the ranking of their whole vocabulary."""
        every = len(redo_rows) == s.shape[0]
        r = torch.arange(s.shape[0], device=s.device) if every else torch.tensor(
            redo_rows, device=s.device)
        sr = s if every else s.index_select(0, r)
        order, keep = cls._ranking(sr, n_vocab.index_select(0, r), eps.index_select(0, r))
        kr, kc = keep.nonzero(as_tuple=True)
        rows_, cols = r[kr], order[kr, kc]
        out[rows_, cols] = logits[rows_, cols]
        kept_counts = list(kept_counts)
        for i, kn in zip(redo_rows, count_true(keep).tolist(), strict=True):
            kept_counts[i] = kn
        return kept_counts
