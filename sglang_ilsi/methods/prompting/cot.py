"""Few-shot chain-of-thought prompting (Wei et al., NeurIPS 2022, "Chain-of-Thought
Prompting Elicits Reasoning in Large Language Models", arXiv:2201.11903).

The prompt is preceded by exemplars, each a question, a worked reasoning and
its answer, so that the model answers the client's question the same way::

    Q: <question 1>
    A: <reasoning 1> The answer is <answer 1>.

    ...

    Q: <client's prompt>
    A:

One generation, stopping where the model would start the next ``Q:``. The
exemplars are a built-in set of arithmetic word problems (written for this
package; ``num_exemplars`` of them) or the request's own ``exemplars``, a list
of ``{"question", "reasoning", "answer"}`` objects (at most
:data:`MAX_EXEMPLARS`, each field at most :data:`MAX_FIELD_CHARS` characters).
A chat request gets the exemplars as earlier user/assistant turns instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from sglang_ilsi.methods.prompting.base import (
    RESERVED,
    Call,
    Context,
    Program,
    ProgramResult,
    Prompt,
)
from sglang_ilsi.params import IlsiRequestError, Param, validate_params
from sglang_ilsi.registry import register

MAX_EXEMPLARS = 8
MAX_FIELD_CHARS = 1000
FIELDS = ("question", "reasoning", "answer")
QUESTION, ANSWER = "Q: ", "A:"
STOP = ("\nQ:",)

# Arithmetic word problems with worked reasoning, written for this package.
EXEMPLARS: tuple[dict[str, str], ...] = (
    {"question": "A baker fills 6 trays with 8 rolls each and sells 29 rolls. How many rolls "
                 "are left?",
     "reasoning": "The trays hold 6 * 8 = 48 rolls. After selling 29, 48 - 29 = 19 rolls are "
                  "left.",
     "answer": "19"},
    {"question": "Nora reads 12 pages a day for 5 days, then 20 pages on the sixth day. How "
                 "many pages does she read in total?",
     "reasoning": "In 5 days she reads 12 * 5 = 60 pages. With the sixth day, 60 + 20 = 80 "
                  "pages.",
     "answer": "80"},
    {"question": "A crate of 45 apples is shared equally among 9 children, and each child "
                 "eats 2 of theirs. How many apples does each child have left?",
     "reasoning": "Each child gets 45 / 9 = 5 apples. After eating 2, each has 5 - 2 = 3 "
                  "apples left.",
     "answer": "3"},
    {"question": "A bus starts with 17 passengers. At the first stop 6 get off and 11 get "
                 "on. How many passengers are on the bus now?",
     "reasoning": "After 6 get off there are 17 - 6 = 11 passengers. Then 11 get on, so "
                  "11 + 11 = 22 passengers.",
     "answer": "22"},
    {"question": "Tickets cost 7 dollars each. Sam buys 4 tickets and pays with a 50 dollar "
                 "bill. How much change does he get?",
     "reasoning": "The tickets cost 4 * 7 = 28 dollars. The change is 50 - 28 = 22 dollars.",
     "answer": "22"},
    {"question": "A garden has 3 rows of 14 tulips. A rabbit eats 9 of them. How many tulips "
                 "are left?",
     "reasoning": "There are 3 * 14 = 42 tulips. After the rabbit, 42 - 9 = 33 tulips are "
                  "left.",
     "answer": "33"},
)


def worked_answer(exemplar: Mapping[str, str]) -> str:
    """An exemplar's answer side: the reasoning, then "The answer is X."."""
    return f"{exemplar['reasoning']} The answer is {exemplar['answer']}."


def exemplar_block(exemplars: list[Mapping[str, str]]) -> str:
    """The exemplars as text, each ``Q: ...\\nA: ...`` followed by a blank line."""
    return "".join(f"{QUESTION}{e['question']}\n{ANSWER} {worked_answer(e)}\n\n"
                   for e in exemplars)


def chosen_exemplars(params: Mapping[str, Any]) -> list[Mapping[str, str]]:
    return list(params["exemplars"]) or list(EXEMPLARS[:params["num_exemplars"]])


def check_exemplars(value: Any) -> list[dict[str, str]]:
    """The request's ``exemplars``, checked; raises naming the bad entry."""
    if not isinstance(value, list):
        raise IlsiRequestError("exemplars", "expected a list of {question, reasoning, answer}")
    if len(value) > MAX_EXEMPLARS:
        raise IlsiRequestError("exemplars", f"at most {MAX_EXEMPLARS} exemplars allowed, "
                               f"got {len(value)}")
    out = []
    for i, entry in enumerate(value):
        label = f"exemplars[{i}]"
        if not isinstance(entry, Mapping) or set(entry) != set(FIELDS):
            raise IlsiRequestError(label, f"expected an object with exactly {list(FIELDS)}")
        for key in FIELDS:
            text = entry[key]
            if not isinstance(text, str) or not text.strip():
                raise IlsiRequestError(f"{label}.{key}", "expected a non-empty string")
            if len(text) > MAX_FIELD_CHARS:
                raise IlsiRequestError(f"{label}.{key}",
                                       f"at most {MAX_FIELD_CHARS} characters allowed")
        out.append({key: entry[key] for key in FIELDS})
    return out


@register
class ChainOfThought(Program):
    """Few-shot chain of thought: worked exemplars before the question."""

    name: ClassVar[str] = "cot"
    paper: ClassVar[str] = ("Wei et al. 2022, Chain-of-Thought Prompting Elicits Reasoning in "
                            "Large Language Models (NeurIPS), arXiv:2201.11903")
    params: ClassVar[tuple[Param, ...]] = (
        Param("num_exemplars", "int", 4, "how many built-in exemplars (when the request "
              "sends none)", minimum=1, maximum=len(EXEMPLARS)),
    )

    @classmethod
    def validate(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        own = {k: v for k, v in raw.items() if k not in (*RESERVED, "exemplars")}
        params = validate_params(cls.params, own)
        params["exemplars"] = check_exemplars(raw.get("exemplars", []))
        return params

    @classmethod
    def chat_messages(cls, params: Mapping[str, Any]) -> list[dict[str, str]]:
        turns: list[dict[str, str]] = []
        for e in chosen_exemplars(params):
            turns += [{"role": "user", "content": e["question"]},
                      {"role": "assistant", "content": worked_answer(e)}]
        return turns

    @classmethod
    def call(cls, prompt: Prompt, params: Mapping[str, Any]) -> Call:
        """The one generation: the exemplars around the prompt (text prompts)."""
        if prompt.chat:
            return Call("answer", stop=STOP)
        return Call("answer", suffix=f"\n{ANSWER}", stop=STOP,
                    prefix=exemplar_block(chosen_exemplars(params)) + QUESTION)

    @classmethod
    async def run(cls, ctx: Context, prompt: Prompt, params: Mapping[str, Any]) -> ProgramResult:
        (answer,) = await ctx.generate([cls.call(prompt, params)])
        return ProgramResult(answer.text, {"exemplars": len(chosen_exemplars(params))})
