"""Contrastive Decoding with an amateur model.

Li, Holtzman, Fried, Liang, Eisner, Hashimoto, Zettlemoyer & Lewis,
"Contrastive Decoding: Open-ended Text Generation as Optimization", ACL 2023
(arXiv:2210.15097).

With p_EXP the target (expert) distribution and p_AMA the amateur's at
temperature τ, the next token maximises

    CD(x) = log p_EXP(x) − log p_AMA(x)      for x ∈ V_head,
    V_head = {x : p_EXP(x) ≥ α · max_w p_EXP(w)}                (α-plausibility)

and every token outside V_head is set to −inf. The method returns CD as the
row's new logits, so SGLang's greedy decoding takes its argmax (the paper's
search is greedy/beam over this score) and sampling samples softmax(CD / T).

The amateur is a co-resident auxiliary model (``--ilsi-aux-model NAME=PATH``)
stepped in lockstep with the target; ``amateur`` names it. p_EXP is taken at
temperature 1 (the paper's setting); grammar-masked tokens (−inf in the
target's logits) stay −inf.
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
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register

AMATEUR = Param("amateur", "str", "amateur",
                "name of the auxiliary model (--ilsi-aux-model NAME=PATH) used as amateur",
                max_length=64)


def plausible(log_p: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The α-plausibility mask: log p(x) ≥ log α + max_w log p(w), per row."""
    return log_p >= alpha.log() + log_p.max(dim=-1, keepdim=True).values


class AmateurMethod(LogitsMethod):
    """Base of the methods that contrast the target with one named amateur."""

    needs = frozenset({"logits", "aux_model"})

    @classmethod
    def requirements(cls, params: dict[str, Any]) -> Requirements:
        return Requirements(aux_models=(params["amateur"],))

    @staticmethod
    def amateur_logits(rows: Sequence[RowContext], like: torch.Tensor) -> torch.Tensor:
        return stacked(rows, lambda r: aux_key(r.params["amateur"]), like)


@register
class ContrastiveDecoding(AmateurMethod):
    """Contrastive decoding: log p_expert − log p_amateur over the α-plausible head."""

    name = "contrastive_decoding"
    family = "model-aided/small-lm"
    paper = "Li et al. 2023, Contrastive Decoding (arXiv:2210.15097)"
    params = (
        AMATEUR,
        Param("alpha", "float", 0.1, "plausibility threshold α (relative to the top token)",
              minimum=0.0, maximum=1.0, exclusive_minimum=True),
        Param("amateur_temperature", "float", 1.0, "temperature τ of the amateur",
              minimum=0.01, maximum=10.0),
    )

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        expert = torch.log_softmax(logits, dim=-1)
        amateur_logits = cls.amateur_logits(rows, logits)
        amateur = torch.log_softmax(amateur_logits / column(rows, "amateur_temperature", logits),
                                    dim=-1)
        score = expert - amateur
        keep = plausible(expert, column(rows, "alpha", logits))
        return score.masked_fill_(~keep, float("-inf"))
