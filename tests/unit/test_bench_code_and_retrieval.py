"""The bench's stdin-program task (PG-TD's row) and RTD's reference examples."""

from __future__ import annotations

from sglang_ilsi_lab.bench.specs import retrieval, stdin_programs
from sglang_ilsi_lab.data import synthetic
from sglang_ilsi_lab.data.stdin_programs import KINDS, TEST_KINDS
from sglang_ilsi_lab.data.stdin_programs import stdin_programs as items_of


def test_stdin_program_items_have_visible_and_distinct_hidden_tests():
    items = items_of(40, seed=1)
    assert len({x["id"] for x in items}) == 40
    assert sorted(x["id"] for x in items) == sorted(x["id"] for x in items_of(40, seed=2))
    validation = items_of(40, seed=1, split="validation")
    assert not {x["prompt"] for x in items} & {x["prompt"] for x in validation}
    assert not {k for k, _ in KINDS} & {k for k, _ in TEST_KINDS}
    for x in items + validation:
        assert "n = int(input())" in x["prompt"]
        assert [i for i, _ in x["visible"]] == ["3\n"]
        assert [i for i, _ in x["hidden"]] == ["5\n", "8\n"]
        # printing the visible answer whatever n is fails a hidden test
        assert any(o != x["visible"][0][1] for _, o in x["hidden"])
    assert dict(KINDS)["n factorial"](5) == "120"
    assert dict(KINDS)["the n-th Fibonacci number, counting 1, 1, 2, 3, 5 from the first"](5) \
        == "5"


def test_programs_are_scored_on_the_hidden_tests_in_the_sandbox():
    item = next(x for x in items_of(40, split="validation")
                if "prints the numbers from 1 to n," in x["prompt"])
    right = "```python\nn = int(input())\nfor i in range(1, n + 1):\n    print(i)\n```\n"
    only_visible = "```python\nprint('1\\n2\\n3')\n```"
    assert stdin_programs.passes(
        "n = int(input())\nfor i in range(1, n + 1):\n    print(i)\n", item["hidden"])
    for text, want in ((right, (1.0, 1.0)), (only_visible, (0.0, 1.0))):
        gen = type("G", (), {"text": text})()
        scored = stdin_programs._score(item, gen)
        assert (scored["pass"], scored["visible"]) == want


def test_rtd_reference_examples_are_disjoint_from_the_evaluated_items():
    evaluated = {x["sentence"] for x in synthetic.json_extraction(retrieval.KEEP_OUT,
                                                                  retrieval.EVALUATION_SEED)}
    examples = retrieval.example_items()
    assert len(examples) == retrieval.EXAMPLES
    assert not evaluated & {x["sentence"] for x in examples}
