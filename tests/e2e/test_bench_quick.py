"""``sglang-ilsi bench --quick`` end to end on CPU: a real server on the lab
model, every task, results JSON with every field, Markdown, PNG, resuming;
and the same harness against a running server given by ``--url``."""

from __future__ import annotations

import json

import pytest
from conftest import start_server

from sglang_ilsi.cli import main
from sglang_ilsi_lab.bench import runner
from sglang_ilsi_lab.models import catalog
from sglang_ilsi_lab.server_process import ServerProcess

pytestmark = pytest.mark.server

TOP = {"schema", "bench", "quick", "created", "command", "machine", "confidence",
       "bootstrap_resamples", "run_file", "cells", "files"}
MACHINE = {"platform", "python", "cpus", "sglang", "sglang_ilsi", "torch"}
CELL = {"key", "task", "model", "method", "family", "items", "ok", "errors", "error_examples",
        "config", "metric", "metrics", "effects", "cost", "published", "notes", "examples"}
CONFIG = {"ilsi", "temperature", "sampling", "max_new_tokens", "server_args", "items", "seed",
          "transformed", "logprobs"}
CI = {"mean", "ci_low", "ci_high", "n"}
EFFECT = {"baseline", "metric", "higher_is_better", "diff", "ci_low", "ci_high", "n",
          "expected_sign", "verdict", "cost_ratio", "time_ratio"}
JUDGED = {"claim_kind", "verdict_test"}  # the first comparison's: the published claim's test
RATIO = {"ratio", "ci_low", "ci_high", "n"}
COST = {"completion_tokens", "forward_tokens", "samples", "extra_forward_tokens",
        "aux_model_tokens", "prompt_tokens", "latency_s", "seconds", "seconds_per_item"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-quick")
    assert main(["bench", "--quick", "--out", str(out), "--no-progress"]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_quick_json_has_every_field(quick_run):
    out, results = quick_run
    assert set(results) == TOP and set(results["machine"]) == MACHINE
    assert results["quick"] is True and results["command"].startswith("sglang-ilsi bench")
    planned = runner.plan(quick=True)
    assert [c["key"] for c in results["cells"]] == [c.key for c in planned]
    assert {c["task"] for c in results["cells"]} == {"arithmetic", "json", "open_text", "conflict"}
    for cell in results["cells"]:
        assert set(cell) == CELL, cell["key"]
        assert set(cell["config"]) == CONFIG
        assert set(cell["cost"]) == COST
        assert cell["errors"] == 0 and cell["ok"] == cell["items"], cell["error_examples"]
        assert cell["metric"] in cell["metrics"]
        for value in cell["metrics"].values():
            assert set(value) == CI and value["n"] == cell["items"]
            assert value["ci_low"] <= value["mean"] <= value["ci_high"]
        for key in ("completion_tokens", "forward_tokens", "samples", "latency_s", "seconds"):
            assert cell["cost"][key] > 0, (cell["key"], key)
        if cell["family"] != "baseline":
            assert cell["effects"] and cell["published"]
        for eff in cell["effects"]:
            first = eff is cell["effects"][0]
            assert set(eff) == (EFFECT | JUDGED if first else EFFECT)
            assert eff["ci_low"] <= eff["diff"] <= eff["ci_high"]
            assert eff["verdict"] in (("reproduced", "inconclusive", "opposite", "not shown",
                                       "by construction") if first else ("n/a",))
            if first:
                assert eff["claim_kind"] in ("effect", "speed", "equivalence", "by_construction")
                assert eff["verdict_test"]
            assert set(eff["time_ratio"]) == RATIO and 0 < eff["time_ratio"]["n"] <= cell["items"]
            assert eff["time_ratio"]["ci_low"] <= eff["time_ratio"]["ratio"] \
                <= eff["time_ratio"]["ci_high"]
            assert eff["cost_ratio"]["forward_tokens"] > 0


def test_quick_costs_come_from_the_ilsi_report(quick_run):
    _, results = quick_run
    cells = {c["key"]: c for c in results["cells"]}
    sc = cells["arithmetic/lab-target-early/self_consistency@8"]
    greedy = cells["arithmetic/lab-target-early/greedy"]
    assert sc["cost"]["samples"] == 8 and greedy["cost"]["samples"] == 1
    assert sc["cost"]["extra_forward_tokens"] > 0 == greedy["cost"]["extra_forward_tokens"]
    assert sc["effects"][0]["cost_ratio"]["forward_tokens"] > 3
    # the row's own per-item metrics from the candidates (pass@N, agreement)
    assert sc["metrics"]["oracle"]["mean"] >= sc["metrics"]["accuracy"]["mean"]
    assert 0 < sc["metrics"]["top_share"]["mean"] <= 1
    # the perplexity path (a prefill-only scoring request per item) ran
    ppl = cells["open_text/lab-target-early/greedy"]["metrics"]["ppl"]
    assert ppl["n"] > 0 and ppl["mean"] >= 1.0
    assert cells["json/lab-target-early/json_grammar"]["config"]["ilsi"] == {
        "grammar": "json-object"}


def test_quick_writes_markdown_and_png(quick_run):
    out, results = quick_run
    md = (out / "results.md").read_text()
    for cell in results["cells"]:
        assert f"| {cell['model']} | {cell['method']} |" in md
    png = out / "results.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["files"] == {"json": str(out / "results.json"),
                                "markdown": str(out / "results.md"), "plot": str(png)}
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp files


def test_rerun_resumes_without_a_server(quick_run, monkeypatch, capsys):
    out, results = quick_run
    lines = (out / runner.RUN_FILE).read_text().count("\n")

    def no_server(self):
        raise AssertionError("every cell is done: no server may start")

    monkeypatch.setattr(ServerProcess, "start", no_server)
    assert main(["bench", "--quick", "--out", str(out), "--no-progress"]) == 0
    assert "done (in" in capsys.readouterr().out
    assert (out / runner.RUN_FILE).read_text().count("\n") == lines
    again = json.loads((out / "results.json").read_text())
    assert [c["metrics"] for c in again["cells"]] == [c["metrics"] for c in results["cells"]]


def test_bench_against_a_running_server(tmp_path):
    model = str(catalog.prepare("lab-target-early"))
    for client in start_server(model, ["--ilsi"]):
        out = tmp_path / "url"
        rc = main(["bench", "--url", client.base_url, "--models", "lab-target-early",
                   "--tasks", "arithmetic", "--methods", "greedy", "--items", "3",
                   "--out", str(out), "--no-progress"])
        assert rc == 0
        results = json.loads((out / "results.json").read_text())
        (cell,) = results["cells"]
        assert cell["key"] == "arithmetic/lab-target-early/greedy" and cell["ok"] == 3
        assert not (out / "logs").exists()  # no server of its own
        # a server serving another model than the cells need is refused up front
        rc = main(["bench", "--url", client.base_url, "--models", "smollm2-135m-instruct",
                   "--tasks", "json", "--methods", "greedy", "--items", "1",
                   "--out", str(tmp_path / "wrong"), "--no-progress"])
        assert rc == 1 and not (tmp_path / "wrong").exists()
