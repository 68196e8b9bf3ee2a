"""Zero-shot chain of thought (Kojima et al., NeurIPS 2022, "Large Language
Models are Zero-Shot Reasoners", arXiv:2205.11916).

Two generations, no exemplars:

1. reasoning extraction: ``x' = prompt + " " + T`` with the trigger
   ``T = "Let's think step by step."``; the model continues with a
   rationale ``z``;
2. answer extraction: ``prompt + " " + T + z + " " + A`` with the answer trigger
   ``A = "Therefore, the answer is"``; the model continues with a short
   answer ``y`` (at most ``answer_max_tokens`` tokens, ending at a newline).

The client receives ``T + z + " " + A + y``: the reasoning and the answer, as
if the model had written both. The reasoning step uses the request's own
``max_new_tokens`` (and stop strings); ``meta_info.ilsi.steps`` lists both.
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

REASONING_TRIGGER = "Let's think step by step."
ANSWER_TRIGGER = "Therefore, the answer is"


def reasoning_suffix(prompt: Prompt, trigger: str) -> str:
    """What follows the client's prompt in the reasoning call."""
    return after(prompt.tail, trigger)


def answer_suffix(prompt: Prompt, trigger: str, reasoning: str, answer_trigger: str) -> str:
    """What follows the client's prompt in the answer call."""
    first = reasoning_suffix(prompt, trigger) + reasoning
    return first + after(first, answer_trigger)


@register
class ZeroShotCoT(Program):
    """Zero-shot CoT: "Let's think step by step.", then the answer after an answer trigger."""

    name: ClassVar[str] = "zero_shot_cot"
    paper: ClassVar[str] = ("Kojima et al. 2022, Large Language Models are Zero-Shot Reasoners "
                            "(NeurIPS), arXiv:2205.11916")
    params: ClassVar[tuple[Param, ...]] = (
        trigger_param("trigger", REASONING_TRIGGER, "the reasoning trigger appended to the prompt"),
        trigger_param("answer_trigger", ANSWER_TRIGGER,
                      "appended after the reasoning; the answer follows it"),
        Param("answer_max_tokens", "int", 32, "token budget of the answer step", minimum=1,
              maximum=512),
        Param("answer_stop", "str_list", ["\n"], "where the answer step stops (besides the "
              "request's own stop strings)", max_items=8, max_length=32),
    )

    @classmethod
    async def run(cls, ctx: Context, prompt: Prompt, params: Mapping[str, Any]) -> ProgramResult:
        first = reasoning_suffix(prompt, params["trigger"])
        (reasoning,) = await ctx.generate([Call("reasoning", first)])
        second = answer_suffix(prompt, params["trigger"], reasoning.text, params["answer_trigger"])
        (answer,) = await ctx.generate([Call(
            "answer", second, max_new_tokens=params["answer_max_tokens"],
            stop=tuple(params["answer_stop"]))])
        separator = len(first) - len(params["trigger"])  # the space before the trigger, if any
        text = second[separator:] + answer.text
        return ProgramResult(text, {"reasoning": reasoning.text, "answer": answer.text})
