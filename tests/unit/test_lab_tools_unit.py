"""``lab-tools``' training transcripts (``lab/sglang_ilsi_lab/models/lab_tools.py``)
against the server's tool loop: the same text the loop builds, and the loss
only on what the model writes."""

from __future__ import annotations

import json

import pytest

from sglang_ilsi.engine.http import tool_loop
from sglang_ilsi_lab.data import synthetic
from sglang_ilsi_lab.models import lab, lab_tools


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(lab.folder("lab-target"))


def test_transcript_is_the_tool_loops_text():
    item = synthetic.arithmetic_item([23, 45, 12], ["+", "-"])
    text = "".join(t for t, _ in lab_tools.segments(item))
    call = json.dumps({"name": "calculator", "arguments": {"expression": "23+45-12"}})
    record = {"result": "56", "error": None}
    # what the loop's prompt is after the first free-text segment (" ") and the call
    loop = item["prompt"] + " " + f"{tool_loop.OPEN}\n" + tool_loop.response_block(call, record)
    assert text == loop + "#### 56"


def test_only_model_written_pieces_are_supervised(tokenizer):
    items = [synthetic.arithmetic_item([7, 8, 1], ["+", "-"]),
             synthetic.json_extraction(1, seed=3)[0]]
    (ids, labels), (json_ids, json_labels) = lab_tools.encode(tokenizer, items)
    written = tokenizer.decode([t for t, y in zip(ids, labels, strict=True) if y != -100])
    assert written == (' <tool_call>{"name": "calculator", "arguments": {"expression": "7+8-1"}}'
                       "#### 14<|endoftext|>")
    assert tokenizer.decode(ids[:-1]) == "".join(t for t, _ in lab_tools.segments(items[0]))
    json_written = tokenizer.decode([t for t, y in zip(json_ids, json_labels) if y != -100])
    assert json_written == items[1]["answer"] + "<|endoftext|>"


def test_training_items_leave_out_every_evaluation_prompt():
    items = lab_tools.training_items(800, seed=0)
    held = {it["prompt"] for it in synthetic.arithmetic(200, seed=1)
            + synthetic.arithmetic(100, seed=1, difficulty=4)
            + synthetic.json_extraction(100, seed=1)}
    assert items and not held & {it["prompt"] for it in items}
    ops = {it["num_ops"] for it in items if it["task"] == "arithmetic"}
    assert ops == {1, 2, 3, 4}
    with pytest.raises(ValueError, match="not an arithmetic lab prompt"):
        lab_tools.expression("Extract JSON: Bob.\nJSON:")


def test_committed_model_calls_the_calculator_on_its_own():
    """The committed folder, in the loop without a server (the e2e test runs the server's)."""
    model, tok = lab.load("lab-tools")
    for item in synthetic.arithmetic(2, seed=1) + synthetic.arithmetic(1, seed=1, difficulty=4):
        text, calls = lab_tools.run_loop(model, tok, item["prompt"])
        assert [json.loads(c["call"])["arguments"]["expression"] for c in calls] == [
            lab_tools.expression(item["prompt"])]
        assert calls[0]["result"] == str(item["result"])
        assert synthetic.check("arithmetic", text, item), text
    item = synthetic.json_extraction(1, seed=1)[0]
    text, calls = lab_tools.run_loop(model, tok, item["prompt"])
    assert calls == [] and synthetic.check("json", text, item)
    assert tok.apply_chat_template([{"role": "system", "content": "tools..."},
                                    {"role": "user", "content": "2+3=?"}],
                                   tokenize=False) == "Q: 2+3=?\nA:"
