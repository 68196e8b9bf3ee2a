"""End-to-end: skeleton-of-thought as an SGLang frontend program on SmolLM2.

The outline comes from one request; all its points are expanded by a single
batched ``/generate`` call (counted at the client) that the server prefills as
one batch (read from the server log); the answer holds every point and its
expansion.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sglang as sgl
from conftest import start_server

from sglang_ilsi import lang
from sglang_ilsi.methods.prompting import skeleton_of_thought as skeleton
from sglang_ilsi_lab.models import catalog

pytestmark = pytest.mark.server

QUESTION = "What are the benefits of regular exercise?"


@pytest.fixture(scope="module")
def client():
    yield from start_server(str(catalog.prepare("smollm2-135m-instruct")), ["--ilsi"])


@sgl.function
def answer(s, question):
    s += sgl.user(question)
    s += sgl.assistant_begin()
    lang.skeleton_of_thought(s, "answer", question, max_points=4, point_tokens=40)
    s += sgl.assistant_end()


def test_points_expanded_in_one_batched_call(client, monkeypatch):
    calls: list[int] = []
    real_post = skeleton.requests.post

    def counting_post(url, json=None, **kw):
        calls.append(len(json["text"]))
        return real_post(url, json=json, **kw)

    monkeypatch.setattr(skeleton.requests, "post", counting_post)
    log = Path(client.server.log_path)
    log_start = log.stat().st_size
    backend = sgl.RuntimeEndpoint(client.base_url, chat_template_name="chatml")
    state = answer.run(question=QUESTION, backend=backend)
    report = state["answer_ilsi"]
    points, expansions = report["points"], report["expansions"]

    assert not report["fallback"] and 2 <= len(points) <= 4
    # one skeleton request, then ONE request carrying every point prompt
    assert calls == [1, len(points)]
    assert report["cost"]["expansion"]["batch_size"] == len(points)
    assert report["cost"]["expansion"]["completion_tokens"] > 0
    assert report["cost"]["seconds"] > 0
    # the server admitted the point prompts together (not one by one)
    new_seqs = [int(n) for n in re.findall(r"Prefill batch, #new-seq: (\d+)",
                                           log.read_text(errors="replace")[log_start:])]
    assert sum(new_seqs[1:]) == len(points) and max(new_seqs[1:]) >= 2, new_seqs
    text = state["answer"]
    assert text == report["answer"] and text in state.text()
    for i, (point, expansion) in enumerate(zip(points, expansions, strict=True), 1):
        assert expansion.strip()
        assert f"{i}. {point}: {expansion}" in text
