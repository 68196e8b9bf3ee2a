"""The seeded synthetic tasks (``sglang_ilsi_lab.data.synthetic``)."""

from __future__ import annotations

import json
import re

import pytest

from sglang_ilsi_lab.data import synthetic as syn

KEYS = {"id", "prompt", "answer", "task"}


@pytest.mark.parametrize("task", syn.TASKS)
def test_deterministic_by_seed(task):
    a = syn.generate(task, 50, seed=5)
    assert a == syn.generate(task, 50, seed=5)
    assert a != syn.generate(task, 50, seed=6)
    assert syn.generate(task, 20, seed=5) == a[:20]  # a prefix of the same stream
    for item in a:
        assert KEYS <= set(item) and item["task"] == task
        assert isinstance(item["prompt"], str) and isinstance(item["answer"], str)
    assert len({item["id"] for item in a}) == len(a)


def test_tasks_use_separate_streams():
    # the same seed does not give the same numbers to two tasks
    nums = [re.findall(r"\d+", it["prompt"]) for it in syn.arithmetic(20, seed=3)]
    ages = [str(it["record"]["age"]) for it in syn.json_extraction(20, seed=3)]
    assert [n[0] for n in nums] != ages


def _evaluate(prompt: str) -> int:
    expr = prompt.removeprefix("Q: ").removesuffix("=?\nA:")
    assert re.fullmatch(r"\d+([+-]\d+)+", expr), expr
    return eval(expr)  # digits and +/- only, checked above


def test_arithmetic_answers_recompute():
    items = syn.arithmetic(300, seed=11)
    assert {it["num_ops"] for it in items} == {1, 2, 3}
    for it in items:
        nums = [int(n) for n in re.findall(r"\d+", it["prompt"])]
        assert len(nums) == it["num_ops"] + 1 and all(0 <= n <= 99 for n in nums)
        assert _evaluate(it["prompt"]) == it["result"]
        lines = it["answer"].strip().split("\n")
        assert lines[-1] == f"#### {it['result']}"
        assert len(lines) == it["num_ops"] + 1
        running = nums[0]
        for line in lines[:-1]:  # every worked step is right and chains on
            left, right = line.split("=")
            m = re.fullmatch(r"(-?\d+)([+-])(\d+)", left)
            assert int(m.group(1)) == running
            running = eval(left)
            assert int(right) == running
        assert running == it["result"]


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_arithmetic_difficulty(k):
    items = syn.arithmetic(40, seed=2, difficulty=k)
    assert all(it["num_ops"] == k and _evaluate(it["prompt"]) == it["result"] for it in items)
    with pytest.raises(ValueError):
        syn.arithmetic(1, difficulty=5)


def test_json_answers_match_the_sentence():
    for it in syn.json_extraction(200, seed=4):
        record = json.loads(it["answer"])
        assert list(record) == ["name", "age", "city", "job"] and record == it["record"]
        assert isinstance(record["age"], int) and 18 <= record["age"] <= 79
        sentence = it["prompt"].removeprefix("Extract JSON: ").removesuffix("\nJSON:")
        assert sentence == it["sentence"]
        for value in record.values():
            assert str(value) in sentence
        assert record["name"] in syn.NAMES and record["city"] in syn.CITIES
        assert record["job"] in syn.JOBS


def test_conflict_items():
    items = syn.conflict(300, seed=1)
    assert len({it["prompt"] for it in items}) == 300
    relations = set()
    for it in items:
        ctx, mem = it["answer"].strip(), it["memory_answer"].strip()
        assert ctx != mem
        assert it["prompt"] == f"{it['context']} {it['prompt_no_context']}"
        assert ctx in it["context"] and it["question"] in it["prompt_no_context"]
        assert it["prompt"].endswith(("A:", "Answer:"))
        for name, rel in syn.RELATIONS.items():
            for subject, truth in rel["facts"].items():
                if truth == mem and subject in it["question"]:
                    relations.add(name)
    assert relations == set(syn.RELATIONS)  # every template family is used
    assert len(syn.conflict(2000, seed=2)) == 2000


def test_text_set_is_plain_and_held_out():
    items = syn.text(200)
    assert items == syn.generate("text", 200)  # TEXT_SEED by default
    assert {it["kind"] for it in items} == {"arithmetic", "json", "fact"}
    for it in items:
        assert it["prompt"] == "" and it["answer"] == it["text"] and it["text"].strip()
    # its own seed streams: not the evaluation items re-rendered
    evaluation = [it["prompt"] + it["answer"] for it in syn.arithmetic(100) + syn.json_extraction(100)]
    passages = [it["text"] for it in items if it["kind"] != "fact"]
    assert len(set(evaluation) & set(passages)) <= 1


def test_check_accepts_gold_and_rejects_wrong():
    for task in syn.TASKS:
        for it in syn.generate(task, 30, seed=9):
            assert syn.check(task, it["answer"], it), (task, it)
            assert syn.check(task, "  " + it["answer"] + "\n", it)

    it = syn.arithmetic_item([20, 5, 7], ["+", "-"])
    assert it["result"] == 18
    assert syn.check("arithmetic", "20+5=25\n25-7=18\n#### 18", it)
    assert syn.check("arithmetic", "#### 3 ... no wait\n#### 18", it)  # the last one counts
    assert not syn.check("arithmetic", "#### 18\n#### 19", it)
    assert not syn.check("arithmetic", "20+5=25\n25-7=18", it)  # no marker
    assert not syn.check("arithmetic", "#### 17", it)
    assert not syn.check("arithmetic", "#### 18.5", it)
    neg = syn.arithmetic_item([3, 10], ["-"])
    assert syn.check("arithmetic", "#### -7", neg) and not syn.check("arithmetic", "#### 7", neg)

    js = syn.json_item("Alice", 34, "Paris", "teacher")
    assert syn.check("json", '{"job": "teacher", "city": "Paris", "age": 34, "name": "Alice"}',
                     js)  # key order is free
    assert syn.check("json", 'Sure: {"name": "Alice", "age": 34, "city": "Paris", '
                             '"job": "teacher"} done', js)
    for wrong in ['{"name": "Alice", "age": "34", "city": "Paris", "job": "teacher"}',
                  '{"name": "Alice", "age": 34.0, "city": "Paris", "job": "teacher"}',
                  '{"name": "Alice", "age": 35, "city": "Paris", "job": "teacher"}',
                  '{"name": "Alice", "age": 34, "city": "Paris"}',
                  '{"name": "Alice", "age": 34, "city": "Paris", "job": "teacher", "x": 1}',
                  '{"name": "Alice", "age": 34, "city": "Paris", "job": "teacher"',
                  "no json here", ""]:
        assert not syn.check("json", wrong, js), wrong

    cf = syn.conflict(5, seed=3)[0]
    assert syn.check("conflict", f" {cf['answer'].strip().upper()}.", cf)
    assert not syn.check("conflict", cf["memory_answer"], cf)

    tx = syn.text(1)[0]
    assert not syn.check("text", tx["text"] + " more", tx)
    with pytest.raises(ValueError):
        syn.check("nope", "", tx)
    with pytest.raises(ValueError):
        syn.generate("nope", 1)
