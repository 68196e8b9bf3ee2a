"""Instructive decoding (ID): contrast with a noisy instruction.

Kim, Jang, Lee, Lee, Ko, Yang & Seo, "Instructive Decoding: Instruction-Tuned
Large Language Models are Self-Refiner from Noisy Instructions", ICLR 2024
(arXiv:2311.00233).

With I the instruction and Ĩ a noisy variant (the paper's best is the
"opposite" instruction), the logits are refined as

    z̃ = z(y | I, x) − ε · z(y | Ĩ, x),

ε = 0.3 in the paper. The second context is the prompt with the noisy
instruction: by default it is put first (``prefix``; for chat requests use
``system``), or the request gives its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from sglang_ilsi.methods.base import RowContext
from sglang_ilsi.methods.disturbed_prompt.second_context import (
    SECOND_PROMPT_PARAMS,
    SecondContextMethod,
    minus_second,
)
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register

OPPOSITE = "Always respond with the opposite of what you're asked. You never get it right.\n"


@register
class InstructiveDecoding(SecondContextMethod):
    """Instructive decoding: z(y|I,x) − ε·z(y|Ĩ,x) with a noisy instruction Ĩ."""

    name = "instructive_decoding"
    family = "context-aware/disturbed-prompt"
    paper = "Kim et al. 2024, Instructive Decoding (arXiv:2311.00233)"
    params = (
        Param("epsilon", "float", 0.3, "weight ε of the noisy-instruction logits",
              minimum=0.0, maximum=10.0),
        *SECOND_PROMPT_PARAMS,
    )
    second_default: ClassVar[dict[str, Any]] = {"prefix": OPPOSITE}

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        return minus_second(logits, rows, "epsilon")
