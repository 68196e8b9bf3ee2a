"""The one registry: every name a request or a launch flag can use.

Logits methods, selection rules, the tool loop and the speculative algorithms
all register here with :func:`register`, in one declaration shape
(:class:`~sglang_ilsi.declaration.Method`: name, family, paper, needs, params,
composes_with); an entry's *kind* follows from its needs
(:func:`~sglang_ilsi.declaration.kind_of`) and the engine dispatches on that.

Where entries come from:

- built-ins: every module under ``sglang_ilsi.methods`` is imported once (a new
  method is one new file there, with no edit elsewhere);
- installed third-party packages: the ``sglang_ilsi.methods`` entry-point group
  (an entry point names a class, or a module that registers its classes);
- operator files: ``--ilsi-plugin FILE.py`` (see ``plugins/``).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import pkgutil
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from sglang_ilsi.declaration import Method, add_unique, check_declaration, kind_of
from sglang_ilsi.params import IlsiRequestError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "sglang_ilsi.methods"
BUILTIN_PACKAGE = "sglang_ilsi.methods"

_ENTRIES: dict[str, type[Method]] = {}
_loaded = False


def register(cls: type[Method]) -> type[Method]:
    """Class decorator adding an entry; checks its declaration (any kind)."""
    check_declaration(cls)
    if kind_of(cls) == "selection" and "n" not in {p.name for p in cls.params}:
        raise TypeError(f"{cls.name}: a selection rule must declare the parameter 'n'")
    add_unique(_ENTRIES, cls)
    return cls


def load() -> None:
    """Import the built-in catalog and every installed third-party entry (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    package = importlib.import_module(BUILTIN_PACKAGE)
    for info in pkgutil.walk_packages(package.__path__, BUILTIN_PACKAGE + "."):
        importlib.import_module(info.name)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception:
            logger.exception("sglang-ilsi: failed to load method entry point %s", ep.name)
            continue
        if isinstance(obj, type) and issubclass(obj, Method) and obj.name not in _ENTRIES:
            register(obj)


def load_plugin_file(path: str) -> None:
    """Import an out-of-tree method file (operator-supplied, never from a request)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--ilsi-plugin: no such file: {path}")
    import_file(file, f"sglang_ilsi_plugin_{file.stem}")


def import_file(file: Path, name: str) -> None:
    """Import the Python file ``file`` once, as the module ``name`` (its
    registrations run then)."""
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def get(name: str, kind: str | None = None) -> type[Any] | None:
    """The entry called ``name`` (of ``kind``, if given), or None."""
    load()
    cls = _ENTRIES.get(name) if isinstance(name, str) else None
    if cls is None or (kind is not None and kind_of(cls) != kind):
        return None
    return cls


def entries(kind: str | None = None) -> dict[str, type[Any]]:
    """Every entry (of ``kind``, if given), by name."""
    load()
    return {name: cls for name, cls in sorted(_ENTRIES.items())
            if kind is None or kind_of(cls) == kind}


def logits_methods() -> dict[str, type[Any]]:
    return entries("logits")


def selection_rules() -> dict[str, type[Any]]:
    return entries("selection")


def get_rule(name: str) -> type[Any]:
    """The selection rule called ``name``; anything else raises
    :class:`IlsiRequestError` naming ``method``."""
    cls = get(name, "selection")
    if cls is None:
        raise IlsiRequestError("method", f"unknown selection rule {name!r}; "
                               f"known: {sorted(selection_rules())}")
    return cls


def describe(cls: type[Any]) -> dict[str, Any]:
    """A JSON-able card for one entry (CLI and ``/ilsi/methods``)."""
    return {
        "name": cls.name,
        "kind": kind_of(cls),
        "family": cls.family,
        "needs": sorted(cls.needs),
        "composes_with": sorted(getattr(cls, "composes_with", ())),
        "paper": cls.paper,
        "summary": cls.summary(),
        "params": [p.describe() for p in cls.params],
    }
