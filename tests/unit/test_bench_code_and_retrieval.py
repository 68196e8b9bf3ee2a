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


# -- code completion (NEST and kNN-LM's rows) ------------------------------------------------


def test_code_completion_items_come_from_files_the_store_does_not_hold():
    from sglang_ilsi_lab.bench.specs import code_completion as cc

    parts = cc.split()
    names = {p.name for p in parts["held_out"]}
    assert parts["store"] and names and not set(parts["store"]) & set(parts["held_out"])
    assert not set(parts["tuning"]) & (set(parts["store"]) | set(parts["held_out"]))
    items = cc.completion_items(60, seed=1)
    assert len(items) == 60 and len({x["id"] for x in items}) == 60
    assert {x["id"].split(":")[0] for x in items} <= names
    assert {x["id"] for x in items} == {x["id"] for x in cc.completion_items(60, seed=1)}
    for x in items:
        assert len(x["prompt"].splitlines()) == cc.PREFIX_LINES and x["reference"].strip()


def test_code_completion_scores_the_first_four_lines():
    from sglang_ilsi_lab.bench.spec import Generation
    from sglang_ilsi_lab.bench.specs import code_completion as cc

    item = {"reference": "    x = 1\n    return x\n"}

    def gen(text, stats=None):
        return Generation(text=text, output_ids=[1] * 10, prompt_ids=[],
                          meta={"ilsi": {"stats": stats or {}}}, latency_s=0.0)

    assert cc._score(item, gen("    x = 1\n    return x\n")) == {"rouge1": 1.0,
                                                                 "first_line": 1.0}
    extra = cc._score(item, gen("    x = 1\n    return x\nA\nB\nC D E F G H\n"))
    assert extra["rouge1"] < 1.0 and extra["first_line"] == 1.0  # 4 lines are compared
    assert cc._score(item, gen("y = 2\n"))["rouge1"] == 0.0
    assert cc.copied_share(item, gen("", {"nest_span_tokens": 4.0})) == {"copied": 0.4}


def test_perplexity_blocks_are_held_out_tokens_after_their_own_context():
    from transformers import AutoTokenizer

    from sglang_ilsi_lab.bench.specs import code_completion as cc
    from sglang_ilsi_lab.models import catalog

    items = cc.perplexity_items(20, seed=1)
    assert len(items) == 20 and len({x["id"] for x in items}) == 20
    held_out = {p.name: p for p in cc.split()["held_out"]}
    tokenizer = AutoTokenizer.from_pretrained(str(catalog.prepare(cc.SMOLLM2)))
    for x in items[:5]:
        name, start = x["id"].rsplit("@", 1)
        ids = tokenizer(held_out[name].read_text(encoding="utf-8"),
                        add_special_tokens=False)["input_ids"]
        start = int(start)
        assert x["continuation_ids"] == ids[start:start + cc.BLOCK]
        assert x["context_ids"] == ids[max(0, start - cc.CONTEXT):start]
        assert cc.BLOCK <= len(x["context_ids"]) <= cc.CONTEXT


def test_perplexity_is_scored_from_the_forced_report():
    from sglang_ilsi_lab.bench.spec import Generation
    from sglang_ilsi_lab.bench.specs import code_completion as cc

    item = {"continuation_ids": [1, 2, 3, 4]}

    def gen(forced):
        return Generation(text="", output_ids=[1, 2, 3, 4], prompt_ids=[],
                          meta={"ilsi": {"forced": forced}}, latency_s=0.0)

    scored = cc._scored(item, gen({"tokens": 4, "logprob": -2.0, "model_logprob": -6.0,
                                   "impossible_tokens": 0.0}))
    assert scored == {"nll": 0.5, "model_nll": 1.5}
    for broken in ({"tokens": 3, "logprob": -2.0, "model_logprob": -6.0},  # cut short
                   {"tokens": 4, "logprob": -2.0, "model_logprob": -6.0,
                    "impossible_tokens": 1.0}):
        assert all(v != v for v in cc._scored(item, gen(broken)).values())  # NaN


def test_sampling_and_filtering_answers_with_the_first_program_passing_the_visible_test():
    """PG-TD's sampling + filtering baseline: the visible test, run in the sandbox,
    picks the answer; every sample's tokens count in the cost."""
    from types import SimpleNamespace

    from sglang_ilsi_lab.bench.spec import Generation

    item = items_of(40, seed=1)[0]
    expected = item["visible"][0][1]
    texts = ["x", "print('no')", f"```python\nprint({expected!r})\n```", "print(1)"]

    class Samples:  # the bench client's generate_n, answering with these programs
        def generate_n(self, prompt_ids, n, **kwargs):
            return [Generation(text=t, output_ids=[1] * (i + 1), prompt_ids=prompt_ids,
                               meta={"completion_tokens": i + 1}, latency_s=0.0)
                    for i, t in enumerate((texts * n)[:n])]

    task = SimpleNamespace(max_new_tokens=8, sampling={})
    row = SimpleNamespace(temperature=0.7, sampling={})
    gen = stdin_programs.sample_and_filter(Samples(), task, item, [0], row)
    assert gen.text == texts[2]
    report = gen.meta["ilsi"]
    assert report["chosen"] == 2 and report["passing"][0] == 2
    assert report["cost"]["samples"] == stdin_programs.FILTER_SAMPLES
    # every sample's tokens (the i-th has i + 1), less the chosen one's 3
    assert report["cost"]["extra_forward_tokens"] == sum(range(1, 9)) - 3
