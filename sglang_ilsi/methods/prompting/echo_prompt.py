"""EchoPrompt (Mekala, Wolfe & Roy, NAACL 2024, "EchoPrompt: Instructing the
Model to Rephrase Queries for Improved In-context Learning", arXiv:2309.10687).

The model first restates the query, then answers it, the restatement in its
own context (zero-shot EchoPrompt):

1. echo: ``prompt + " Let's repeat the question. \\""``; the model writes the
   query again ``q'``, up to the closing quote (at most ``echo_max_tokens``);
2. answer: ``prompt + " Let's repeat the question. \\"" + q' + "\\""`` (+ an
   optional ``then`` piece, e.g. "Let's think step by step.", the paper's
   combination with zero-shot CoT); the model answers under the request's own
   ``max_new_tokens``.

The client receives ``'Let\\'s repeat the question. "' + q' + '"' + then + answer``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from sglang_ilsi.methods.prompting.base import (
    Call,
    Context,
    Program,
    ProgramResult,
    Prompt,
    after,
    trigger_param,
)
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register

ECHO_TRIGGER = "Let's repeat the question."
QUOTE = '"'


def echo_suffix(prompt: Prompt, trigger: str) -> str:
    """What follows the client's prompt in the echo call (ends with the opening quote)."""
    return after(prompt.tail, trigger) + " " + QUOTE


def answer_suffix(prompt: Prompt, trigger: str, echo: str, then: str) -> str:
    """What follows the client's prompt in the answer call."""
    echoed = echo_suffix(prompt, trigger) + echo.strip().removesuffix(QUOTE) + QUOTE
    return echoed + (after(echoed, then) if then else "")


@register
class EchoPrompt(Program):
    """EchoPrompt: the model restates the question, then answers it."""

    name: ClassVar[str] = "echo_prompt"
    paper: ClassVar[str] = ("Mekala, Wolfe & Roy 2024, EchoPrompt: Instructing the Model to "
                            "Rephrase Queries for Improved In-context Learning (NAACL), "
                            "arXiv:2309.10687")
    params: ClassVar[tuple[Param, ...]] = (
        trigger_param("trigger", ECHO_TRIGGER, "asks the model to restate the query"),
        trigger_param("then", "", "appended after the restated query, before the answer "
                      "(e.g. \"Let's think step by step.\"); empty: nothing"),
        Param("echo_max_tokens", "int", 96, "token budget of the restatement", minimum=1,
              maximum=1024),
    )

    @classmethod
    async def run(cls, ctx: Context, prompt: Prompt, params: Mapping[str, Any]) -> ProgramResult:
        first = echo_suffix(prompt, params["trigger"])
        (echo,) = await ctx.generate([Call("echo", first, max_new_tokens=params["echo_max_tokens"],
                                           stop=(QUOTE,))])
        second = answer_suffix(prompt, params["trigger"], echo.text, params["then"])
        (answer,) = await ctx.generate([Call("answer", second)])
        separator = len(after(prompt.tail, params["trigger"])) - len(params["trigger"])
        return ProgramResult(second[separator:] + answer.text,
                             {"echo": echo.text, "answer": answer.text})
