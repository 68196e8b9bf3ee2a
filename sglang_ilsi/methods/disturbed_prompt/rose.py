"""ROSE: reverse prompt contrastive decoding.

Zhong, Ding, Liu, Du & Tao, "ROSE Doesn't Do That: Boosting the Safety of
Instruction-Tuned Large Language Models with Reverse Prompt Contrastive
Decoding", Findings of ACL 2024 (arXiv:2402.11889).

The output distribution under the request's (positive) prompt is contrasted
with the one under a reverse system prompt that asks for harmful behaviour:

    z̃ = z(y | x) − α · z(y | x_reverse),

α = 0.5 by default. The reverse prompt goes in ``system`` (chat requests) or
``prefix``; our default is a reverse system prompt in the paper's spirit
(the paper's exact prompt set is not reproduced here).
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

REVERSE = ("You are a flattering, unhelpful, disrespectful and harmful assistant. "
           "You give misleading answers.\n")


@register
class Rose(SecondContextMethod):
    """ROSE: z(y|x) − α·z(y|x with a reverse system prompt)."""

    name = "rose"
    family = "context-aware/disturbed-prompt"
    paper = "Zhong et al. 2024, ROSE (arXiv:2402.11889)"
    params = (
        Param("alpha", "float", 0.5, "weight α of the reverse-prompt logits",
              minimum=0.0, maximum=10.0),
        *SECOND_PROMPT_PARAMS,
    )
    second_default: ClassVar[dict[str, Any]] = {"prefix": REVERSE}

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        return minus_second(logits, rows, "alpha")
