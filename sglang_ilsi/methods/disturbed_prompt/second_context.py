"""How a request describes its second (disturbed) context.

Exactly one of the parameters below builds the second prompt; a method may
supply a default (instructive decoding's noisy instruction, ROSE's reverse
system prompt, CFG's unconditional prompt). The HTTP side turns the choice
into token ids (:mod:`sglang_ilsi.engine.http.request_needs`) and the scheduler runs
the target on them in lockstep with the request (:mod:`sglang_ilsi.engine.scheduler.companions`):
the second sequence is the second prompt followed by the tokens the request
generates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sglang_ilsi.methods.base import (
    SECOND,
    SECOND_CONTEXT_PARAMS,
    LogitsMethod,
    Requirements,
    RowContext,
    column,
    stacked,
)
from sglang_ilsi.params import Param

SECOND_PROMPT_PARAMS = (
    Param("second_prompt", "str", "", "the second prompt, verbatim (replaces the prompt)",
          max_length=65536),
    Param("remove", "str_list", [], "strings cut out of the prompt (e.g. the context "
          "document) to build the second prompt", max_items=16, max_length=65536),
    Param("prefix", "str", "", "text put before the prompt to build the second prompt",
          max_length=8192),
    Param("system", "str", "", "chat requests: the system message of the second prompt "
          "(replaces the request's system message, or is added)", max_length=8192),
)
assert tuple(p.name for p in SECOND_PROMPT_PARAMS) == SECOND_CONTEXT_PARAMS


class SecondContextMethod(LogitsMethod):
    """Base of methods needing the target's logits on a second context.

    ``second_default`` (see :class:`LogitsMethod`) is used when the request
    gives none of the second-prompt parameters; ``{"unconditional": True}`` makes the
    second prompt empty: only the beginning-of-sequence token, or the prompt's
    last token for tokenizers without one."""

    needs = frozenset({"logits", "second_context"})

    @classmethod
    def requirements(cls, params: dict[str, Any]) -> Requirements:
        return Requirements(second_context=True)


def minus_second(logits: torch.Tensor, rows: Sequence[RowContext], weight: str) -> torch.Tensor:
    """``z − w · z_second`` with ``w`` each row's parameter ``weight``."""
    return logits - column(rows, weight, logits) * stacked(rows, SECOND, logits)
