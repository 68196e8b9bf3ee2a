"""Unit tests of the touch-point table (``sglang_ilsi.engine.patches``).

The table is verified against the installed SGLang in a fresh process (with
the CPU ``sgl_kernel`` stand-in active where there is no CUDA, as the plugin
does), for every launch configuration that adds entries. The refusal and its
override are exercised in-process with stand-in entries on the standard
library, so no SGLang hook is ever applied here.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from sglang_ilsi.config import IlsiConfig, flag_help, parse
from sglang_ilsi.engine import patches
from sglang_ilsi.engine.patches import (
    ALLOW_FLAG,
    ATTRIBUTE,
    CHECK_KINDS,
    CODE,
    HOOK_KINDS,
    MAIN,
    OVERRIDE,
    PROVIDE,
    SIGNATURE,
    TouchPoint,
)

# Every launch configuration that adds entries to the table.
CONFIGS = [
    {"grammar_backend": "outlines"},
    {"speculative_algorithm": patches.LOOKAHEAD},
    {"speculative_algorithm": patches.SELF_SPECULATIVE},
    {"speculative_algorithm": patches.SPECULATIVE_CONTRASTIVE},
]

# Run in a fresh process: resolves every hook target and verifies every check
# entry; also lists the SGLang methods our worker subclasses override.
VERIFY_SCRIPT = textwrap.dedent("""
    import json, sys
    from sglang_ilsi.engine.cpu import portability
    portability.activate()
    from sglang_ilsi.config import IlsiConfig
    from sglang_ilsi.engine import patches

    failures, checked = {}, set()
    for overrides in json.loads(sys.argv[1]):
        for tp in patches.touch_points(IlsiConfig(**overrides)):
            key = f"{tp.kind} {tp.target}"
            if key in checked:
                continue
            checked.add(key)
            if tp.kind in patches.CHECK_KINDS:
                problem = patches.verify(tp)
            else:
                try:
                    owner, _, attr = tp.target.rpartition(".")
                    getattr(patches.pkgutil.resolve_name(owner), attr)
                    problem = None
                except Exception as e:
                    problem = repr(e)
            if problem is not None:
                failures[key] = problem

    from sglang_ilsi.engine.speculative.contrastive_worker import SpeculativeContrastiveWorker
    from sglang_ilsi.engine.speculative.lookahead_worker import LookaheadWorker

    def overridden(cls):
        base = cls.__mro__[1]
        return sorted(f"{base.__module__}.{base.__name__}.{name}" for name in vars(cls)
                      if callable(vars(cls)[name]) and hasattr(base, name))

    print(json.dumps({"failures": failures, "checked": len(checked),
                      "overridden": overridden(LookaheadWorker)
                      + overridden(SpeculativeContrastiveWorker)}))
""")


@pytest.fixture(scope="module")
def verified() -> dict:
    result = subprocess.run(
        [sys.executable, "-c", VERIFY_SCRIPT, json.dumps(CONFIGS)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def all_entries() -> list[TouchPoint]:
    seen: dict[tuple[str, str], TouchPoint] = {}
    for overrides in [{}, *CONFIGS]:
        for tp in patches.touch_points(IlsiConfig(**overrides)):
            seen.setdefault((tp.kind, tp.target), tp)
    return list(seen.values())


# -- the table against the installed SGLang ------------------------------------------


def test_installed_sglang_is_supported():
    assert patches.version_problem(patches.sglang_version()) is None


def test_every_entry_verifies_against_the_installed_sglang(verified):
    assert verified["failures"] == {}
    assert verified["checked"] >= 50


def test_worker_subclasses_override_exactly_the_listed_methods(verified):
    listed = sorted(tp.target for tp in all_entries() if tp.kind == OVERRIDE
                    and (".ngram_worker." in tp.target or ".standalone_worker_v2." in tp.target))
    assert verified["overridden"] == listed


def test_entries_are_well_formed():
    for tp in all_entries():
        assert tp.kind in (*HOOK_KINDS, PROVIDE, *CHECK_KINDS), tp
        assert tp.where in (patches.MAIN, patches.WORKER, patches.BOTH), tp
        assert tp.why.strip(), tp
        assert (tp.hook is None) == (tp.kind in CHECK_KINDS), tp
        if tp.kind in (OVERRIDE, SIGNATURE):
            assert tp.names.count("*") <= 1, tp


def _sglang_cpu_kernel_imports() -> set[tuple[str, str, str]]:
    """(module, bound name, sgl_kernel name) for every top-level ``sgl_kernel``
    import in a branch guarded by ``_is_cpu`` / ``is_cpu()`` at module level
    of the installed SGLang (read statically; nothing imported)."""
    root = Path(importlib.util.find_spec("sglang").submodule_search_locations[0])
    found = set()
    for path in root.rglob("*.py"):
        text = path.read_text(errors="ignore")
        if "sgl_kernel" not in text or "/test/" in path.as_posix():
            continue
        module = ".".join(("sglang", *path.relative_to(root).with_suffix("").parts))
        for node in ast.parse(text).body:
            branch = node
            while isinstance(branch, ast.If):
                if ast.unparse(branch.test) in ("_is_cpu", "is_cpu()"):
                    for stmt in branch.body:
                        if isinstance(stmt, ast.ImportFrom) and stmt.module == "sgl_kernel":
                            found |= {(module, a.asname or a.name, a.name) for a in stmt.names}
                branch = branch.orelse[0] if len(branch.orelse) == 1 else None
    return found


def test_stand_in_entries_cover_every_cpu_import_of_sglang():
    assert _sglang_cpu_kernel_imports() == set(patches.SGL_KERNEL_CPU_IMPORTS)


# -- single checks --------------------------------------------------------------------


def check(kind: str, target: str, names: tuple[str, ...] = ()) -> str | None:
    return patches.verify(TouchPoint(target, kind, None, MAIN, "test", names))


def test_signature_check():
    assert check(SIGNATURE, "json.dumps", ("obj", "*", "indent", "sort_keys")) is None
    assert "no_such_param" in check(SIGNATURE, "json.dumps", ("obj", "*", "no_such_param"))
    assert "positionally" in check(SIGNATURE, "json.dumps", ("indent",))


def test_override_check_wants_the_exact_parameters():
    assert check(OVERRIDE, "json.JSONDecoder.decode", ("self", "s", "_w")) is None
    assert "parameters are now" in check(OVERRIDE, "json.JSONDecoder.decode", ("self", "s"))


def test_attribute_and_code_checks():
    assert check(ATTRIBUTE, "json.JSONDecoder.raw_decode") is None
    assert "AttributeError" in check(ATTRIBUTE, "json.JSONDecoder.no_such_method")
    assert check(CODE, "json.dumps", ("_default_encoder", "encode")) is None
    assert "no_such_key" in check(CODE, "json.dumps", ("no_such_key",))


def test_version_range():
    assert patches.version_problem("0.5.23") is None
    assert patches.version_problem("0.5.23.post1") is None
    for version in ("0.5.22", "0.5.24", "0.6.0", "unknown"):
        assert version in patches.version_problem(version)


# -- refusal and override -------------------------------------------------------------

STALE = TouchPoint("json.dumps", SIGNATURE, None, MAIN, "a stale test entry",
                   ("obj", "*", "no_such_param"))


@pytest.fixture
def mismatch(monkeypatch):
    monkeypatch.setattr(patches, "sglang_version", lambda: "0.6.0")
    monkeypatch.setattr(patches, "touch_points", lambda config: [STALE])


def test_mismatch_refuses_naming_each_touch_point_and_the_flag(mismatch):
    with pytest.raises(SystemExit) as exc:
        patches.install(IlsiConfig(), MAIN)
    message = str(exc.value.code)
    assert "0.6.0" in message and "json.dumps" in message and "no_such_param" in message
    assert ALLOW_FLAG in message


def test_override_turns_the_refusal_into_a_warning(mismatch, caplog):
    with caplog.at_level(logging.WARNING, logger=patches.__name__):
        installed = patches.install(IlsiConfig(allow_unsupported_sglang=True), MAIN)
    assert installed == ["json.dumps"]
    assert "json.dumps" in caplog.text and "0.6.0" in caplog.text


def test_a_hook_that_does_not_take_stops_even_with_the_override(monkeypatch):
    fake = types.ModuleType("ilsi_fake_sglang_module")
    fake.provided = object()  # SGLang already has it: PROVIDE refuses to replace it
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    entry = TouchPoint(fake.__name__ + ".provided", PROVIDE, lambda: None, MAIN, "test")
    monkeypatch.setattr(patches, "touch_points", lambda config: [entry])
    with pytest.raises(SystemExit) as exc:
        patches.install(IlsiConfig(allow_unsupported_sglang=True), MAIN)
    assert "could not patch" in str(exc.value.code)
    assert fake.__name__ + ".provided" in str(exc.value.code)


# -- the launch flag ------------------------------------------------------------------


def test_flag_parses_and_travels_to_children():
    assert parse([]).allow_unsupported_sglang is False
    config = parse(["--ilsi", ALLOW_FLAG])
    assert config.allow_unsupported_sglang is True
    assert IlsiConfig.from_json(config.to_json()).allow_unsupported_sglang is True
    assert ALLOW_FLAG in flag_help()
