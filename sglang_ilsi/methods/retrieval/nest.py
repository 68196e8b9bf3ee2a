"""NEST: nearest-neighbour speculative decoding, kNN-LM with a confidence-based
weight and spans copied from the store's documents.

Li, Chen, Holtzman, Chen, Lin, Yih & Lin, "Nearest Neighbor Speculative Decoding
for LLM Generation and Attribution", NeurIPS 2024 (arXiv:2405.19325), Algorithm 1
(greedy). At each step, from the k nearest entries of the store (squared L2
distances d_i, next tokens v_i):

    p_kNN(w)  = Σ_{i: v_i = w} exp(−d_i / T) / Σ_i exp(−d_i / T)      (Eq. 2; T = 1/µ)
    λ_t       = σ((min_i d_i / max_i d_i − α) / τ)                    (Eq. 4, RRC)
    p_M(w)    = λ_t · p_LM(w) + (1 − λ_t) · p_kNN(w)                  (Eq. 3)

λ_t weighs the *model*: the closer the nearest neighbour is next to the farthest
(a small min/max ratio), the more the retrieval is trusted. The step's token w_t
is drawn from p_M (greedy: its argmax). **Dynamic span selection** (Eq. 5–6): if
λ_t ≤ δ and a neighbour's next token is w_t, the n-gram that follows the nearest
such neighbour in its document is proposed as the next tokens. **Relaxed
speculative decoding** (Eq. 7, Algorithm 1): each proposed token w is accepted
while min(1, p_M(w) / (γ · max p_M)) > 0.5, p_M computed at its own position
(with its own retrieval); the first one refused is replaced by the argmax of p_M
there (no span starts from it), and the rest of the span is dropped.

Here each proposed token is verified in its own decoding step (SGLang's step,
one forward per token), so the output is Algorithm 1's and the copying shows in
``ilsi.stats`` (``nest_spans``, ``nest_span_tokens`` accepted from the store,
``nest_rejections``, and ``nest_sources``: for each span, ``[its first output
position, the document it came from (a line of the store's corpus.jsonl), its
length]``, the paper's attribution), but the paper's speed-up from verifying a span in one
forward is not had. Not done either: the paper's first-stage passage retrieval
(here the whole store is searched, as kNN-LM does) and masking corpus parts
already copied (Section 3.4; Algorithm 1 has neither).

The store must know its documents' ends (``documents.npy``, written by
``sglang-ilsi datastore build``); a span never crosses into the next document.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from sglang_ilsi.methods.base import (
    LogitsMethod,
    Requirements,
    RowContext,
    continuation_key,
    datastore_key,
    finished,
)
from sglang_ilsi.methods.retrieval.knn_lm import (
    DATASTORE_PARAM,
    NEIGHBOURS_PARAM,
    knn_distribution,
    mixture,
)
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register

MAX_SPAN = 64


def retrieval_weight(distances: torch.Tensor, alpha: float, tau: float) -> float:
    """λ_t = σ((min d / max d − α) / τ) over the found neighbours (1.0: none found;
    all at distance 0: the ratio is taken as 0, full confidence)."""
    d = distances[torch.isfinite(distances)].double()
    if d.numel() == 0:
        return 1.0
    top = float(d.max())
    ratio = float(d.min()) / top if top > 0 else 0.0
    return 1.0 / (1.0 + math.exp(-(ratio - alpha) / tau))


def span_after(chosen: int, tokens: Sequence[int], following: Sequence[Sequence[int]],
               length: int) -> tuple[int, list[int]]:
    """The nearest neighbour whose next token is ``chosen`` (neighbours nearest
    first; ``following`` rows are its document, then the tokens after): its
    document and at most ``length`` tokens that followed, up to the document's end.
    ``(-1, [])`` when no neighbour had that token."""
    for token, after in zip(tokens, following, strict=True):
        if token == chosen:
            span = []
            for t in list(after)[1:1 + length]:
                if t < 0:
                    break
                span.append(int(t))
            return int(after[0]), span
    return -1, []


def accepted(p_mixed: torch.Tensor, token: int, gamma: float) -> bool:
    """Relaxed speculative decoding's test (Algorithm 1): min(1, p_M(w) / (γ ·
    max p_M)) > 0.5."""
    return min(1.0, float(p_mixed[token]) / (gamma * float(p_mixed.max()))) > 0.5


@register
class Nest(LogitsMethod):
    """NEST: kNN-LM weighted by retrieval confidence, copying spans from the store."""

    name = "nest"
    family = "context-aware/retrieval"
    paper = ("Li et al. 2024, Nearest Neighbor Speculative Decoding for LLM Generation and "
             "Attribution, NeurIPS (arXiv:2405.19325)")
    needs = frozenset({"logits", "datastore"})
    params = (
        DATASTORE_PARAM,
        NEIGHBOURS_PARAM,
        Param("knn_temperature", "float", 0.0,
              "T in exp(-d/T) (d: squared L2 distance); 0: the store's key size, the "
              "paper's µ = 1/dim", minimum=0.0, maximum=1e6),
        Param("alpha", "float", 0.3, "α: the offset of the relative retrieval confidence",
              minimum=-10.0, maximum=10.0),
        Param("tau", "float", 0.1, "τ: the scale of the relative retrieval confidence",
              minimum=1e-4, maximum=100.0),
        Param("delta", "float", 0.5, "δ: a span is copied when λ_t ≤ δ",
              minimum=0.0, maximum=1.0),
        Param("span", "int", 16, "n: the most tokens one copied span proposes (the "
              "paper's n-gram length, 64)", minimum=1, maximum=MAX_SPAN),
        Param("gamma", "float", 0.05, "γ: the relaxation of the span's verification "
              "(smaller accepts more)", minimum=1e-6, maximum=1.0),
    )
    example = {"k": 16}

    @classmethod
    def requirements(cls, params: dict[str, Any]) -> Requirements:
        return Requirements(datastores=((params["datastore"], int(params["k"]), 1),),
                            continuations=((params["datastore"], int(params["span"]) - 1),)
                            if int(params["span"]) > 1 else ())

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        vocab = logits.shape[-1]
        p_lm = torch.softmax(logits.double(), dim=-1)
        out = torch.empty_like(logits)
        for i, row in enumerate(rows):
            out[i] = cls._step(logits[i], p_lm[i], row, vocab)
        return out

    @classmethod
    def _step(cls, logits_row: torch.Tensor, p_lm: torch.Tensor, row: RowContext,
              vocab: int) -> torch.Tensor:
        params, state = row.params, row.state
        store = params["datastore"]
        neighbours = row.inputs[datastore_key(store)]
        distances, tokens = neighbours[0], neighbours[1]
        k = int(params["k"])
        lam = retrieval_weight(distances[:k], float(params["alpha"]), float(params["tau"]))
        p_knn = knn_distribution(distances, tokens, k, float(params["knn_temperature"]), vocab)
        if not bool(p_knn.sum() > 0):  # nothing retrieved: the model alone
            lam = 1.0
        mixed = mixture(logits_row, p_lm, p_knn, 1.0 - lam)  # λ_t weighs the model here
        log_mixed = mixed.log().to(logits_row.dtype)
        if finished(row):  # the overlap scheduler's discarded step: change no state
            return log_mixed
        pending = state.pop("pending", None)
        if pending is not None and len(row.output_ids) == pending["at"] + 1:
            document, span = span_after(int(row.output_ids[-1]), pending["tokens"],
                                        pending["following"], int(params["span"]) - 1)
            if span:
                state["draft"] = span
                row.stats["nest_spans"] = row.stats.get("nest_spans", 0.0) + 1.0
                # attribution: [first output position, document, tokens taken from it]
                state["source"] = [pending["at"], document, 1]
                row.stats.setdefault("nest_sources", []).append(state["source"])
        draft = state.get("draft")
        if draft:
            token = draft[0]
            if 0 <= token < vocab and bool(torch.isfinite(logits_row[token])) and accepted(
                    mixed, token, float(params["gamma"])):
                state["draft"] = draft[1:]
                row.stats["nest_span_tokens"] = row.stats.get("nest_span_tokens", 0.0) + 1.0
                state["source"][2] += 1
                forced = torch.full_like(logits_row, float("-inf"))
                forced[token] = log_mixed[token]
                return forced
            state["draft"] = []  # refused: this position takes p_M's own token, no new span
            row.stats["nest_rejections"] = row.stats.get("nest_rejections", 0.0) + 1.0
            return log_mixed
        if lam <= float(params["delta"]) and int(params["span"]) > 1:
            following = row.inputs[continuation_key(store)]
            state["pending"] = {"at": len(row.output_ids),
                                "tokens": [int(t) for t in tokens[:k].tolist()],
                                "following": following[:k].tolist()}
        return log_mixed
