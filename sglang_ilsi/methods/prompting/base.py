"""Prompting programs (kind ``program``): prompt constructions run inside the server.

A program needs nothing from the engine beyond ordinary generations: it wraps
the client's prompt (a ``prefix`` before it, a ``suffix`` after it), asks for
one or more generations, perhaps feeds one generation into the next prompt,
and returns the text the client receives. The engine
(:mod:`sglang_ilsi.engine.http.programs`) runs it for a request naming it::

    {"method": "zero_shot_cot", "answer_trigger": "Therefore, the answer is",
     "decoding": {"method": "typical", "mass": 0.9}}

``decoding`` (:attr:`Program.decoded_by`) names a logits method that decodes
every generation of the program. A program never imports SGLang: it sees the
request only through :class:`Prompt` and the engine only through
:class:`Context`, so it is pure logic, testable with a fake ``generate``.

Chat requests: the prompt then arrives as the chat template's token ids, with
the assistant turn already open. A program's in-context material (few-shot
exemplars, a system preamble) goes into the conversation instead, as
:meth:`Program.chat_messages` (turns placed before the client's own), and
:attr:`Prompt.chat` tells :meth:`Program.run` not to add it again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from sglang_ilsi.declaration import Method
from sglang_ilsi.params import Param, validate_params

FAMILY = "context-aware/prompting"
# Keys of the ilsi object that are not the program's own parameters.
RESERVED = ("method", "decoding")


@dataclass(frozen=True)
class Call:
    """One generation a program asks for: ``prefix + client prompt + suffix``,
    continued under the request's sampling parameters with ``sampling``
    overriding them (``max_new_tokens`` None: the request's own), and
    ``stop`` added to the request's stop strings."""

    role: str
    suffix: str = ""
    prefix: str = ""
    max_new_tokens: int | None = None
    stop: tuple[str, ...] = ()
    sampling: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Generated:
    """What one call produced."""

    text: str
    completion_tokens: int
    finish_reason: str | None = None


class Context(Protocol):
    """The engine, as a program sees it."""

    async def generate(self, calls: Sequence[Call]) -> list[Generated]:
        """Run ``calls`` (as one batched request when there are several) and
        return their generations in order."""
        ...


@dataclass(frozen=True)
class Prompt:
    """What a program may know of the client's prompt: its last characters
    (to decide whether a piece needs a separating space) and whether it came
    through a chat template (the program's :meth:`Program.chat_messages` are
    then already in it, and the assistant turn is open)."""

    tail: str = ""
    chat: bool = False


@dataclass
class ProgramResult:
    """The text the client receives and the program's own report entries
    (merged into ``meta_info.ilsi``)."""

    text: str
    report: dict[str, Any] = field(default_factory=dict)


def after(tail: str, piece: str) -> str:
    """``piece`` as it follows text ending in ``tail``: one separating space
    unless ``tail`` is empty or already ends in whitespace (or ``piece``
    starts with it)."""
    if not tail or not piece or tail[-1].isspace() or piece[0].isspace():
        return piece
    return " " + piece


class Program(Method):
    """Base class of prompting programs (kind ``program``: no engine need).

    Subclasses set ``name``, ``paper`` and typed ``params``, and implement
    :meth:`run`; :meth:`validate` may check what ``params`` cannot express
    (structured parameters); :meth:`chat_messages` gives the turns a chat
    request gets before its own.
    """

    family: ClassVar[str] = FAMILY
    needs: ClassVar[frozenset[str]] = frozenset()
    composes_with: ClassVar[frozenset[str]] = frozenset({"logits"})
    decoded_by: ClassVar[str | None] = "decoding"

    @classmethod
    def validate(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The request's parameters checked, defaults filled in; raises
        :class:`~sglang_ilsi.params.IlsiRequestError` naming the parameter."""
        return validate_params(cls.params, {k: v for k, v in raw.items() if k not in RESERVED})

    @classmethod
    def chat_messages(cls, params: Mapping[str, Any]) -> list[dict[str, str]]:
        """Turns (``{"role", "content"}``) placed before a chat request's own
        messages; none by default."""
        return []

    @classmethod
    async def run(cls, ctx: Context, prompt: Prompt, params: Mapping[str, Any]) -> ProgramResult:
        raise NotImplementedError


def trigger_param(name: str, default: str, doc: str) -> Param:
    """A text piece the program appends (a trigger phrase), bounded."""
    return Param(name, "str", default, doc, max_length=200)
