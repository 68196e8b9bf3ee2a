"""End-to-end: a model that calls a tool by itself, through the server's tool loop.

``lab-tools`` (``lab/sglang_ilsi_lab/models/lab_tools.py``) was fine-tuned on the tool
loop's transcripts. Served with ``--ilsi-tools calculator`` and asked with
``tool_choice`` ``auto`` (nothing forces a call):
- for held-out arithmetic questions, including four-operation ones that its
  base model (lab-target) never answers right, it writes a calculator call with
  the question's expression; the server runs the real calculator, appends the
  result, and the model answers ``#### N`` with it;
- for a JSON-extraction prompt it makes no call and answers with the record;
- an unchanged OpenAI client sending ``tools=[calculator]`` gets the answer, the
  call listed in the response's ``ilsi`` field.
"""

from __future__ import annotations

import pytest
from conftest import start_server

from sglang_ilsi import tools
from sglang_ilsi_lab.data import synthetic
from sglang_ilsi_lab.models import catalog, lab_tools

pytestmark = pytest.mark.server

ARITHMETIC = synthetic.arithmetic(3, seed=1) + synthetic.arithmetic(3, seed=1, difficulty=4)


@pytest.fixture(scope="module")
def client():
    yield from start_server(str(catalog.prepare("lab-tools")), ["--ilsi", "--ilsi-tools",
                                                                 "calculator"])


def ask(client, prompt: str) -> dict:
    out = client.generate(prompt, max_new_tokens=160,
                          ilsi={"method": "tools", "tools": ["calculator"]})
    assert out["meta_info"]["ilsi"]["params"]["tool_choice"] == "auto"
    return out


def test_the_model_calls_the_calculator_unforced_and_uses_the_result(client):
    right = 0
    for item in ARITHMETIC:
        out = ask(client, item["prompt"])
        report = out["meta_info"]["ilsi"]
        assert len(report["calls"]) >= 1, (item["prompt"], report["transcript"])
        first = report["calls"][0]
        assert first["tool"] == "calculator" and first["error"] is None, first
        assert first["arguments"] == {"expression": lab_tools.expression(item["prompt"])}
        assert first["result"] == str(item["result"])
        assert report["stopped"] == "answer"
        right += synthetic.check("arithmetic", out["text"], item)
    # the answers copy the tool's result (the base model gets 0 of the 4-operation ones)
    assert right >= len(ARITHMETIC) - 1, right


def test_no_call_where_no_tool_is_needed(client):
    item = synthetic.json_extraction(1, seed=1)[0]
    out = ask(client, item["prompt"])
    assert out["meta_info"]["ilsi"]["calls"] == []
    assert synthetic.check("json", out["text"], item), out["text"]


def test_unchanged_openai_client(client):
    item = synthetic.arithmetic(1, seed=1, difficulty=4)[0]
    question = item["prompt"].removeprefix("Q: ").removesuffix("\nA:")
    resp = client.openai().chat.completions.create(
        model=client.model, messages=[{"role": "user", "content": question}],
        tools=[tools.TOOLS["calculator"].openai_spec()], max_tokens=160, temperature=0)
    choice = resp.choices[0]
    assert not choice.message.tool_calls
    assert synthetic.check("arithmetic", choice.message.content, item), choice.message.content
    calls = resp.model_extra["ilsi"]["calls"]
    assert [c["tool"] for c in calls] == ["calculator"]
    assert calls[0]["arguments"] == {"expression": question.removesuffix("=?")}
