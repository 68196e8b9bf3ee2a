"""DoLa: decoding by contrasting layers, with dynamic premature-layer selection.

Chuang, Xie, Luo, Kim, Glass & He, "DoLa: Decoding by Contrasting Layers
Improves Factuality in Large Language Models", ICLR 2024 (arXiv:2309.03883).

Let q_N be the final layer's next-token distribution and q_j = softmax(
lm_head(norm(h_j))) the early-exit distribution of layer j (h_j is the hidden
state after j decoder layers, passed through the model's final norm and LM
head). Among the candidate layers J, the premature layer is the one most
different from the final layer, per row and step:

    M = argmax_{j ∈ J} JSD(q_N ‖ q_j),

and tokens are scored by

    F(x) = log q_N(x) − log q_M(x)    for x with q_N(x) ≥ α · max_w q_N(w)
    F(x) = −inf                       otherwise (adaptive plausibility constraint),

α = 0.1. F is returned as the row's logits (greedy takes its argmax). The
stats report how often each candidate layer was chosen. ``layers`` lists the
candidates; by default the lower half's even layers ("low" in the paper's
release: 0, 2, …, N/2 − 2, where layer 0 is the embedding output).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sglang_ilsi.methods.base import (
    LogitsMethod,
    Requirements,
    RowContext,
    column,
    layer_key,
)
from sglang_ilsi.methods.model_aided.contrastive_decoding import plausible
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register

LAYERS = Param("layers", "int_list", [], "candidate premature layers (0 = embeddings, i = "
               "after i decoder layers); empty = the lower half's even layers",
               minimum=0, maximum=1024, max_items=32)


def default_layers(num_layers: int) -> list[int]:
    """The "low" candidate set: even layers below N/2 (at least layer 0)."""
    return list(range(0, max(num_layers // 2, 1), 2))


def js_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Row-wise Jensen–Shannon divergence (natural log) of two log-distributions."""
    p, q = log_p.exp(), log_q.exp()
    log_m = torch.log((p + q) / 2).clamp_min(-1e30)
    kl_pm = torch.where(p > 0, p * (log_p - log_m), torch.zeros_like(p)).sum(-1)
    kl_qm = torch.where(q > 0, q * (log_q - log_m), torch.zeros_like(q)).sum(-1)
    return (kl_pm + kl_qm) / 2


class EarlyLayerMethod(LogitsMethod):
    """Base of the methods that read early layers' logits: the request's
    ``layers`` (or :func:`default_layers`) are what the engine computes."""

    needs = frozenset({"logits", "layer_logits"})

    @classmethod
    def requirements(cls, params: dict[str, Any]) -> Requirements:
        return Requirements(layers=tuple(params["layers"]))

    @classmethod
    def default_layers(cls, num_layers: int) -> list[int] | None:
        return default_layers(num_layers)


@register
class DoLa(EarlyLayerMethod):
    """DoLa: log q_final − log q_premature, premature layer chosen by max JSD."""

    name = "dola"
    family = "independent/contrastive"
    paper = "Chuang et al. 2024, DoLa (arXiv:2309.03883)"
    params = (
        LAYERS,
        Param("alpha", "float", 0.1, "adaptive plausibility threshold α",
              minimum=0.0, maximum=1.0, exclusive_minimum=True),
    )

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        final = torch.log_softmax(logits, dim=-1)
        out = torch.empty_like(logits)
        for i, row in enumerate(rows):
            layers = row.params["layers"]
            early = torch.log_softmax(torch.stack(
                [row.inputs[layer_key(j)].to(logits.device, torch.float32) for j in layers]),
                dim=-1)
            jsd = js_divergence(final[i].expand_as(early), early)
            chosen = int(jsd.argmax())
            out[i] = final[i] - early[chosen]
            counts = row.stats.setdefault("premature_layer_counts", {})
            counts[str(layers[chosen])] = counts.get(str(layers[chosen]), 0) + 1
        keep = plausible(final, column(rows, "alpha", logits))
        return out.masked_fill_(~keep, float("-inf"))
