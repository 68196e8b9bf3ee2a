"""End-to-end: RTD (reference trustable decoding) on a real server.

The session's datastore server (``conftest.datastore_server``: the tiny model
with the ``ref`` store, built by our CLI code from task examples keyed on their
completions) against a brute-force numpy reference
(``tests/reference/rtd_reference.py``): greedy tokens for one and two heads, and
a ``heads`` the store cannot answer (400). RTD rows among concurrent requests
of other methods, and under ``--tp-size 2``: ``test_method_knn_lm.py``.
"""

from __future__ import annotations

import pytest
from rtd_reference import RtdReference

pytestmark = pytest.mark.server

PROMPTS = ["def encode(self, o):\n", "class JSONDecodeError(ValueError):", "import re\n"]
RTD = {"method": "rtd", "datastore": "ref", "k": 4, "temperature": 2.0, "lambda": 0.8}


@pytest.mark.parametrize("heads", [1, 2])
def test_greedy_tokens_equal_the_reference(datastore_server, hf, datastores, heads):
    """RTD (and multi-head RTD) on the reference store of task examples: the
    greedy tokens equal a brute-force reference's, and the examples steer them."""
    ref = RtdReference(hf, datastores["ref"])
    ilsi = {**RTD, "heads": heads}
    steered = 0
    for prompt in PROMPTS:
        ids = hf.encode(prompt)
        out = datastore_server.generate(prompt, max_new_tokens=8, ilsi=ilsi)
        assert out["output_ids"] == ref.greedy(ids, 8, RTD["k"], RTD["temperature"],
                                               RTD["lambda"], heads), prompt
        assert out["meta_info"]["ilsi"]["cost"]["datastore_searches"] == len(out["output_ids"])
        steered += out["output_ids"] != hf.greedy(ids, 8, None)
    assert steered


def test_heads_a_store_cannot_answer_are_a_400(datastore_server):
    r = datastore_server.post("/generate", {"text": "x", "sampling_params": {
        "max_new_tokens": 2, "custom_params": {"ilsi": {**RTD, "heads": 7}}}})  # 7 ∤ 64
    assert r.status_code == 400 and "heads" in r.text and "do not divide" in r.text, r.text
    assert datastore_server.generate("x", max_new_tokens=2, ilsi={**RTD, "heads": 4})[
        "output_ids"]
