"""Tools without a server: the sandbox, the calculator, retrieval, call grammar,
request validation and call execution (hostile arguments become error results)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from sglang_ilsi import tools
from sglang_ilsi.engine.http import tool_loop
from sglang_ilsi.methods.tool_use.tools import ToolUse
from sglang_ilsi.params import IlsiRequestError
from sglang_ilsi.tools import calculator
from sglang_ilsi.tools.retrieval import Retriever
from sglang_ilsi.tools.sandbox import (
    Limits,
    Policy,
    drop_privileges_available,
    network_namespace_available,
    run_python,
)

FAST = Limits(cpu_seconds=1, wall_seconds=10)

# -- sandbox ---------------------------------------------------------------------------


def test_runs_code_in_a_fresh_folder_with_an_empty_environment():
    code = ("import os, json\n"
            "open('note.txt', 'w').write('kept inside')\n"
            "print(json.dumps({'cwd': os.getcwd(), 'env': dict(os.environ),\n"
            "                  'note': open('note.txt').read()}))\n")
    result = run_python(code, FAST)
    assert result.ok, result.stderr
    seen = json.loads(result.stdout)
    assert seen["note"] == "kept inside"
    assert set(seen["env"]) == {"HOME", "TMPDIR", "LC_ALL"}
    assert seen["env"]["HOME"] == seen["cwd"] and seen["cwd"].startswith(tempfile.gettempdir())
    assert not os.path.exists(seen["cwd"])  # removed after the run


def test_stdin_and_extra_files():
    result = run_python("import sys; print(sys.stdin.read().upper(), open('data/x.txt').read())",
                        FAST, stdin="abc", files={"data/x.txt": "xyz"})
    assert result.ok and result.stdout.split() == ["ABC", "xyz"]
    with pytest.raises(ValueError):
        run_python("pass", FAST, files={"../escape.txt": "x"})


CONNECT = ("import socket\n"
           "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
           "s.settimeout(2)\n"
           "s.connect(('127.0.0.1', {port}))\n"
           "s.sendall(b'leak')\n"
           "print('connected')\n")


def _listener() -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    return server


def _assert_no_connection(server: socket.socket) -> None:
    with pytest.raises(socket.timeout):
        server.accept()


@pytest.mark.parametrize("policy", [
    Policy(),
    Policy(network_namespace=False, drop_privileges=False),  # the audit hook alone
    "namespace_only",
], ids=["all_layers", "audit_hook_only", "network_namespace_only"])
def test_no_network(policy):
    if policy == "namespace_only":
        if not network_namespace_available():
            pytest.skip("unshare -n does not work on this machine; the audit hook is tested")
        policy = Policy(network_namespace=True, audit_hook=False, drop_privileges=False)
    with _listener() as server:
        port = server.getsockname()[1]
        result = run_python(CONNECT.format(port=port), FAST, policy=policy)
        assert not result.ok and "connected" not in result.stdout
        if policy.audit_hook:
            assert "socket.__new__ is not allowed" in result.stderr
        else:  # the namespace has no route to the host's loopback
            assert "OSError" in result.stderr or "Error" in result.stderr, result.stderr
        _assert_no_connection(server)


def test_layers_are_used_where_available():
    result = run_python("pass", FAST)
    assert result.isolation["audit_hook"] is True
    assert result.isolation["network_namespace"] == network_namespace_available()
    assert result.isolation["unprivileged_user"] == drop_privileges_available()


WRITES = [
    "open({path!r}, 'w').write('x')",
    "open({path!r}, 'a')",
    "import os; os.open({path!r}, os.O_WRONLY | os.O_CREAT)",
    "import os; os.mkdir({path!r})",
    "import os; os.symlink('/etc/passwd', {path!r})",
    "import pathlib; pathlib.Path({path!r}).write_text('x')",
    "import shutil; shutil.copyfile('main.py', {path!r})",
]


@pytest.mark.parametrize("template", WRITES)
def test_no_writes_outside_the_sandbox_folder(template, tmp_path):
    os.chmod(tmp_path, 0o777)  # only the sandbox's own rules may stop the write
    target = tmp_path / f"escape-{uuid.uuid4().hex}"
    result = run_python(template.format(path=str(target)), FAST)
    assert not result.ok
    assert "outside the sandbox folder is not allowed" in result.stderr, result.stderr
    assert not os.path.lexists(target)


def test_no_remove_or_rename_outside(tmp_path):
    os.chmod(tmp_path, 0o777)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    os.chmod(victim, 0o666)
    for code in (f"import os; os.remove({str(victim)!r})",
                 f"import os; os.rename({str(victim)!r}, 'stolen.txt')",
                 f"import os; os.truncate({str(victim)!r}, 0)",
                 f"import shutil; shutil.rmtree({str(tmp_path)!r})"):
        result = run_python(code, FAST)
        assert not result.ok and "not allowed" in result.stderr, (code, result.stderr)
    assert victim.read_text() == "keep"


def test_unprivileged_user_alone_cannot_write_root_files(tmp_path):
    if not drop_privileges_available():
        pytest.skip("not root or no setpriv: the unprivileged-user layer is not used here")
    target = tmp_path / "owned-by-root.txt"  # tmp_path is 0o700, owned by root
    result = run_python(f"open({str(target)!r}, 'w')", FAST,
                        policy=Policy(audit_hook=False, network_namespace=False))
    assert not result.ok and "PermissionError" in result.stderr
    assert not target.exists()


def test_cpu_limit():
    start = time.monotonic()
    result = run_python("while True:\n    pass\n", Limits(cpu_seconds=1, wall_seconds=20))
    assert not result.ok and result.error == "CPU time limit exceeded"
    assert not result.timed_out
    assert time.monotonic() - start < 10


def test_memory_limit():
    result = run_python("x = bytearray(2 * 1024 ** 3)\nprint(len(x))",
                        Limits(memory_bytes=256 * 1024 ** 2, wall_seconds=20))
    assert not result.ok and "MemoryError" in result.stderr
    assert result.stdout == ""


def test_output_limit():
    result = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 4096)\n",
                        Limits(output_bytes=10_000, wall_seconds=20))
    assert result.output_truncated and not result.ok
    assert result.error == "output limit exceeded"
    assert len(result.stdout) == 10_000


def test_file_size_limit():
    result = run_python("open('big.bin', 'wb').write(b'x' * (4 * 1024 * 1024))",
                        Limits(file_bytes=1024 * 1024, wall_seconds=20))
    assert not result.ok and "File too large" in result.stderr


@pytest.mark.parametrize("code", [
    "import time\ntime.sleep(600)",
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)",
    "import sys\nsys.stdin.read()",
])
def test_wall_clock_kill(code):
    start = time.monotonic()
    result = run_python(code, Limits(wall_seconds=1.0, cpu_seconds=5), stdin="" if "stdin" not in code else None)
    elapsed = time.monotonic() - start
    if "stdin" in code:  # stdin is /dev/null: reads EOF, ends at once
        assert result.ok
    else:
        assert result.timed_out and result.error == "wall-clock limit exceeded"
    assert elapsed < 5


@pytest.mark.parametrize("code", [
    "import os; os.fork()",
    "import subprocess; subprocess.run(['true'])",
    "import os; os.system('true')",
    "import os; os.execv('/bin/true', ['true'])",
    "import os; os.kill(1, 0)",
    "import ctypes",
    "import gc; gc.get_objects()",
])
def test_no_processes_ctypes_or_hook_tampering(code):
    result = run_python(code, FAST)
    assert not result.ok and "not allowed" in result.stderr, result.stderr


def test_process_limit_alone():
    if not drop_privileges_available():
        pytest.skip("RLIMIT_NPROC applies only to the unprivileged user, not used here")
    result = run_python("import os\npid = os.fork()\nprint('forked', pid)", FAST,
                        policy=Policy(audit_hook=False, network_namespace=False))
    assert not result.ok and "BlockingIOError" in result.stderr, result.stderr
    assert "forked" not in result.stdout


# -- calculator -------------------------------------------------------------------------

@pytest.mark.parametrize("expression,value", [
    ("1 + 2 * 3", 7), ("(17 + 4) * 3", 63), ("2 ** 10", 1024), ("7 // 2", 3), ("7 % 4", 3),
    ("-3 + +2", -1), ("10 / 4", 2.5), ("sqrt(16)", 4.0), ("max(1, 5, 3)", 5),
    ("round(pi, 3)", 3.142), ("factorial(10)", 3628800), ("log(8, 2)", 3.0), ("2 ** -1", 0.5),
    ("floor(2.7) + ceil(2.1)", 5), ("1e3 + 1", 1001.0),
])
def test_calculator_results(expression, value):
    assert calculator.evaluate(expression) == pytest.approx(value)


@pytest.mark.parametrize("expression,why", [
    ("__import__('os').system('true')", "unsupported syntax: call of Attribute"),
    ("__import__('os')", "unknown function '__import__'"),
    ("(1).__class__", "unsupported syntax: Attribute"),
    ("().__class__.__bases__[0].__subclasses__()", "unsupported syntax"),
    ("open('/etc/passwd')", "unknown function"),
    ("x", "unknown name"),
    ("'a' * 10", "unsupported literal"),
    ("9 ** 9 ** 9", "too large"),
    ("10 ** 100000", "too large"),
    ("2 ** 5000", "too large"),
    ("factorial(100000)", "factorial argument"),
    ("1 / 0", "division by zero"),
    ("exp(1000)", "OverflowError"),
    ("(-8) ** 0.5", "complex"),
    ("1 +", "not an arithmetic expression"),
    ("1" * 600, "longer than"),
    ("-" * 500 + "1", "syntax nodes"),
    ("+".join(["1"] * 200), "syntax nodes"),
    ("[1, 2]", "unsupported syntax: List"),
    ("lambda: 1", "unsupported syntax: Lambda"),
    ("sqrt(x=4)", "keyword arguments"),
    ("True + 1", "unsupported literal"),
])
def test_calculator_refuses_hostile_input(expression, why):
    with pytest.raises(calculator.CalculatorError, match=why):
        calculator.evaluate(expression)


# -- retrieval --------------------------------------------------------------------------

def test_retrieval_ranks_passages(tmp_path):
    (tmp_path / "cats.txt").write_text("Cats purr and sleep.\n\nA cat is a small feline.")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "rockets.md").write_text("Rockets burn fuel to reach orbit.")
    (tmp_path / "skip.bin").write_text("rockets rockets rockets")
    outside = tmp_path.parent / f"outside-{uuid.uuid4().hex}.txt"
    outside.write_text("rockets secret")
    (tmp_path / "link.txt").symlink_to(outside)
    try:
        r = Retriever(tmp_path)
        hits = r.search("how do rockets reach orbit", k=3)
        assert [p.source for p, _ in hits] == [os.path.join("sub", "rockets.md")]
        assert r.search("feline", 1)[0][0].text == "A cat is a small feline."
        assert r.search("zebra") == []
        with pytest.raises(ValueError):
            r.search("   ")
    finally:
        outside.unlink()


# -- declaration, validation, call grammar ------------------------------------------------

def _config(**kw):
    base = {"tools": ("calculator", "python"), "tool_max_calls": 4, "tool_retrieval_dir": None,
            "methods": (), "speculative_algorithm": None}
    base.update(kw)
    return SimpleNamespace(method_allowed=lambda n: True, **base)


def test_tool_use_is_in_the_catalog():
    from sglang_ilsi import registry
    from sglang_ilsi.declaration import check_declaration

    assert registry.entries()["tools"] is ToolUse
    check_declaration(ToolUse)
    assert registry.describe(ToolUse)["needs"] == ["grammar", "tool"]


@pytest.mark.parametrize("raw,param", [
    ({"tools": ["nope"]}, "ilsi.tools[0]"),
    ({"tools": ["retrieval"]}, "ilsi.tools[0]"),
    ({"tools": "calculator"}, "ilsi.tools"),
    ({"tools": [3]}, "ilsi.tools[0]"),
    ({"tools": [{"name": "calculator"}]}, "ilsi.tools[0]"),
    ({"tools": ["calculator", "calculator"]}, "ilsi.tools"),
    ({"max_calls": 5}, "ilsi.max_calls"),
    ({"max_calls": -1}, "ilsi.max_calls"),
    ({"max_calls": "3"}, "ilsi.max_calls"),
    ({"tool_choice": "python3"}, "ilsi.tool_choice"),
    ({"tool_choice": "required", "max_calls": 0}, "ilsi.max_calls"),
    ({"bogus": 1}, "ilsi.bogus"),
])
def test_bad_tool_requests(raw, param):
    with pytest.raises(IlsiRequestError) as info:
        ToolUse.validate({"method": "tools", **raw}, _config())
    assert str(info.value).startswith(param + ":"), str(info.value)


def test_tool_request_defaults():
    params = ToolUse.validate({"method": "tools"}, _config(tool_max_calls=2))
    assert params["tools"] == ["calculator", "python"] and params["max_calls"] == 2
    with pytest.raises(IlsiRequestError, match="no tools are enabled"):
        ToolUse.validate({"method": "tools"}, _config(tools=()))


def test_call_schema_accepts_only_calls_of_the_allowed_tools():
    xgr = pytest.importorskip("xgrammar")
    from xgrammar.testing import _is_grammar_accept_string as accepts

    grammar = xgr.Grammar.from_json_schema(tools.call_schema(["calculator"]), any_whitespace=True)
    assert accepts(grammar, '{"name": "calculator", "arguments": {"expression": "1+2"}}')
    assert not accepts(grammar, '{"name": "python", "arguments": {"code": "print(1)"}}')
    assert not accepts(grammar, '{"name": "calculator", "arguments": {"code": "1"}}')
    assert not accepts(grammar, '{"name": "calculator", "arguments": {"expression": "'
                       + "1" * 300 + '"}}')


def test_call_grammar_on_xgrammar_has_no_free_whitespace():
    xgr = pytest.importorskip("xgrammar")
    from xgrammar.testing import _is_grammar_accept_string as accepts

    params = tools.call_grammar(["calculator", "python"], "xgrammar")
    grammar = xgr.Grammar.from_ebnf(params["ebnf"])
    assert accepts(grammar, '{"name": "calculator", "arguments": {"expression": "1+2"}}')
    assert accepts(grammar, '{"name": "python", "arguments": {"code": "x = \'a\'\\nprint(x)"}}')
    assert not accepts(grammar, '{"name": "calculator",   "arguments": {"expression": "1"}}')
    assert not accepts(grammar, '{"name": "calculator", "arguments": {"expression": "1"}} ')
    assert tools.call_grammar(["python"], "outlines") == {"json_schema": tools.call_schema(["python"])}


def _execute(name: str | None, text: str, allowed=("calculator", "python")):
    instances = {n: tools.TOOLS[n]({}) for n in allowed}
    return asyncio.run(tool_loop.execute(instances.get(name), text, list(allowed)))


@pytest.mark.parametrize("text,error", [
    ('{"name": "calculator", "arguments": {"expression": "__import__(\'os\')"}}',
     "unknown function"),
    ('{"name": "calculator", "arguments": {"expression": "9**9**9**9"}}', "too large"),
    ('{"name": "calculator", "arguments": {"expression": 5}}', "must be a string"),
    ('{"name": "calculator", "arguments": {"expr": "1"}}', "unknown argument"),
    ('{"name": "calculator", "arguments": []}', "must be a JSON object"),
    ('{"name": "calculator", "arguments": {"expression": "1+', "malformed tool call"),
    ('{"name": "rm", "arguments": {}}', "unknown tool"),
    ('[' * 100_000, "malformed tool call"),
    ('{"name": "python", "arguments": {"code": "import socket; socket.socket()"}}',
     "socket.__new__ is not allowed"),
    ('{"name": "python", "arguments": {"code": "while True: pass"}}', "CPU time limit"),
])
def test_hostile_calls_become_error_results(text, error):
    name = tool_loop._peek_name(text)
    record = _execute(name, text)
    assert record["result"] is None and error in record["error"], record
    block = tool_loop.response_block(text, record)
    assert f"error: {record['error']}" in block and block.endswith(tool_loop.RESULT_CLOSE + "\n")


def test_a_good_call_runs():
    record = _execute("calculator", '{"name": "calculator", "arguments": {"expression": "6*7"}}')
    assert record == {**record, "tool": "calculator", "result": "42", "error": None}
    # grammar backends admit raw control characters in strings: still parsed
    record = _execute("calculator", '{"name": "calculator", "arguments": {"expression": "6*7\t"}}')
    assert record["result"] == "42"
    record = _execute("python", '{"name": "python", "arguments": {"code": "print(2**20)"}}')
    assert record["result"] == "1048576\n"


def test_results_are_truncated():
    record = _execute("python", '{"name": "python", "arguments": {"code": "print(\'y\' * 5000)"}}')
    assert len(record["result"]) < tools.MAX_RESULT_CHARS + 60
    assert "more characters" in record["result"]


def test_retrieval_tool_needs_its_folder(tmp_path):
    with pytest.raises(tools.ToolError):
        tools.TOOLS["retrieval"]({})
    (tmp_path / "a.txt").write_text("The launch code is hidden in the garden.")
    tool = tools.TOOLS["retrieval"]({"retrieval_dir": str(tmp_path)})
    assert "garden" in tool.run({"query": "launch garden"})
    assert tool.run({"query": "nothing-matches"}) == "no matching passages"
    assert Path(tmp_path / "a.txt").exists()
