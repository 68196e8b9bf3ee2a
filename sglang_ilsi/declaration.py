"""The one declaration shape of everything a request or a launch flag can name.

Every entry of the registry (:mod:`sglang_ilsi.registry`) is a class derived
from :class:`Method` that declares its ``name``, survey ``family``, ``paper``,
typed ``params`` and what it ``needs`` from the engine. Its *kind* follows from
its needs alone (:func:`kind_of`), and the engine dispatches on the kind:

============ ================================ =====================================
kind         needs                            runs where
============ ================================ =====================================
search       ``tree`` (+ ``reward``)          a tree of partial solutions, step by step
selection    ``samples``                      N samples in one request, one chosen
logits       ``logits`` (+ extras)            the scheduler's logits stage, batched
tool_loop    ``tool`` (no ``logits``)         a generate loop that runs tool calls
speculative  ``draft``                        an SGLang speculative worker (per server)
program      nothing                          a prompting program's inner requests
============ ================================ =====================================

Each kind's base class lives with its methods (``methods/base.py``:
``LogitsMethod``; ``methods/selection/base.py``: ``SelectionRule``;
``methods/speculative/base.py``: ``SpeculativeAlgorithm``;
``methods/search/base.py``: ``SearchMethod``;
``methods/prompting/base.py``: ``Program``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from sglang_ilsi.params import Param

# Survey families (Dong, Teleki & Caverlee 2024, "A Survey on LLM
# Inference-Time Self-Improvement"), used to group the catalog.
FAMILIES = (
    "independent/constrained",
    "independent/contrastive",
    "independent/minimum-bayes-risk",
    "independent/parallel",
    "independent/sampling",
    "independent/tree-search",
    "independent/self-speculative",
    "context-aware/prompting",
    "context-aware/disturbed-prompt",
    "context-aware/retrieval",
    "model-aided/expert",
    "model-aided/draft",
    "model-aided/small-lm",
    "model-aided/reward",
    "model-aided/tool-use",
)

# What a method may need from the engine (DESIGN.md's table).
NEEDS = (
    "logits",
    "aux_model",
    "second_context",
    "layer_logits",
    "samples",
    "tree",  # partial solutions grown step by step (a search)
    "confidence",  # a selection's candidates measured by the ``confidence`` method
    "draft",
    "grammar",
    "datastore",
    "reward",
    "tool",
    "execution",  # generated programs run in the server's sandbox (--ilsi-tools python)
)


# What each kind is: the first of these needs a declaration names decides it.
KIND_BY_NEED = (
    ("draft", "speculative"),
    ("tree", "search"),
    ("samples", "selection"),
    ("logits", "logits"),  # before "tool": monitor reads a module in the logits stage
    ("tool", "tool_loop"),
)
PROGRAM = "program"  # needs nothing from the engine: a program over the public API
KINDS = (*(kind for _, kind in KIND_BY_NEED), PROGRAM)


def kind_of(cls: type) -> str:
    """The kind of a declared method, from its needs (see the module docstring)."""
    for need, kind in KIND_BY_NEED:
        if need in cls.needs:
            return kind
    if cls.needs:
        raise TypeError(f"{cls.__qualname__}: its needs {sorted(cls.needs)} name no kind; "
                        f"one of {[need for need, _ in KIND_BY_NEED]}, or none (a program)")
    return PROGRAM


class Method:
    """The declaration every registered method carries (no behaviour).

    ``composes_with`` lists the kinds (and ``"grammar"``) a request may combine
    this method with: a logits method can be chained after another logits
    method, decode a selection's candidates or a tool loop's text, and run under
    a grammar; the engine refuses any other combination up front, with a 400.
    """

    name: ClassVar[str]
    family: ClassVar[str]
    paper: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset()
    params: ClassVar[tuple[Param, ...]] = ()
    composes_with: ClassVar[frozenset[str]] = frozenset()
    # The request parameter naming the logits method that decodes this method's
    # own generations (a selection's candidates, a tool loop's text), if any.
    decoded_by: ClassVar[str | None] = None
    # The parameters a minimal working request must give beside ``method`` (the
    # rest take their defaults); the catalog's example request (sglang_ilsi/catalog.py).
    example: ClassVar[dict[str, Any]] = {}

    @classmethod
    def summary(cls) -> str:
        doc = (cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else cls.name


def check_declaration(cls: type) -> None:
    """Refuse a method class (of any kind) whose declaration is incomplete (no
    name/family/paper), or names an unknown family, need or composable kind."""
    for attr in ("name", "family", "paper"):
        if not getattr(cls, attr, None):
            raise TypeError(f"{cls.__qualname__} must define {attr!r}")
    if cls.family not in FAMILIES:
        raise TypeError(f"{cls.name}: unknown family {cls.family!r}; known: {FAMILIES}")
    unknown = set(cls.needs) - set(NEEDS)
    if unknown:
        raise TypeError(f"{cls.name}: unknown needs {sorted(unknown)}")
    kind_of(cls)
    unknown = set(getattr(cls, "composes_with", ())) - {*KINDS, "grammar"}
    if unknown:
        raise TypeError(f"{cls.name}: composes_with names unknown kinds {sorted(unknown)}")


def add_unique(entries: dict[str, type], cls: type) -> None:
    """``entries[cls.name] = cls``, refusing a second class under the same name."""
    existing = entries.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"method name {cls.name!r} is already registered by {existing!r}")
    entries[cls.name] = cls
