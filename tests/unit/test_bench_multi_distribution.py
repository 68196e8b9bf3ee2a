"""The multi-distribution bench rows without a server: facts items and scoring,
CAD's per-item second context, the amateur launch flag, and the plan."""

from __future__ import annotations

import pytest

from sglang_ilsi_lab.bench import runner
from sglang_ilsi_lab.bench import spec as specs
from sglang_ilsi_lab.bench.spec import Generation, SpecError
from sglang_ilsi_lab.bench.specs import multi_distribution as md


def _gen(text: str) -> Generation:
    return Generation(text=text, output_ids=[], prompt_ids=[], meta={}, latency_s=0.0)


def test_facts_items_are_seeded_distinct_questions():
    a, b = md.facts_items(150, 1), md.facts_items(150, 1)
    assert a == b and len(a) == 150
    assert len({it["question"] for it in a}) == 150
    assert md.facts_items(20, 2) != md.facts_items(20, 1)
    with pytest.raises(ValueError):
        md.facts_items(1000, 1)  # fewer distinct questions exist


def test_facts_score_takes_the_first_number_for_numeric_answers():
    item = {"answer": " 4"}
    assert md._facts_score(item, _gen("A dog has four legs."))["correct"] == 1.0
    assert md._facts_score(item, _gen("It has 4 legs."))["correct"] == 1.0
    assert md._facts_score(item, _gen("A dog has eight legs, or four."))["correct"] == 0.0
    assert md._facts_score({"answer": " Paris"}, _gen("The capital is paris."))["correct"] == 1.0


def test_cad_removes_the_items_context_in_either_prompt_form():
    task = specs.tasks()["conflict"]
    item = task.items(1, 1)[0]
    for chat in (True, False):
        prompt = task.prompt(item, chat)
        part = md.context_removed(item, prompt)
        assert part.startswith(item["context"]) and part != item["context"]
        assert prompt.replace(part, "", 1) == task.prompt({**item, "context": ""}, chat)


def test_cad_runner_sends_the_context_in_remove():
    task, row = specs.tasks()["conflict"], specs.methods()["cad@1"]
    item = task.items(1, 1)[0]
    sent = {}

    class Client:
        has_chat_template = True

        def generate(self, prompt_ids, **kw):
            sent.update(kw)
            return _gen("x")

    md.cad_runner(Client(), task, item, [1, 2], row)
    assert sent["ilsi"] == {"method": "cad", "alpha": 1.0, "remove": [item["context"] + "\n"]}
    assert row.ilsi_for("conflict") == {"method": "cad", "alpha": 1.0}  # not mutated


def test_amateur_args_name_the_amateur_or_fail_clearly():
    args = md.amateur_args("lab-target-early")
    assert args[0] == "--ilsi-aux-model" and args[1].startswith("amateur=")
    assert args[1].endswith("lab_pair/draft")
    with pytest.raises(SpecError, match="no same-tokenizer amateur"):
        md.amateur_args("gemma3-270m")


def test_rows_are_in_the_evidence_grid_not_in_quick():
    keys = {c.key for c in runner.plan(methods=["dola", "cad", "contrastive_decoding"],
                                       tasks=["facts", "conflict", "arithmetic"])}
    assert {"facts/smollm2-135m-instruct/dola", "facts/smollm2-135m-instruct/greedy",
            "conflict/smollm2-135m-instruct/cad", "arithmetic/lab-target-early/dola",
            "arithmetic/lab-target-early/contrastive_decoding"} <= keys
    quick = {c.method.name for c in runner.plan(quick=True)}
    assert not quick & {"contrastive_decoding", "contrastive_decoding_beta", "cad", "cad@1",
                        "dola", "sled"}
