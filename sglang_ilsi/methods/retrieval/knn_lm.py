"""kNN-LM: the model's next-token distribution interpolated with one read from a
datastore of (context hidden state → next token) pairs.

Khandelwal, Levy, Jurafsky, Zettlemoyer & Lewis, "Generalization through
Memorization: Nearest Neighbor Language Models", ICLR 2020 (arXiv:1911.00172).

At each step the engine looks up the k entries of the store whose keys are
nearest (squared L2 distance d_i, as faiss returns it) to the request's current
hidden state at the store's layer, with next tokens v_i. Then

    p_kNN(w) = Σ_{i: v_i = w} exp(−d_i / T) / Σ_i exp(−d_i / T)
    p(w)     = λ · p_kNN(w) + (1 − λ) · p_LM(w)

with p_LM = softmax(logits) (temperature 1, the paper's setting) and T the
``knn_temperature``. The method returns log p as the row's logits, so greedy
decoding takes its argmax and sampling applies the request's temperature to it.
Tokens the logits already exclude (−inf, e.g. a grammar mask) stay excluded.

The store is built by ``sglang-ilsi datastore build`` and loaded with
``--ilsi-datastore NAME=PATH``; ``datastore`` names it ("" = the only one
loaded). The search is one batched faiss query per step for all rows that use
the store (``engine/scheduler/companions.py``); this file only mixes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from sglang_ilsi.methods.base import LogitsMethod, Requirements, RowContext, datastore_key
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register

MAX_K = 2048


def knn_support(distances: torch.Tensor, tokens: torch.Tensor, k: int, temperature: float,
                vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """p_kNN where it is not zero: the distinct next tokens of the k nearest neighbours
    (``distances`` ascending, their next ``tokens``; missing neighbours have token < 0)
    and their probabilities (float64); both empty when nothing was found."""
    d, t = distances[:k].double(), tokens[:k].long()
    found = (t >= 0) & (t < vocab) & torch.isfinite(d)
    if not bool(found.any()):
        return t[:0], d[:0]
    weights = torch.softmax(-d[found] / temperature, dim=0)
    support, slot = torch.unique(t[found], return_inverse=True)
    return support, torch.zeros(len(support), dtype=torch.float64,
                                device=d.device).index_add_(0, slot, weights)


def knn_distribution(distances: torch.Tensor, tokens: torch.Tensor, k: int,
                     temperature: float, vocab: int) -> torch.Tensor:
    """p_kNN over ``vocab`` (float64), from :func:`knn_support`."""
    support, p = knn_support(distances, tokens, k, temperature, vocab)
    return torch.zeros(vocab, dtype=torch.float64, device=distances.device
                       ).index_copy_(0, support, p)


DATASTORE_PARAM = Param("datastore", "str", "", "name of the store (--ilsi-datastore "
                        "NAME=PATH); empty: the only store this server loaded", max_length=64)
NEIGHBOURS_PARAM = Param("k", "int", 64, "neighbours retrieved per step", minimum=1,
                         maximum=MAX_K)


def mixture(logits_row: torch.Tensor, p_lm_row: torch.Tensor, retrieved: torch.Tensor,
            lam: float) -> torch.Tensor:
    """λ·retrieved + (1−λ)·p_LM (λ = 0 when nothing was retrieved), 0 on the tokens
    ``logits_row`` excludes (−inf)."""
    lam = lam if bool(retrieved.sum() > 0) else 0.0
    mixed = lam * retrieved.to(p_lm_row.device) + (1.0 - lam) * p_lm_row
    return mixed.masked_fill(~torch.isfinite(logits_row), 0.0)


def interpolated(logits_row: torch.Tensor, p_lm_row: torch.Tensor, retrieved: torch.Tensor,
                 lam: float) -> torch.Tensor:
    """log of :func:`mixture` as a row of logits: excluded tokens stay −inf."""
    return mixture(logits_row, p_lm_row, retrieved, lam).log().to(logits_row.dtype)


@register
class KnnLM(LogitsMethod):
    """kNN-LM: λ·p_kNN + (1−λ)·p_LM, p_kNN from the k nearest datastore entries."""

    name = "knn_lm"
    family = "context-aware/retrieval"
    paper = ("Khandelwal et al. 2020, Generalization through Memorization: Nearest Neighbor "
             "Language Models, ICLR (arXiv:1911.00172)")
    needs = frozenset({"logits", "datastore"})
    params = (
        DATASTORE_PARAM,
        NEIGHBOURS_PARAM,
        Param("knn_temperature", "float", 1.0,
              "temperature T of the neighbours' weights exp(-d/T) (d: squared L2 distance)",
              minimum=1e-4, maximum=1e6),
        Param("lambda", "float", 0.25, "interpolation weight λ of p_kNN",
              minimum=0.0, maximum=1.0),
    )

    @classmethod
    def requirements(cls, params: dict[str, Any]) -> Requirements:
        return Requirements(datastores=((params["datastore"], int(params["k"]), 1),))

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        """log p per row, without a dense p_kNN: p_kNN is zero outside the ≤ k
        retrieved tokens, so every other token's log p is log(1−λ) + log p_LM (one pass
        over the vocabulary), and the retrieved tokens get log(λ·p_kNN + (1−λ)·p_LM),
        computed in float64. Equal to :func:`interpolated` up to float32 rounding."""
        vocab = logits.shape[-1]
        out = torch.log_softmax(logits, dim=-1)
        for i, row in enumerate(rows):
            neighbours = row.inputs[datastore_key(row.params["datastore"])]
            support, p_knn = knn_support(neighbours[0], neighbours[1], int(row.params["k"]),
                                         float(row.params["knn_temperature"]), vocab)
            if len(support) == 0:  # nothing retrieved: λ = 0, p = p_LM
                continue
            support = support.to(out.device)
            lam = float(row.params["lambda"])
            p_lm = out[i].index_select(0, support).double().exp()
            mixed = lam * p_knn.to(out.device) + (1.0 - lam) * p_lm
            mixed = mixed.masked_fill(~torch.isfinite(logits[i].index_select(0, support)), 0.0)
            out[i] += math.log1p(-lam) if lam < 1.0 else float("-inf")
            out[i].index_copy_(0, support, mixed.log().to(out.dtype))
        return out
