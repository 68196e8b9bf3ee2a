"""The tool and monitor launch flags (``--ilsi-tools`` & co.), parsed by ``config``."""

from __future__ import annotations

import pytest

from sglang_ilsi.config import IlsiConfig, IlsiConfigError, parse, split_argv


def test_tool_flags_accepted(tmp_path):
    cfg = parse(["--ilsi-tools", "calculator, retrieval", "--ilsi-tool-retrieval-dir",
                 str(tmp_path), "--ilsi-tool-max-calls", "2", "--ilsi-monitor-modules",
                 "json,textwrap"])
    assert cfg.tools == ("calculator", "retrieval")
    assert cfg.tool_retrieval_dir == str(tmp_path) and cfg.tool_max_calls == 2
    assert cfg.monitor_modules == ("json", "textwrap")
    assert IlsiConfig.from_json(cfg.to_json()) == cfg
    assert parse(["--ilsi"]).tools == ()  # tools are off unless enabled


def test_split_argv_keeps_tool_flag_values():
    ours, rest = split_argv(["--model-path", "m", "--ilsi-tools", "python",
                             "--ilsi-tool-max-calls", "3", "--port", "1"])
    assert ours == ["--ilsi-tools", "python", "--ilsi-tool-max-calls", "3"]
    assert rest == ["--model-path", "m", "--port", "1"]


@pytest.mark.parametrize("flags,message", [
    (["--ilsi-tools", "shell"], "--ilsi-tools: unknown tool(s) ['shell']"),
    (["--ilsi-tools", "retrieval"], "needs --ilsi-tool-retrieval-dir"),
    (["--ilsi-tool-retrieval-dir", "/"], "needs --ilsi-tools ...,retrieval"),
    (["--ilsi-tools", "retrieval", "--ilsi-tool-retrieval-dir", "/no/such/dir"],
     "no such folder"),
    (["--ilsi-tool-max-calls", "65"], "--ilsi-tool-max-calls: must be between 0 and 64"),
    (["--ilsi-tool-max-calls", "x"], "invalid int value"),
    (["--ilsi-monitor-modules", "math"], "no Python source"),
    (["--ilsi-monitor-modules", "no_such_module_xyz"], "not found"),
])
def test_bad_tool_flags_stop_the_launch(flags, message):
    with pytest.raises(IlsiConfigError) as info:
        parse(flags)
    assert message in str(info.value)
    assert isinstance(info.value, SystemExit)
