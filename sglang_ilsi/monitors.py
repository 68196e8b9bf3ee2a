"""Monitors for monitor-guided decoding (the ``monitor`` method).

A monitor is consulted when the generated text reaches a trigger string and
answers with the continuations allowed there (Agrawal et al. 2023 run a
static analysis of the repository at ``object.``; here the analysis is small
and fixed). Monitors are registered by name in :data:`MONITORS`:

- ``python_module``: after ``MODULE.``, the public attribute names of a Python
  module, found by parsing the module's source with :mod:`ast` (its
  ``__all__`` if that is a literal list, else its public top-level
  definitions, assignments and imports). The module is never imported or
  executed; a dotted name's parent package is imported by
  :func:`importlib.util.find_spec` to locate the source. Only modules the
  operator allows (``--ilsi-monitor-modules``, default
  :data:`DEFAULT_MONITOR_MODULES`) can be named.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
from functools import lru_cache
from typing import ClassVar

from sglang_ilsi.params import IlsiRequestError

# Modules ``monitor`` may read when the operator names none (--ilsi-monitor-modules).
DEFAULT_MONITOR_MODULES = ("json", "os.path", "string", "textwrap", "random", "re",
                           "statistics", "fractions", "shutil", "pathlib", "collections")

MAX_NAMES = 2000


class ModuleNotReadable(ValueError):
    """The module's source cannot be found or parsed."""


def _literal_strings(node: ast.AST) -> list[str] | None:
    if isinstance(node, (ast.List, ast.Tuple)) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        return [e.value for e in node.elts]
    return None


def names_from_source(source: str) -> tuple[str, ...]:
    """The public names a module's source defines (``__all__`` when literal)."""
    tree = ast.parse(source)
    exported: list[str] | None = None
    public: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            public.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name) and t.id == "__all__":
                    values = _literal_strings(node.value) if node.value is not None else None
                    if values is not None:
                        if isinstance(node, ast.AugAssign):
                            exported = (exported or []) + values
                        else:
                            exported = values
                elif isinstance(t, ast.Name):
                    public.append(t.id)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            call = node.value  # __all__.extend([...]) / __all__.append("x")
            f = call.func
            if (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
                    and f.value.id == "__all__" and exported is not None and call.args):
                if f.attr == "extend":
                    exported += _literal_strings(call.args[0]) or []
                elif f.attr == "append" and isinstance(call.args[0], ast.Constant):
                    exported.append(str(call.args[0].value))
        elif isinstance(node, ast.ImportFrom):
            public += [a.asname or a.name for a in node.names if a.name != "*"]
    names = exported if exported is not None else public
    valid = [n for n in names if n.isidentifier() and not n.startswith("_")]
    return tuple(sorted(set(valid)))[:MAX_NAMES]


@lru_cache(maxsize=64)
def module_names(module: str) -> tuple[str, ...]:
    """The public attribute names of ``module``, read from its source."""
    if not isinstance(module, str) or not all(p.isidentifier() for p in module.split(".")):
        raise ModuleNotReadable(f"{module!r} is not a module name")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise ModuleNotReadable(f"module {module!r} not found ({exc})") from None
    if spec is None:
        raise ModuleNotReadable(f"module {module!r} not found")
    origin = getattr(spec, "origin", None)
    if origin == "frozen":  # frozen stdlib modules (posixpath) name their source file here
        origin = getattr(getattr(spec, "loader_state", None), "filename", None)
    if not origin or not origin.endswith(".py") or not os.path.isfile(origin):
        raise ModuleNotReadable(f"module {module!r} has no Python source to read "
                                "(built-in or compiled modules cannot be inspected statically)")
    with open(origin, encoding="utf-8") as f:
        source = f.read()
    try:
        names = names_from_source(source)
    except SyntaxError as exc:
        raise ModuleNotReadable(f"module {module!r}: cannot parse {origin} ({exc})") from None
    if not names:
        raise ModuleNotReadable(f"module {module!r} defines no public names")
    return names


@lru_cache(maxsize=4)
def _allowed_from(exported: str | None) -> tuple[str, ...]:
    if exported:
        modules = json.loads(exported).get("monitor_modules")
        if modules:
            return tuple(modules)
    return DEFAULT_MONITOR_MODULES


def allowed_modules() -> tuple[str, ...]:
    """The operator's allow-list (``--ilsi-monitor-modules``) in a server
    process, else the default list."""
    from sglang_ilsi.errors import ENV_CONFIG

    return _allowed_from(os.environ.get(ENV_CONFIG))


class Monitor:
    """Allowed continuations at a trigger string, for one request argument."""

    name: ClassVar[str]

    @classmethod
    def default_trigger(cls, argument: str) -> str:
        raise NotImplementedError

    @classmethod
    def continuations(cls, argument: str) -> tuple[str, ...]:
        """The allowed continuations; raises :class:`IlsiRequestError` naming ``argument``."""
        raise NotImplementedError


class PythonModuleMonitor(Monitor):
    """After ``MODULE.``: attribute names that exist in the module."""

    name = "python_module"

    @classmethod
    def default_trigger(cls, argument: str) -> str:
        return argument + "."

    @classmethod
    def continuations(cls, argument: str) -> tuple[str, ...]:
        allowed = allowed_modules()
        if argument not in allowed:
            raise IlsiRequestError("argument", f"module {argument!r} is not allowed on this "
                                   f"server; allowed: {list(allowed)}")
        try:
            return module_names(argument)
        except ModuleNotReadable as exc:
            raise IlsiRequestError("argument", str(exc)) from None


MONITORS: dict[str, type[Monitor]] = {m.name: m for m in (PythonModuleMonitor,)}
