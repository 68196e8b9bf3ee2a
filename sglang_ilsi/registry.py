"""The catalog: method name → method class.

Built-in methods register themselves with :func:`register` when
``sglang_ilsi.methods`` is imported. Third-party methods come from the
``sglang_ilsi.methods`` entry-point group or from a Python file named with
``--ilsi-plugin`` (see ``plugins/``); both call :func:`register` too.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from sglang_ilsi.methods.base import LogitsMethod, add_unique, check_declaration

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "sglang_ilsi.methods"

_METHODS: dict[str, type[LogitsMethod]] = {}
_loaded = False


def register(cls: type[LogitsMethod]) -> type[LogitsMethod]:
    """Class decorator adding a method to the catalog; checks its declaration."""
    check_declaration(cls)
    add_unique(_METHODS, cls)
    return cls


def load_builtin_and_entry_point_methods() -> None:
    """Import the built-in catalog and any installed third-party methods."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import sglang_ilsi.methods.catalog  # noqa: F401  (registers built-ins)

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception:
            logger.exception("sglang-ilsi: failed to load method entry point %s", ep.name)
            continue
        if isinstance(obj, type) and issubclass(obj, LogitsMethod) and obj.name not in _METHODS:
            register(obj)


def load_plugin_file(path: str) -> None:
    """Import an out-of-tree method file (operator-supplied, never from a request)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--ilsi-plugin: no such file: {path}")
    name = f"sglang_ilsi_plugin_{file.stem}"
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def get(name: str) -> type[LogitsMethod] | None:
    load_builtin_and_entry_point_methods()
    return _METHODS.get(name)


def all_methods() -> dict[str, type[LogitsMethod]]:
    load_builtin_and_entry_point_methods()
    return dict(sorted(_METHODS.items()))


def selection_rules() -> dict[str, type]:
    """The selection rules (methods that need ``samples``), by name."""
    from sglang_ilsi.selection import all_rules

    return all_rules()


def request_methods() -> dict[str, type]:
    """Request-level methods that run around SGLang's generate call (the tool loop)."""
    from sglang_ilsi.tools.method import ToolUse

    return {ToolUse.name: ToolUse}


def catalog() -> dict[str, type]:
    """Every method a request can name: logits-stage methods, selection rules and
    request-level methods."""
    return dict(sorted({**all_methods(), **selection_rules(), **request_methods()}.items()))


def describe(cls: type) -> dict[str, Any]:
    """A JSON-able card for one method (CLI and ``/ilsi/methods``)."""
    return {
        "name": cls.name,
        "family": cls.family,
        "needs": sorted(cls.needs),
        "paper": cls.paper,
        "summary": cls.summary(),
        "params": [p.describe() for p in cls.params],
    }
