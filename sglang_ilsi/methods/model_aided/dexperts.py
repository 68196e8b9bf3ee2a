"""DExperts: decoding-time experts and anti-experts.

Liu, Sap, Lu, Swayamdipta, Bhagavatula, Smith & Choi, "DExperts: Decoding-Time
Controlled Text Generation with Experts and Anti-Experts", ACL 2021
(arXiv:2105.03023).

With z the target's (base model's) logits and z⁺, z⁻ those of an expert and an
anti-expert sharing its vocabulary,

    z̃ = z + α (z⁺ − z⁻),

the ensemble's next-token distribution is softmax(z̃ / T). Either model may be
left out (``expert: ""`` or ``anti_expert: ""``): the missing side contributes
0. The paper uses α = 2 for detoxification; with α = 1 and an expert/anti-expert
pair that differ by tuning this is proxy-tuning (Liu et al. 2024,
arXiv:2401.08565). Grammar-masked tokens stay −inf.
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
    stacked,
)
from sglang_ilsi.params import IlsiRequestError, Param
from sglang_ilsi.registry import register


@register
class DExperts(LogitsMethod):
    """DExperts: z + α(z_expert − z_anti_expert) with co-resident auxiliary models."""

    name = "dexperts"
    family = "model-aided/expert"
    paper = "Liu et al. 2021, DExperts (arXiv:2105.03023)"
    needs = frozenset({"logits", "aux_model"})
    params = (
        Param("expert", "str", "expert", "auxiliary model used as expert ('' for none)",
              max_length=64),
        Param("anti_expert", "str", "",
              "auxiliary model used as anti-expert ('' for none)", max_length=64),
        Param("alpha", "float", 2.0, "steering strength α", minimum=-10.0, maximum=10.0),
    )

    @classmethod
    def prepare(cls, params: dict[str, Any], tokenizer: Any | None) -> dict[str, Any]:
        if not params["expert"] and not params["anti_expert"]:
            raise IlsiRequestError("expert", "give an expert, an anti_expert, or both")
        return params

    @classmethod
    def requirements(cls, params: dict[str, Any]) -> Requirements:
        return Requirements(aux_models=tuple(
            n for n in (params["expert"], params["anti_expert"]) if n))

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        steer = torch.zeros_like(logits)
        with_expert = [i for i, r in enumerate(rows) if r.params["expert"]]
        with_anti = [i for i, r in enumerate(rows) if r.params["anti_expert"]]
        if with_expert:
            idx = torch.tensor(with_expert, device=logits.device)
            steer.index_add_(0, idx, stacked([rows[i] for i in with_expert],
                                             lambda r: aux_key(r.params["expert"]), logits))
        if with_anti:
            idx = torch.tensor(with_anti, device=logits.device)
            steer.index_add_(0, idx, -stacked([rows[i] for i in with_anti],
                                              lambda r: aux_key(r.params["anti_expert"]),
                                              logits))
        return logits + column(rows, "alpha", logits) * steer
