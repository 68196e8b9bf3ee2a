"""Multi-input contrastive decoding: the relevant passage against an irrelevant one.

Zhao, Cui, Zhang, Zhang & Zhao, "Enhancing Contextual Understanding in Large
Language Models through Contrastive Decoding", NAACL 2024 (arXiv:2405.02750).

With x the query, c the relevant (e.g. retrieved) passage and c' an irrelevant
or adversarial one, the logits given each are contrasted:

    z̃ = (1 + β) · z(y | c, x) − β · z(y | c', x),

and the next token is drawn from softmax(z̃ / T) (argmax under greedy): what the
relevant passage makes likely beyond what any passage would. The request
names the relevant passage as it occurs in the prompt (``passage``) and the
irrelevant one put in its place (``irrelevant``); the second sequence is the
prompt with that one substitution (a chat request's messages likewise), run in
lockstep on the server's second-context capability. Without those two, any
generic second-prompt parameter builds it. Grammar-masked tokens stay −inf.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sglang_ilsi.errors import IlsiRequestError
from sglang_ilsi.methods.base import SECOND, RowContext, column, stacked
from sglang_ilsi.methods.disturbed_prompt.second_context import (
    SECOND_PROMPT_PARAMS,
    SecondContextMethod,
)
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register


@register
class MultiInputContrastiveDecoding(SecondContextMethod):
    """Multi-input contrastive decoding: (1+β)·z(y|c,x) − β·z(y|c',x)."""

    name = "multi_input_cd"
    family = "context-aware/retrieval"
    paper = "Zhao et al. 2024, Enhancing Contextual Understanding in LLMs through " \
            "Contrastive Decoding (NAACL, arXiv:2405.02750)"
    example = {"passage": "France", "irrelevant": "Spain"}
    params = (
        Param("beta", "float", 1.0, "weight β of the contrast", minimum=0.0, maximum=10.0),
        Param("passage", "str", "", "the relevant passage, as it occurs in the prompt",
              max_length=65536),
        Param("irrelevant", "str", "", "the irrelevant passage that replaces it in the "
              "second prompt", max_length=65536),
        *SECOND_PROMPT_PARAMS,
    )

    @classmethod
    def second_context(cls, params: dict[str, Any]) -> dict[str, Any] | None:
        if not params.get("passage") and not params.get("irrelevant"):
            return None
        if not params.get("passage"):
            raise IlsiRequestError("passage", "give the relevant passage the irrelevant one "
                                   "replaces")
        others = [k for k in (p.name for p in SECOND_PROMPT_PARAMS) if params.get(k)]
        if others:
            raise IlsiRequestError(others[0], "give either passage and irrelevant, or one "
                                   "second-prompt parameter")
        return {"replace": [(params["passage"], params["irrelevant"], "passage")]}

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        beta = column(rows, "beta", logits)
        return (1.0 + beta) * logits - beta * stacked(rows, SECOND, logits)
