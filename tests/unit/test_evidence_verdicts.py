"""Verdicts by claim kind on small synthetic cells, the DoLa bucket chosen on a
validation split, and the evidence document re-judged from saved results."""

from __future__ import annotations

import json

import pytest

from sglang_ilsi_lab.bench import evidence, stats, verdicts
from sglang_ilsi_lab.bench import spec as specs
from sglang_ilsi_lab.bench.spec import Generation, Published, SpecError
from sglang_ilsi_lab.bench.specs import multi_distribution as md
from sglang_ilsi_lab.bench.validation import ValidatedChoice, choose
from sglang_ilsi_lab.data import synthetic


def _effect(low: float, high: float, *, time: float | None = None, tokens: float = 1.0,
            time_ci: tuple[float, float] | None = None) -> dict:
    effect = {"diff": (low + high) / 2, "ci_low": low, "ci_high": high, "n": 100,
              "higher_is_better": True,
              "cost_ratio": {"forward_tokens": tokens, "seconds_per_item": time}}
    if time_ci is not None:
        effect["time_ratio"] = {"ratio": sum(time_ci) / 2, "ci_low": time_ci[0],
                                "ci_high": time_ci[1], "n": 100}
    return effect


SPEED = Published("a speed paper", "same outputs, faster", kind="speed", margin=0.0)
EQUIV = Published("an equivalence paper", "same accuracy, fewer samples", kind="equivalence",
                  margin=0.03)
EFFECT = Published("an effect paper", "accuracy up")
PPL = Published("a truncation paper", "higher MAUVE", kind="by_construction")


def _judge(effect: dict, claim: Published, sign: int = 1, **kwargs) -> verdicts.Verdict:
    return verdicts.judge(effect, claim, expected_sign=sign,
                          higher_is_better=effect["higher_is_better"], **kwargs)


def test_effect_claims_are_judged_on_the_side_of_zero():
    assert _judge(_effect(0.01, 0.2), EFFECT).outcome == verdicts.REPRODUCED
    assert _judge(_effect(-0.1, 0.2), EFFECT).outcome == verdicts.INCONCLUSIVE
    assert _judge(_effect(-0.2, -0.1), EFFECT).outcome == verdicts.OPPOSITE
    lower = {**_effect(-0.2, -0.1), "higher_is_better": False}  # e.g. ppl falls: better
    assert _judge(lower, EFFECT).outcome == verdicts.REPRODUCED
    assert "effect test" in _judge(_effect(0.01, 0.2), EFFECT).test


def test_speed_row_with_effect_ci_containing_zero_is_judged_on_time():
    slower = _judge(_effect(0.0, 0.0, time=1.4), SPEED, sign=0)
    assert slower.outcome == verdicts.NOT_SHOWN and "time × 1.40" in slower.test
    faster = _judge(_effect(0.0, 0.0, time=0.8), SPEED, sign=0)
    assert faster.outcome == verdicts.REPRODUCED and "point estimate" in faster.test
    # with per-item times: the ratio's CI decides
    assert _judge(_effect(0.0, 0.0, time=0.8, time_ci=(0.7, 0.9)), SPEED, 0).outcome == \
        verdicts.REPRODUCED
    assert _judge(_effect(0.0, 0.0, time=0.8, time_ci=(0.7, 1.1)), SPEED, 0).outcome == \
        verdicts.INCONCLUSIVE
    assert _judge(_effect(0.0, 0.0, time=1.2, time_ci=(1.1, 1.3)), SPEED, 0).outcome == \
        verdicts.OPPOSITE
    assert "bootstrap CI" in _judge(_effect(0.0, 0.0, time_ci=(0.7, 0.9)), SPEED, 0).test


def test_speed_row_whose_outputs_differ_is_not_shown_however_fast():
    v = _judge(_effect(-0.02, 0.01, time=0.5), SPEED, sign=0)
    assert v.outcome == verdicts.NOT_SHOWN and "not identical" in v.test
    within = Published("p", "c", kind="speed", margin=0.05)
    assert _judge(_effect(-0.02, 0.01, time=0.5), within, 0).outcome == verdicts.REPRODUCED


def test_equivalence_needs_the_ci_inside_the_margin_and_a_lower_cost():
    assert _judge(_effect(-0.02, 0.02, tokens=0.8), EQUIV, 0).outcome == verdicts.REPRODUCED
    outside = _judge(_effect(-0.04, 0.02, tokens=0.8), EQUIV, 0)
    assert outside.outcome == verdicts.NOT_SHOWN and "not inside ±0.03" in outside.test
    dearer = _judge(_effect(-0.01, 0.01, tokens=1.2), EQUIV, 0)
    assert dearer.outcome == verdicts.NOT_SHOWN and "≥ 1" in dearer.test
    with pytest.raises(SpecError, match="margin"):
        Published("p", "c", kind="equivalence")


def test_non_inferiority_needs_the_ci_above_minus_the_margin_and_a_lower_cost():
    claim = Published("p", "equal or better accuracy, fewer tokens", kind="non_inferiority",
                      margin=0.05)
    assert _judge(_effect(-0.03, 0.09, tokens=0.8), claim, 0).outcome == verdicts.REPRODUCED
    worse = _judge(_effect(-0.07, 0.01, tokens=0.8), claim, 0)
    assert worse.outcome == verdicts.NOT_SHOWN and "not above -0.05" in worse.test
    dearer = _judge(_effect(0.01, 0.05, tokens=1.1), claim, 0)
    assert dearer.outcome == verdicts.NOT_SHOWN and "≥ 1" in dearer.test
    with pytest.raises(SpecError, match="margin"):
        Published("p", "c", kind="non_inferiority")


def test_by_construction_is_never_reproduced():
    for effect in (_effect(0.1, 0.3), _effect(-0.3, -0.1), _effect(-0.1, 0.1)):
        v = _judge(effect, PPL)
        assert v.outcome == verdicts.BY_CONSTRUCTION != verdicts.REPRODUCED
    assert verdicts.OUTCOME_TEXT[verdicts.BY_CONSTRUCTION] == "by construction (not evidence)"


def test_a_choice_made_on_test_items_withholds_the_verdict():
    v = _judge(_effect(0.1, 0.3), EFFECT, chosen_on_test="bucket was chosen on test items")
    assert v.outcome == verdicts.PENDING_RERUN and "chosen on test items" in v.test


def test_no_change_rows_must_declare_speed_or_equivalence():
    with pytest.raises(SpecError, match="speed or equivalence"):
        specs.register_method(specs.MethodSpec(name="test_no_change", family="t",
                                               tasks=("arithmetic",), expected_sign=0,
                                               published=EFFECT))


def test_the_declared_claims():
    rows = specs.methods()
    for name in ("speculative_standalone", "speculative_ngram", "self_speculative",
                 "lookahead", "speculative_contrastive"):
        claim = rows[name].published_for("arithmetic")
        assert claim.kind == "speed" and claim.margin == 0.0
    esc = rows["esc@8"].published_for("arithmetic")
    assert esc.kind == "equivalence" and esc.margin == 0.03
    for name in ("typical", "eta", "epsilon", "mirostat", "top_n_sigma", "adaptive"):
        assert rows[name].published_for("open_text").kind == "by_construction"
        assert rows[name].published_for("arithmetic").kind == "effect"
    assert rows["dola@high"].chosen_on_test and not rows["dola@high"].evidence
    assert rows["dola@validated"].evidence and not rows["dola@validated"].chosen_on_test


def test_paired_ratio_ci():
    out = stats.paired_ratio_ci([1.0, 1.2, 0.8, 1.1], [2.0, 2.1, 1.9, 2.2])
    assert out["ratio"] == pytest.approx(4.1 / 8.2) and out["ci_high"] < 1 and out["n"] == 4
    assert stats.paired_ratio_ci([], [])["ratio"] is None


# -- DoLa's bucket: chosen on validation facts ------------------------------------------


def test_closed_book_validation_facts_are_disjoint_from_the_test_items():
    test_items = md.facts_items(150, 1)
    validation = md.facts_validation_items()
    assert len(validation) == 2 * synthetic.CLOSED_BOOK_VALIDATION_FACTS
    assert {it["fact"] for it in test_items}.isdisjoint({it["fact"] for it in validation})
    assert {it["question"] for it in test_items}.isdisjoint(
        {it["question"] for it in validation})
    every_test_fact = set(synthetic.closed_book_facts("test"))
    assert {tuple(it["fact"].split("/", 1)) for it in test_items} <= every_test_fact
    with pytest.raises(ValueError, match="split"):
        synthetic.closed_book(3, split="train")


def test_choose_takes_the_best_validation_mean_ties_to_the_first():
    assert choose({"low": [0, 1, 0], "high": [1, 1, 0]}) == "high"
    assert choose({"low": [1, 0], "high": [0, 1]}) == "low"
    assert choose({"low": [3.0], "high": [2.0]}, higher_is_better=False) == "high"
    assert choose({"low": [float("nan")], "high": [0.0]}) == "high"
    with pytest.raises(ValueError):
        choose({"low": [], "high": []})


class FactsClient:
    """Answers right when the request uses the high bucket, except on one item."""

    url = "http://fake"
    has_chat_template = True

    def __init__(self):
        self.requests: list[dict] = []

    def prompt_ids(self, prompt: str, chat):
        return [ord(c) for c in prompt]

    def generate(self, prompt_ids, *, max_new_tokens, temperature, ilsi, sampling=None):
        self.requests.append(ilsi)
        prompt = "".join(chr(i) for i in prompt_ids)
        items = md.facts_validation_items() + md.facts_items(150, 1)
        item = next(it for it in items if prompt.startswith(it["question"]))
        right = "layers" in ilsi and not item["id"].endswith("-0")
        return Generation(text=item["answer"] if right else "I do not know", output_ids=[1],
                          prompt_ids=prompt_ids, meta={}, latency_s=0.0)


def test_dola_validated_chooses_on_validation_items_once_per_server():
    task, row = specs.tasks()["facts"], specs.methods()["dola@validated"]
    chooser = ValidatedChoice(md.DOLA_BUCKETS, md.facts_validation_items, concurrency=2)
    client = FactsClient()
    test_item = md.facts_items(150, 1)[3]
    prompt_ids = client.prompt_ids(task.prompt(test_item, True), None)
    gen = chooser.generate(client, task, test_item, prompt_ids, row)
    n_validation = len(md.facts_validation_items())
    assert len(client.requests) == 2 * n_validation + 1  # both buckets, then the item
    assert client.requests[-1] == md.DOLA_BUCKETS["high"]
    metrics = chooser.metrics(gen)
    assert metrics["chose_high"] == 1.0 and metrics["chose_low"] == 0.0
    assert metrics["validation_low"] == 0.0 and metrics["validation_high"] > 0.9
    chooser.generate(client, task, md.facts_items(150, 1)[4], prompt_ids, row)
    assert len(client.requests) == 2 * n_validation + 2  # the choice is kept
    # the validation items the chooser scored are none of the test items
    asked = {it["question"] for it in md.facts_validation_items()}
    assert asked.isdisjoint({it["question"] for it in md.facts_items(150, 1)})


# -- the document, re-judged from saved results -------------------------------------------


def _saved_cell(method: str, task: str, effect: dict, verdict: str) -> dict:
    return {"key": f"{task}/lab-target-early/{method}", "task": task,
            "model": "lab-target-early", "method": method, "family": "speculative",
            "items": 10, "ok": 10, "errors": 0, "error_examples": [], "metric": "accuracy",
            "metrics": {"accuracy": {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 10}},
            "effects": [{"baseline": "greedy", "metric": "accuracy", "expected_sign": 0,
                         "verdict": verdict, **effect}],
            "cost": {"forward_tokens": 10.0, "samples": 1.0, "seconds_per_item": 0.1},
            "published": {"source": "old words", "claim": "faster"}, "notes": "old note"}


def test_rendering_saved_results_applies_the_current_claims(tmp_path):
    saved = {"created": "then", "command": "sglang-ilsi bench --evidence",
             "machine": {"platform": "p", "cpus": 2, "sglang": "s", "torch": "t"},
             "bootstrap_resamples": 2000,
             "cells": [_saved_cell("self_speculative", "arithmetic",
                                   _effect(0.0, 0.0, time=2.4), "reproduced"),
                       _saved_cell("lookahead", "arithmetic",
                                   _effect(0.0, 0.0, time=0.9), "reproduced")]}
    source = tmp_path / "saved.json"
    source.write_text(json.dumps(saved))
    assert evidence.main(["--from", str(source), "--doc", str(tmp_path / "ev.md")]) == 0
    text = (tmp_path / "ev.md").read_text()
    assert "## How a verdict is reached" in text
    assert "| speed | 1 | 0 | 0 | 1 | 0 | 0 | 0 | 2 |" in text
    assert "not shown (speed test: time × 2.40 ≥ 1, a point estimate" in text
    rewritten = json.loads((tmp_path / "ev.json").read_text())
    by = {c["method"]: c for c in rewritten["cells"]}
    first = by["self_speculative"]["effects"][0]
    assert first["verdict"] == "not shown" and first["claim_kind"] == "speed"
    assert by["self_speculative"]["published"]["source"] == "old words"  # recorded words kept
    assert by["self_speculative"]["published"]["kind"] == "speed"
    assert first["ci_low"] == 0.0 and first["cost_ratio"]["seconds_per_item"] == 2.4
    assert evidence.verdict_counts(rewritten) == {"speed": {"not shown": 1, "reproduced": 1}}


def test_merge_replaces_rerun_blocks_and_records_the_command():
    saved = {"command": "first", "cells": [
        {"task": "facts", "model": "m", "method": "dola@high"},
        {"task": "arithmetic", "model": "m", "method": "greedy"}]}
    later = {"command": "sglang-ilsi bench --tasks facts", "created": "now",
             "cells": [{"task": "facts", "model": "m", "method": "dola@validated"}]}
    merged = evidence.merge(saved, later)
    assert [c["method"] for c in merged["cells"]] == ["greedy", "dola@validated"]
    assert merged["command"].startswith("first; facts (m) replaced from `sglang-ilsi bench")


def test_add_rows_keeps_saved_cells_and_adds_new_rows():
    saved = {"command": "first", "cells": [
        {"key": "arithmetic/m/sample", "value": "old"},
        {"key": "arithmetic/m/esc@8", "value": "old"}]}
    later = {"command": "sglang-ilsi bench --methods deepconf@16", "created": "now",
             "cells": [{"key": "arithmetic/m/sample", "value": "new"},
                       {"key": "arithmetic/m/deepconf@16", "value": "new"}]}
    added = evidence.add_rows(saved, later)
    assert [(c["key"], c["value"]) for c in added["cells"]] == [
        ("arithmetic/m/sample", "old"), ("arithmetic/m/esc@8", "old"),
        ("arithmetic/m/deepconf@16", "new")]
    assert added["command"] == ("first; added arithmetic/m/deepconf@16 from "
                                "`sglang-ilsi bench --methods deepconf@16` run now")
