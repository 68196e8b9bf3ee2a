"""RTD: reference trustable decoding, the next-token distribution reshaped by the
nearest entries of a reference datastore built from task examples.

Shi, Yao, Li, Zhang & Zhao, "Reference Trustable Decoding: A Training-Free
Augmentation Paradigm for Large Language Models", NeurIPS 2024 (arXiv:2409.20181).

The reference store holds, for every token of every example's answer, the
model's last hidden state before it (key) and the token (value): ``sglang-ilsi
datastore build`` on JSONL records ``{"prompt": ..., "completion": ...}``. At each
step, with h the request's hidden state at the store's layer:

1. *fetch*: the K entries nearest to h, at Euclidean distances d_i (the square
   root of faiss's squared L2), with values v_i;
2. *normalise*: s_i = softmax_i(−d_i / T);
3. *aggregate*: r(w) = Σ_{i: v_i = w} s_i;
4. p(w) = λ · r(w) + (1 − λ) · softmax(z)(w).

Multi-head RTD (MH-RTD) cuts h and the keys into ``heads`` equal slices, fetches
and normalises within each slice's own index, and averages the heads'
distributions r⁽¹⁾…r⁽ᴴ⁾ into r. The method returns log p as the row's logits;
tokens the logits exclude (a grammar's −inf) stay excluded. The search is one
batched faiss query per step for all rows of a store (``engine/scheduler/
companions.py``); multi-head needs a flat store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sglang_ilsi.methods.base import LogitsMethod, Requirements, RowContext, datastore_key
from sglang_ilsi.methods.retrieval.knn_lm import (
    DATASTORE_PARAM,
    MAX_K,
    interpolated,
    knn_distribution,
)
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register

MAX_HEADS = 64


def reference_distribution(neighbours: torch.Tensor, k: int, temperature: float,
                           vocab: int) -> torch.Tensor:
    """r over ``vocab`` from ``[2, heads, k]`` (or ``[2, k]``) neighbours: each head's
    softmax(−√d / T) aggregated by value, averaged over the heads."""
    if neighbours.dim() == 2:
        neighbours = neighbours[:, None, :]
    heads = neighbours.shape[1]
    total = torch.zeros(vocab, dtype=torch.float64, device=neighbours.device)
    for h in range(heads):
        euclidean = neighbours[0, h].double().clamp_min(0).sqrt()
        total += knn_distribution(euclidean, neighbours[1, h], k, temperature, vocab)
    return total / heads


@register
class Rtd(LogitsMethod):
    """RTD: λ·r + (1−λ)·p_LM, r from the nearest entries of a reference store of task examples."""

    name = "rtd"
    family = "context-aware/retrieval"
    paper = ("Shi et al. 2024, Reference Trustable Decoding: A Training-Free Augmentation "
             "Paradigm for Large Language Models, NeurIPS (arXiv:2409.20181)")
    needs = frozenset({"logits", "datastore"})
    params = (
        DATASTORE_PARAM,
        Param("k", "int", 16, "K: references fetched per step (per head)", minimum=1,
              maximum=MAX_K),
        Param("temperature", "float", 1.0, "T: the references' weights are softmax(-d/T), "
              "d the Euclidean distance", minimum=1e-4, maximum=1e6),
        Param("lambda", "float", 0.5, "λ: the weight of the reference distribution",
              minimum=0.0, maximum=1.0),
        Param("heads", "int", 1, "MH-RTD: hidden state and keys cut into this many slices, "
              "each searched alone (must divide the hidden size; a flat store)",
              minimum=1, maximum=MAX_HEADS),
    )

    @classmethod
    def requirements(cls, params: dict[str, Any]) -> Requirements:
        return Requirements(datastores=((params["datastore"], int(params["k"]),
                                         int(params["heads"])),))

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        vocab = logits.shape[-1]
        p_lm = torch.softmax(logits.double(), dim=-1)
        out = torch.empty_like(logits)
        for i, row in enumerate(rows):
            params = row.params
            neighbours = row.inputs[datastore_key(params["datastore"], int(params["heads"]))]
            r = reference_distribution(neighbours, int(params["k"]),
                                       float(params["temperature"]), vocab)
            out[i] = interpolated(logits[i], p_lm[i], r, float(params["lambda"]))
        return out
