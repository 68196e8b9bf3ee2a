"""Classifier-free guidance (CFG) for language models, with a negative prompt.

Sanchez, Spangher, Fan, Levi, Ammanamanchi & Biderman, "Stay on topic with
Classifier-Free Guidance", ICML 2024 (arXiv:2306.17806).

With the request's prompt x and an unconditional or negative prompt x̄,

    log p̂(y) = log p(y | x̄) + γ · (log p(y | x) − log p(y | x̄)),

γ > 1 strengthens the prompt (the paper finds γ = 1.5 a good default). By
default x̄ is the empty prompt (unconditional); a negative prompt is given with
``second_prompt``, ``remove``, ``prefix`` or ``system``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from sglang_ilsi.methods.base import SECOND, RowContext, column, stacked
from sglang_ilsi.methods.disturbed_prompt.second_context import (
    SECOND_PROMPT_PARAMS,
    SecondContextMethod,
)
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register


@register
class ClassifierFreeGuidance(SecondContextMethod):
    """Classifier-free guidance: log p(y|x̄) + γ·(log p(y|x) − log p(y|x̄))."""

    name = "cfg"
    family = "context-aware/disturbed-prompt"
    paper = "Sanchez et al. 2024, Classifier-Free Guidance for LMs (arXiv:2306.17806)"
    params = (
        Param("gamma", "float", 1.5, "guidance strength γ", minimum=0.0, maximum=10.0,
              exclusive_minimum=True),
        *SECOND_PROMPT_PARAMS,
    )
    second_default: ClassVar[dict[str, Any]] = {"unconditional": True}

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        cond = torch.log_softmax(logits, dim=-1)
        uncond = torch.log_softmax(stacked(rows, SECOND, logits), dim=-1)
        return uncond + column(rows, "gamma", logits) * (cond - uncond)
