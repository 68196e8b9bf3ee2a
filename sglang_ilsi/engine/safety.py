"""Closing SGLang's remote-code path for logit processors.

SGLang deserializes a request's ``custom_logit_processor`` with
``dill.loads`` on client-supplied bytes (``_cache_from_str``), so with
``--enable-custom-logit-processor`` anyone who can reach the port can run
code in the server. The plugin needs that flag on for its own processor, so
it replaces ``_cache_from_str`` with :func:`safe_processor_from_str`, which
never unpickles unless the operator opted in: it reads the pickle's opcodes
with :mod:`pickletools` and accepts only a by-reference pickle of an
allow-listed class, which it imports by name.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import pickletools
from typing import Any

logger = logging.getLogger(__name__)

ALLOWED_PROCESSORS: frozenset[tuple[str, str]] = frozenset(
    {("sglang_ilsi.engine.scheduler.logits_stage", "IlsiLogitProcessor")}
)

# Opcodes of a pickle that only names a global (what dill writes for an
# importable class); anything else could construct or call objects. The memo
# stores (MEMOIZE, and PUT/BINPUT/LONG_BINPUT that protocols 0-3 write after
# GLOBAL) only record the top of the stack.
_REFERENCE_OPCODES = frozenset(
    {"PROTO", "FRAME", "SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "MEMOIZE",
     "PUT", "BINPUT", "LONG_BINPUT", "STACK_GLOBAL", "GLOBAL", "STOP"}
)


class RefusedProcessorError(ValueError):
    pass


def referenced_global(blob: bytes) -> tuple[str, str] | None:
    """``(module, qualname)`` if ``blob`` is a pickle that merely names one
    global, else None. Never executes the pickle."""
    strings: list[str] = []
    found: tuple[str, str] | None = None
    try:
        for opcode, arg, _pos in pickletools.genops(blob):
            if opcode.name not in _REFERENCE_OPCODES:
                return None
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings.append(arg)
            elif opcode.name == "STACK_GLOBAL":
                if len(strings) < 2 or found is not None:
                    return None
                found = (strings[-2], strings[-1])
            elif opcode.name == "GLOBAL":
                if found is not None:
                    return None
                module, _, name = str(arg).partition(" ")
                found = (module, name)
    except Exception:
        return None
    return found


def _resolve(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def processor_class(json_str: str, allow_any: bool) -> type:
    """The processor class a serialized processor string names.

    Allow-listed classes are imported by name. Anything else is unpickled
    only when ``allow_any`` (the operator's explicit opt-in)."""
    try:
        blob = bytes.fromhex(json.loads(json_str)["callable"])
    except Exception as e:
        raise RefusedProcessorError(f"custom_logit_processor: malformed ({e})") from None
    ref = referenced_global(blob)
    if ref is not None and ref in ALLOWED_PROCESSORS:
        return _resolve(*ref)
    if allow_any:
        import dill  # only on the operator's explicit opt-in

        return dill.loads(blob)
    raise RefusedProcessorError(
        "custom_logit_processor: serialized processors are disabled while sglang-ilsi is "
        "active (they run client-sent code); choose a named method with "
        "custom_params.ilsi, or start the server with --ilsi-allow-custom-logit-processor"
    )


class _PassThroughProcessor:
    """Stands in for a refused processor that reached the scheduler by a path
    the HTTP-side check does not cover: logs and leaves the logits alone
    rather than crashing the scheduler for every request in the batch."""

    def __call__(self, logits, custom_param_list=None):
        return logits


def make_safe_cache_from_str(allow_any: bool):
    @functools.lru_cache(maxsize=256)
    def safe_processor_from_str(json_str: str):
        try:
            return processor_class(json_str, allow_any)
        except RefusedProcessorError as e:
            logger.error("sglang-ilsi: refused a processor in the scheduler: %s", e)
            return _PassThroughProcessor

    return safe_processor_from_str
