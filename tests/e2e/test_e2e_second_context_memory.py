"""End-to-end: second contexts under KV-cache pressure.

A small KV budget and many concurrent CAD requests with long prompts: the
second contexts take slots from SGLang's own allocator (inside the server's
budget), so some requests may not get theirs. Such a request is aborted with a
message naming the cause — never decoded without its method — and once all
requests are done every slot is back (SGLang's idle memory check would stop the
server on a leak) and the server keeps serving.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import start_server

pytestmark = pytest.mark.server

CONTEXT = " ".join(f"fact{i} holds." for i in range(40))


@pytest.fixture(scope="module")
def client(tiny_model_path):
    yield from start_server(tiny_model_path, ["--ilsi"],
                            ["--max-total-tokens", "640", "--max-running-requests", "8"])


def _cad(client, i: int) -> requests.Response:
    return client.post("/generate", {
        "text": f"{CONTEXT} Question {i}: which fact holds?",
        "sampling_params": {"max_new_tokens": 48, "temperature": 0, "ignore_eos": True,
                            "custom_params": {"ilsi": {"method": "cad", "alpha": 0.5,
                                                       "remove": [CONTEXT]}}}})


def test_second_contexts_under_memory_pressure(client):
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: _cad(client, i), range(16)))
    served, aborted = 0, 0
    for r in responses:
        body = r.json()
        if r.status_code == 200 and body["meta_info"]["finish_reason"]["type"] != "abort":
            report = body["meta_info"]["ilsi"]
            assert "steps_without_method" not in report["cost"], report
            assert len(body["output_ids"]) == 48
            served += 1
        else:
            assert "out of KV cache for the second context" in r.text, r.text
            aborted += 1
    assert served >= 1
    # everything was given back: the server still serves, plain and with the method
    assert client.generate("def f(x):", max_new_tokens=8)["output_ids"]
    again = _cad(client, 99)
    assert again.status_code == 200, again.text
    assert requests.get(client.base_url + "/health", timeout=10).status_code == 200
