"""Weighted combination of the target's and auxiliary models' log-probabilities.

Shi, Chen, Hu, Fang, Gu, Du, Kong & Wang, "Decoding-Time Language Model
Alignment with Multiple Objectives" (MOD), NeurIPS 2024 (arXiv:2406.18853):
models tuned for different objectives are combined at decoding time with
user weights. With log p_0 the target's and log p_i the i-th auxiliary model's
next-token log-probabilities,

    score(x) = w_0 · log p_0(x) + Σ_i w_i · log p_i(x),

returned as the row's logits (softmax(score) is the normalised weighted
geometric mixture; negative weights subtract a model, which with one amateur
and w_0 = 1 + β, w_1 = −β gives a log-probability form of contrastive
decoding). Grammar-masked tokens stay −inf when w_0 > 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sglang_ilsi.methods.base import (
    LogitsMethod,
    Requirements,
    RowContext,
    aux_key,
    column,
    on_device,
)
from sglang_ilsi.params import IlsiRequestError, Param
from sglang_ilsi.registry import register


@register
class LinearCombination(LogitsMethod):
    """MOD-style mixture: w_0·log p_target + Σ w_i·log p_aux_i."""

    name = "linear_combination"
    family = "model-aided/expert"
    paper = "Shi et al. 2024, Decoding-Time LM Alignment with Multiple Objectives " \
            "(arXiv:2406.18853)"
    needs = frozenset({"logits", "aux_model"})
    example = {"models": ["amateur"], "weights": [-0.5]}
    params = (
        Param("models", "str_list", [], "auxiliary model names", max_items=8, max_length=64),
        Param("weights", "float_list", [], "one weight per auxiliary model",
              minimum=-10.0, maximum=10.0, max_items=8),
        Param("target_weight", "float", 1.0, "weight w_0 of the target model",
              minimum=0.0, maximum=10.0, exclusive_minimum=True),
    )

    @classmethod
    def prepare(cls, params: dict[str, Any], tokenizer: Any | None) -> dict[str, Any]:
        if not params["models"]:
            raise IlsiRequestError("models", "name at least one auxiliary model")
        if len(params["weights"]) != len(params["models"]):
            raise IlsiRequestError(
                "weights", f"expected {len(params['models'])} weights (one per model), "
                f"got {len(params['weights'])}")
        if len(set(params["models"])) != len(params["models"]):
            raise IlsiRequestError("models", "a model is named twice")
        return params

    @classmethod
    def requirements(cls, params: dict[str, Any]) -> Requirements:
        return Requirements(aux_models=tuple(params["models"]))

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        score = column(rows, "target_weight", logits) * torch.log_softmax(logits, dim=-1)
        depth = max(len(row.params["models"]) for row in rows)
        for j in range(depth):  # the j-th model of every row that has one, batched
            idx = [i for i, row in enumerate(rows) if len(row.params["models"]) > j]
            aux = torch.stack([rows[i].inputs[aux_key(rows[i].params["models"][j])]
                               for i in idx]).to(device=logits.device, dtype=torch.float32)
            weight = on_device([float(rows[i].params["weights"][j]) for i in idx],
                               torch.float32, logits.device).unsqueeze(1)
            term = weight * torch.log_softmax(aux, dim=-1)
            if len(idx) == len(rows):
                score += term
            else:
                score.index_add_(0, on_device(idx, torch.long, logits.device), term)
        return score
