"""Typed parameter schemas for methods, and their validation.

Every method declares its parameters as :class:`Param` objects. A request's
``ilsi`` object is checked against them before it reaches the scheduler; any
problem raises :class:`IlsiRequestError`, which the server turns into an HTTP
400 whose message names the offending parameter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sglang_ilsi.errors import IlsiRequestError  # noqa: F401  (re-exported: methods raise it)

# The types a parameter may have. Lists are flat lists of scalars, so the
# value survives SGLang's msgpack/pickle IPC unchanged.
KINDS = ("float", "int", "bool", "str", "int_list", "float_list", "str_list")


@dataclass(frozen=True)
class Param:
    """One typed, bounded parameter of a method.

    ``minimum``/``maximum`` bound numbers (and each element of numeric lists);
    ``exclusive_*`` makes a bound strict. ``max_items`` bounds list lengths and
    ``max_length`` string lengths, so a request cannot make the server do
    unbounded work.
    """

    name: str
    kind: str
    default: Any
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: tuple[Any, ...] | None = None
    max_items: int = 256
    max_length: int = 256

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Param {self.name}: unknown kind {self.kind!r}")

    # -- validation -----------------------------------------------------------------
    def validate(self, value: Any) -> Any:
        """Return ``value`` converted to this parameter's type, or raise
        :class:`IlsiRequestError` naming the parameter."""
        if self.kind.endswith("_list"):
            if not isinstance(value, (list, tuple)):
                raise IlsiRequestError(self.name, f"expected a list, got {_type_name(value)}")
            if len(value) > self.max_items:
                raise IlsiRequestError(
                    self.name, f"at most {self.max_items} items allowed, got {len(value)}"
                )
            scalar_kind = self.kind[: -len("_list")]
            return [self._scalar(scalar_kind, v, f"{self.name}[{i}]") for i, v in enumerate(value)]
        return self._scalar(self.kind, value, self.name)

    def _scalar(self, kind: str, value: Any, label: str) -> Any:
        if kind == "bool":
            if not isinstance(value, bool):
                raise IlsiRequestError(label, f"expected a boolean, got {_type_name(value)}")
            return value
        if kind == "str":
            if not isinstance(value, str):
                raise IlsiRequestError(label, f"expected a string, got {_type_name(value)}")
            if len(value) > self.max_length:
                raise IlsiRequestError(label, f"at most {self.max_length} characters allowed")
            self._check_choice(value, label)
            return value
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise IlsiRequestError(label, f"expected an integer, got {_type_name(value)}")
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise IlsiRequestError(label, f"expected a number, got {_type_name(value)}")
            try:
                value = float(value)
            except OverflowError:  # an int beyond float range (JSON allows any size)
                value = math.inf
            if not math.isfinite(value):
                raise IlsiRequestError(label, "must be a finite number")
        self._check_bounds(value, label)
        self._check_choice(value, label)
        return value

    def _check_bounds(self, value: float, label: str) -> None:
        lo, hi = self.minimum, self.maximum
        if lo is not None and (value <= lo if self.exclusive_minimum else value < lo):
            op = ">" if self.exclusive_minimum else ">="
            raise IlsiRequestError(label, f"must be {op} {lo:g}, got {value!r}")
        if hi is not None and (value >= hi if self.exclusive_maximum else value > hi):
            op = "<" if self.exclusive_maximum else "<="
            raise IlsiRequestError(label, f"must be {op} {hi:g}, got {value!r}")

    def _check_choice(self, value: Any, label: str) -> None:
        if self.choices is not None and value not in self.choices:
            raise IlsiRequestError(label, f"must be one of {list(self.choices)}, got {value!r}")

    # -- description ----------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """A JSON-able description (used by ``sglang-ilsi methods --json``)."""
        out: dict[str, Any] = {"name": self.name, "type": self.kind, "default": self.default}
        if self.minimum is not None:
            out["exclusive_minimum" if self.exclusive_minimum else "minimum"] = self.minimum
        if self.maximum is not None:
            out["exclusive_maximum" if self.exclusive_maximum else "maximum"] = self.maximum
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.kind.endswith("_list"):
            out["max_items"] = self.max_items
        out["doc"] = self.doc
        return out


def validate_params(
    schema: Sequence[Param], given: Mapping[str, Any], reserved: Sequence[str] = ()
) -> dict[str, Any]:
    """Check ``given`` against ``schema``; return every parameter with defaults
    filled in. Unknown keys are an error (a typo must not be silently ignored)."""
    by_name = {p.name: p for p in schema}
    for key in given:
        if key not in by_name and key not in reserved:
            known = sorted(by_name) + sorted(reserved)
            raise IlsiRequestError(key, f"unknown parameter; known: {known}")
    return {
        p.name: (p.validate(given[p.name]) if p.name in given else _copy_default(p.default))
        for p in schema
    }


def _copy_default(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__
