"""The prompting bench rows' items and scoring (lab/.../bench/specs/prompting.py)."""

from __future__ import annotations

from sglang_ilsi_lab.bench.spec import Generation
from sglang_ilsi_lab.bench.specs import prompting


def generation(text: str, report: dict | None = None) -> Generation:
    return Generation(text=text, output_ids=[], prompt_ids=[],
                      meta={"ilsi": report} if report else {}, latency_s=0.0)


def test_word_problems_are_seeded_and_solvable():
    items = prompting.word_problems(8, seed=7)
    assert items == prompting.word_problems(8, seed=7)
    for item in items:
        assert item["result"] >= 0 and "?" in item["prompt"]


def test_the_answer_is_read_after_the_trigger_for_zero_shot_cot():
    item = {"result": 7}
    cot = generation("Let's think step by step. 3 + 4 = 7, not 8. Therefore, the answer is 7.",
                     {"method": "zero_shot_cot", "answer": " 7."})
    assert prompting._word_problem_score(item, cot) == {"accuracy": 1.0, "answer_first": 1.0}
    direct = generation("Ana has 3 apples and 4 more, so 7.")
    assert prompting._word_problem_score(item, direct) == {"accuracy": 1.0, "answer_first": 0.0}


def test_instruction_forms_are_checked_exactly():
    follows = prompting.follows
    assert follows({"form": "list", "k": 3}, "1. apple\n2. pear\n3. plum\n")
    assert not follows({"form": "list", "k": 3}, "1. apple\n2. pear")
    assert follows({"form": "word"}, " Paris.") and not follows({"form": "word"}, "It is Paris")
    assert follows({"form": "capitals"}, "THE SEA IS BLUE.")
    assert not follows({"form": "capitals"}, "The sea is blue.")
    assert follows({"form": "yes_no"}, "Yes.") and not follows({"form": "yes_no"}, "Yes, it is")
    assert follows({"form": "json"}, '{"name": "Tom", "age": 45}')
    assert not follows({"form": "json"}, '{"name": "Tom"} and more')
    forms = [i["form"] for i in prompting.instructions(10, seed=11)]
    assert forms == ["list", "word", "capitals", "yes_no", "json"] * 2
