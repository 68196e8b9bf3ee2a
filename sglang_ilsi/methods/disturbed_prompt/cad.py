"""Context-aware decoding (CAD).

Shi, Han, Lewis, Tsvetkov, Zettlemoyer & Yih, "Trusting Your Evidence:
Hallucinate Less with Context-aware Decoding", NAACL 2024 (arXiv:2305.14739).

With c the context (e.g. a document) and x the query, the model's logits with
and without the context are contrasted:

    z̃ = (1 + α) · z(y | c, x) − α · z(y | x),

and the next token is drawn from softmax(z̃ / T) (argmax under greedy). The
second context is the prompt without c: the request names c in ``remove``
(or gives the context-free prompt as ``second_prompt``). The paper uses α = 0.5
(1.0 for knowledge-conflict tasks). Grammar-masked tokens stay −inf.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import SECOND, RowContext, column, stacked
from sglang_ilsi.methods.disturbed_prompt.second_context import (
    SECOND_PROMPT_PARAMS,
    SecondContextMethod,
)
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register


@register
class ContextAwareDecoding(SecondContextMethod):
    """Context-aware decoding: (1+α)·z(y|c,x) − α·z(y|x)."""

    name = "cad"
    family = "context-aware/disturbed-prompt"
    paper = "Shi et al. 2024, Context-aware Decoding (arXiv:2305.14739)"
    example = {"second_prompt": "Answer:"}  # the prompt without its context
    params = (
        Param("alpha", "float", 0.5, "weight α of the contrast", minimum=0.0, maximum=10.0),
        *SECOND_PROMPT_PARAMS,
    )

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        alpha = column(rows, "alpha", logits)
        return (1.0 + alpha) * logits - alpha * stacked(rows, SECOND, logits)
