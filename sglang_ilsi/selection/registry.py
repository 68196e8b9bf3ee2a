"""The selection-rule catalog: rule name → rule class.

Selection rules (``sglang_ilsi.selection.rules``) register themselves here with
:func:`register_rule`, which checks their declaration the way
:func:`sglang_ilsi.registry.register` checks logits methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sglang_ilsi.methods.base import add_unique, check_declaration
from sglang_ilsi.params import IlsiRequestError

if TYPE_CHECKING:
    from sglang_ilsi.selection.rules import SelectionRule

RULES: dict[str, type[SelectionRule]] = {}


def register_rule(cls: type[SelectionRule]) -> type[SelectionRule]:
    """Class decorator adding a selection rule to the catalog; checks its declaration."""
    check_declaration(cls)
    if "samples" not in cls.needs:
        raise TypeError(f"{cls.name}: a selection rule needs 'samples'")
    if "n" not in {p.name for p in cls.params}:
        raise TypeError(f"{cls.name}: a selection rule must declare the parameter 'n'")
    add_unique(RULES, cls, "selection rule")
    return cls


def get_rule(name: str) -> type[SelectionRule]:
    """The rule called ``name``; unknown names raise :class:`IlsiRequestError`
    naming ``method``."""
    cls = RULES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise IlsiRequestError("method", f"unknown selection rule {name!r}; known: {sorted(RULES)}")
    return cls


def all_rules() -> dict[str, type[SelectionRule]]:
    return dict(sorted(RULES.items()))


def describe_rule(cls: type[SelectionRule]) -> dict[str, Any]:
    """A JSON-able card for one rule: :func:`sglang_ilsi.registry.describe`."""
    from sglang_ilsi.registry import describe

    return describe(cls)
