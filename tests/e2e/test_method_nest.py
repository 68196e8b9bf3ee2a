"""End-to-end: NEST (nearest-neighbour speculative decoding) on a real server.

The session's datastore server (``conftest.datastore_server``: the tiny model
with stores built by our CLI code from the CPython standard library's ``json``
package) against Algorithm 1 of the paper in transformers + faiss
(``tests/reference/nest_reference.py``): greedy tokens, the tokens copied from
the store's documents, a store that does not know its documents' ends (400),
and batch isolation with kNN-LM and plain rows.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from nest_reference import NestReference

pytestmark = pytest.mark.server

# contexts from the json package's own sources (the store holds them) and one that is not
PROMPTS = ["class JSONDecodeError(ValueError):", "def encode(self, o):\n",
           "    def __init__(self, *, skipkeys=False,", "Once upon a time"]
NEST = {"method": "nest", "datastore": "stdlib", "k": 16, "span": 8}
MAX_NEW = 16


@pytest.fixture(scope="module")
def client(datastore_server):
    return datastore_server


@pytest.fixture(scope="module")
def ref(hf, datastores):
    return NestReference(hf, datastores["stdlib"])


# the tiny model's neighbours are all about as far (min/max ≈ 0.75 at k = 16): the paper's
# α = 0.3 trusts the model (λ ≈ 0.99, no span); α = 0.9 lets the retrieval lead and copy
@pytest.mark.parametrize("params,copies", [
    ({}, None), ({"alpha": 0.9}, True),
    ({"alpha": 0.9, "gamma": 0.5, "knn_temperature": 50.0}, True),
    ({"alpha": 0.9, "span": 1}, False)])
def test_greedy_tokens_equal_algorithm_1(client, hf, ref, params, copies):
    ilsi = {**NEST, **params}
    settings = {"k": ilsi["k"], "span": ilsi["span"],
                "temperature": ilsi.get("knn_temperature", 0.0),
                "alpha": ilsi.get("alpha", 0.3), "gamma": ilsi.get("gamma", 0.05)}
    copied_in_all = 0
    for prompt in PROMPTS:
        out = client.generate(prompt, max_new_tokens=MAX_NEW, ilsi=ilsi)
        want, copied, sources = ref.greedy(hf.encode(prompt), MAX_NEW, **settings)
        assert out["output_ids"] == want, prompt
        stats = out["meta_info"]["ilsi"]["stats"]
        assert stats.get("nest_span_tokens", 0) == copied, prompt
        # attribution: each span's first position, its document (corpus.jsonl line), length
        assert stats.get("nest_sources", []) == sources, prompt
        for start, document, length in sources:
            text = ref.documents[document]
            copied_text = hf.tokenizer.decode(out["output_ids"][start:start + length])
            assert copied_text.strip() in text, (prompt, copied_text)
        copied_in_all += copied
    if copies is not None:  # spans were (or, with span = 1, were not) copied from the store
        assert (copied_in_all > 0) == copies


def test_defaults_resolve_the_temperature_to_the_key_size(client):
    out = client.generate(PROMPTS[0], max_new_tokens=4, ilsi={"method": "nest",
                                                               "datastore": "stdlib"})
    report = out["meta_info"]["ilsi"]
    assert report["params"]["knn_temperature"] == 64.0  # the tiny model's hidden size
    assert report["cost"]["datastore_searches"] == 4


def test_a_store_without_document_ends_is_a_400(client):
    r = client.post("/generate", {"text": "x", "sampling_params": {
        "max_new_tokens": 2, "custom_params": {"ilsi": {**NEST, "datastore": "nodocs"}}}})
    assert r.status_code == 400, r.text
    assert "datastore" in r.text and "documents.npy" in r.text
    # kNN-LM needs no document ends: the same store serves it
    assert client.generate("x", max_new_tokens=2, ilsi={"method": "knn_lm",
                                                        "datastore": "nodocs"})["output_ids"]


def test_batch_isolation_with_knn_lm_and_plain_rows(client):
    jobs = [(p, NEST) for p in PROMPTS] + [(p, {**NEST, "gamma": 0.5}) for p in PROMPTS[:2]]
    jobs += [(p, {"method": "knn_lm", "datastore": "stdlib", "k": 16}) for p in PROMPTS[:2]]
    jobs += [(p, None) for p in PROMPTS[:2]]
    alone = [client.generate(p, max_new_tokens=10, ilsi=i)["output_ids"] for p, i in jobs]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        together = list(pool.map(
            lambda job: client.generate(job[0], max_new_tokens=10, ilsi=job[1]), jobs))
    for (prompt, ilsi), want, got in zip(jobs, alone, together, strict=True):
        assert got["output_ids"] == want, (prompt, ilsi)
