"""URIAL: untuned alignment in context (Lin et al., ICLR 2024, "The Unlocking
Spell on Base LLMs: Rethinking Alignment via In-Context Learning",
arXiv:2312.01552).

A base model (no instruction tuning) answers like an aligned assistant when
its prompt starts with a short system preamble and a few stylistic
query/answer examples, each answer well structured and polite, in a fixed
markup::

    # Instruction
    <preamble>

    # Query:
    ```
    <example query>
    ```

    # Answer:
    ```
    <example answer>
    ```

    ... (the other examples)

    # Query:
    ```
    <client's prompt>
    ```

    # Answer:
    ```

One generation, stopping at the closing fence of the answer or at the next
``# Query:`` marker (the base model would go on with a new conversation).
The preamble and the examples here are written for this package (the paper's
are its own); ``num_examples`` chooses how many. A chat request gets the
preamble as a system message and the examples as earlier turns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from sglang_ilsi.methods.prompting.base import Call, Context, Program, ProgramResult, Prompt
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register

FENCE = "```"
QUERY_MARK, ANSWER_MARK = "# Query:", "# Answer:"
STOP = (f"\n{FENCE}", QUERY_MARK)

PREAMBLE = (
    "The following are conversations between a person and an AI assistant. Each question "
    f"is under \"{QUERY_MARK}\" and the assistant's reply under \"{ANSWER_MARK}\".\n"
    "The assistant is helpful, honest and careful. It answers the question that was asked, "
    "follows every instruction about form (length, format, language), and says so plainly "
    "when it does not know. Replies are clear and well organised: a direct answer first, "
    "then short supporting details, lists where they help. The assistant declines requests "
    "that could cause harm, briefly and politely."
)

EXAMPLES: tuple[tuple[str, str], ...] = (
    ("Give me three tips for sleeping better.",
     "Here are three tips for better sleep:\n\n"
     "1. Keep a regular schedule: go to bed and get up at the same time every day.\n"
     "2. Make the bedroom dark, quiet and cool.\n"
     "3. Avoid caffeine in the afternoon and screens in the last hour before bed.\n\n"
     "If poor sleep goes on for weeks, it is worth talking to a doctor."),
    ("What is the capital of Australia? Answer in one word.",
     "Canberra"),
    ("Explain what a prime number is, in two sentences.",
     "A prime number is a whole number greater than 1 that can be divided evenly only by 1 "
     "and by itself. For example, 7 is prime, while 8 is not, since 8 = 2 x 4."),
)


def block(query: str, answer: str) -> str:
    return f"{QUERY_MARK}\n{FENCE}\n{query}\n{FENCE}\n\n{ANSWER_MARK}\n{FENCE}\n{answer}\n{FENCE}\n\n"


def context(num_examples: int) -> str:
    """The preamble and the examples, up to where the client's query begins."""
    examples = "".join(block(q, a) for q, a in EXAMPLES[:num_examples])
    return f"# Instruction\n{PREAMBLE}\n\n{examples}{QUERY_MARK}\n{FENCE}\n"


ANSWER_OPENING = f"\n{FENCE}\n\n{ANSWER_MARK}\n{FENCE}\n"  # after the client's query


@register
class Urial(Program):
    """URIAL: a base model aligned in context by a preamble and stylistic examples."""

    name: ClassVar[str] = "urial"
    paper: ClassVar[str] = ("Lin et al. 2024, The Unlocking Spell on Base LLMs: Rethinking "
                            "Alignment via In-Context Learning (ICLR), arXiv:2312.01552")
    params: ClassVar[tuple[Param, ...]] = (
        Param("num_examples", "int", len(EXAMPLES), "how many stylistic examples", minimum=0,
              maximum=len(EXAMPLES)),
    )

    @classmethod
    def chat_messages(cls, params: Mapping[str, Any]) -> list[dict[str, str]]:
        turns = [{"role": "system", "content": PREAMBLE}]
        for query, answer in EXAMPLES[:params["num_examples"]]:
            turns += [{"role": "user", "content": query}, {"role": "assistant", "content": answer}]
        return turns

    @classmethod
    def call(cls, prompt: Prompt, params: Mapping[str, Any]) -> Call:
        if prompt.chat:
            return Call("answer")
        return Call("answer", prefix=context(params["num_examples"]), suffix=ANSWER_OPENING,
                    stop=STOP)

    @classmethod
    async def run(cls, ctx: Context, prompt: Prompt, params: Mapping[str, Any]) -> ProgramResult:
        (answer,) = await ctx.generate([cls.call(prompt, params)])
        return ProgramResult(answer.text.strip(), {"examples": params["num_examples"]})
