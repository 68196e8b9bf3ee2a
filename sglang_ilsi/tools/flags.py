"""The ``--ilsi-tool*`` and ``--ilsi-monitor-modules`` launch flags (parsed by
:mod:`sglang_ilsi.config`, which owns every ``--ilsi-*`` flag).

- ``--ilsi-tools calculator,python,retrieval``: tools requests may call
  (default: none; the tool loop refuses requests until one is enabled);
- ``--ilsi-tool-retrieval-dir DIR``: the text folder of the retrieval tool
  (required with it);
- ``--ilsi-tool-max-calls N``: the most tool calls one request may ask for
  (default 8, at most 64);
- ``--ilsi-monitor-modules json,os.path``: Python modules whose attribute
  names the ``monitor`` method may read (by parsing their source, never by
  importing them; default: :data:`sglang_ilsi.monitors.DEFAULT_MONITOR_MODULES`).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from sglang_ilsi.monitors import DEFAULT_MONITOR_MODULES

TAKES_VALUE = frozenset({"--ilsi-tools", "--ilsi-tool-retrieval-dir", "--ilsi-tool-max-calls",
                         "--ilsi-monitor-modules"})
DEFAULT_MAX_CALLS = 8
MAX_CALLS_CAP = 64


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ilsi-tools", default="",
                   help="comma-separated tools requests may call: calculator, python, retrieval")
    p.add_argument("--ilsi-tool-retrieval-dir", default=None,
                   help="text folder (.txt, .md) searched by the retrieval tool")
    p.add_argument("--ilsi-tool-max-calls", type=int, default=DEFAULT_MAX_CALLS,
                   help=f"most tool calls one request may make (default {DEFAULT_MAX_CALLS})")
    p.add_argument("--ilsi-monitor-modules", default=None,
                   help="comma-separated Python modules the monitor method may read "
                   "(default: " + ",".join(DEFAULT_MONITOR_MODULES) + ")")


def parse(ns: argparse.Namespace) -> dict[str, Any]:
    """Validated ``IlsiConfig`` fields; raises ``IlsiConfigError``."""
    from sglang_ilsi.errors import IlsiConfigError
    from sglang_ilsi.tools import TOOLS

    names = tuple(dict.fromkeys(t.strip() for t in ns.ilsi_tools.split(",") if t.strip()))
    unknown = [t for t in names if t not in TOOLS]
    if unknown:
        raise IlsiConfigError(f"--ilsi-tools: unknown tool(s) {unknown}; known: {sorted(TOOLS)}")
    folder = ns.ilsi_tool_retrieval_dir
    if "retrieval" in names and not folder:
        raise IlsiConfigError("--ilsi-tools retrieval needs --ilsi-tool-retrieval-dir DIR")
    if folder is not None:
        if "retrieval" not in names:
            raise IlsiConfigError("--ilsi-tool-retrieval-dir needs --ilsi-tools ...,retrieval")
        if not os.path.isdir(folder):
            raise IlsiConfigError(f"--ilsi-tool-retrieval-dir: no such folder: {folder}")
        folder = os.path.abspath(folder)
    if not 0 <= ns.ilsi_tool_max_calls <= MAX_CALLS_CAP:
        raise IlsiConfigError(f"--ilsi-tool-max-calls: must be between 0 and {MAX_CALLS_CAP}")
    modules: tuple[str, ...] = ()  # () = DEFAULT_MONITOR_MODULES
    if ns.ilsi_monitor_modules is not None:
        from sglang_ilsi.monitors import ModuleNotReadable, module_names

        modules = tuple(m.strip() for m in ns.ilsi_monitor_modules.split(",") if m.strip())
        for m in modules:
            try:
                module_names(m)
            except ModuleNotReadable as exc:
                raise IlsiConfigError(f"--ilsi-monitor-modules: {exc}") from None
    return {"tools": names, "tool_retrieval_dir": folder,
            "tool_max_calls": ns.ilsi_tool_max_calls, "monitor_modules": modules}
