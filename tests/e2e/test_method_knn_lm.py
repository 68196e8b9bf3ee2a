"""End-to-end: kNN-LM on a real server with datastores built by our CLI code.

The session's datastore server (``conftest.datastore_server``: the tiny model,
two stores from the CPython standard library's own ``json`` package, keyed by
the final hidden state and by the residual stream after layer 1, and RTD's
reference store) against a transformers + faiss reference
(``tests/reference/knn_reference.py``): traced distributions, greedy tokens,
a wrong store name (400), batch isolation with other methods; then launches
that a corrupt or mismatched store stops with a message.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import datastore_flags, start_server
from knn_reference import KnnReference

pytestmark = pytest.mark.server

PROMPTS = ["def encode(self, o):\n", "class JSONDecodeError(ValueError):", "import re\n"]
KNN = {"method": "knn_lm", "datastore": "stdlib", "k": 16, "knn_temperature": 10.0,
       "lambda": 0.6}
RTD = {"method": "rtd", "datastore": "ref", "k": 4, "temperature": 2.0, "lambda": 0.8}


@pytest.fixture(scope="module")
def stores(datastores):
    return datastores


@pytest.fixture(scope="module")
def client(datastore_server):
    return datastore_server


@pytest.fixture(scope="module")
def refs(hf, stores):
    return {name: KnnReference(hf, path) for name, path in stores.items() if name != "ref"}


def _args(ilsi):
    return ilsi["k"], ilsi["knn_temperature"], ilsi["lambda"]


def test_traced_distribution_equals_the_reference(client, hf, refs):
    out = client.generate(PROMPTS[0], max_new_tokens=8, ilsi={**KNN, "trace": 5})
    report = out["meta_info"]["ilsi"]
    assert report["method"] == "knn_lm" and report["cost"]["datastore_searches"] == 8
    trace = out["meta_info"]["ilsi_trace"]
    prompt = hf.encode(PROMPTS[0])
    assert len(trace) == len(out["output_ids"]) == 8
    for step, entry in enumerate(trace):
        before, after = refs["stdlib"].logprobs(prompt + out["output_ids"][:step], *_args(KNN))
        for got, want in ((entry["before"], before), (entry["after"], after)):
            ids = [t for t, _ in got]
            assert ids == [int(i) for i in np.argsort(-want)[:5]], step
            assert np.allclose([v for _, v in got], want[ids], atol=2e-3), step


@pytest.mark.parametrize("store", ["stdlib", "mid"])
def test_greedy_tokens_equal_the_reference(client, hf, refs, store):
    ilsi = {**KNN, "datastore": store}
    moved = False
    for prompt in PROMPTS:
        ids = hf.encode(prompt)
        out = client.generate(prompt, max_new_tokens=12, ilsi=ilsi)
        assert out["output_ids"] == refs[store].greedy(ids, 12, *_args(ilsi)), prompt
        moved |= out["output_ids"] != hf.greedy(ids, 12, None)
    assert moved  # the store changes what the model says


def test_wrong_or_missing_store_name_is_a_400(client):
    for ilsi, needle in (({**KNN, "datastore": "nope"}, "no datastore named 'nope'"),
                         ({"method": "knn_lm"}, "name the datastore")):
        r = client.post("/generate", {"text": "x", "sampling_params": {
            "max_new_tokens": 2, "custom_params": {"ilsi": ilsi}}})
        assert r.status_code == 400, r.text
        assert "datastore" in r.text and needle in r.text


def test_batch_isolation_with_other_methods(client, hf, refs):
    """kNN-LM rows among concurrent rows of other methods (and other stores):
    each greedy request's tokens are the same as alone."""
    jobs = [(p, {**KNN, "datastore": s}) for p in PROMPTS for s in ("stdlib", "mid")]
    jobs += [(p, {**RTD, "heads": h}) for p in PROMPTS for h in (1, 2)]
    jobs += [(p, {"method": "typical", "mass": 0.9}) for p in PROMPTS]
    jobs += [(p, {"method": "dola", "layers": [0]}) for p in PROMPTS]
    jobs += [(p, None) for p in PROMPTS]
    alone = [client.generate(p, max_new_tokens=10, ilsi=i)["output_ids"] for p, i in jobs]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        together = list(pool.map(
            lambda job: client.generate(job[0], max_new_tokens=10, ilsi=job[1]), jobs))
    for (prompt, ilsi), want, got in zip(jobs, alone, together):
        assert got["output_ids"] == want, (prompt, ilsi)
    assert alone[0] == refs["stdlib"].greedy(hf.encode(PROMPTS[0]), 10, *_args(KNN))


def test_tp2_greedy_equals_one_rank(client, tiny_model_path, stores):
    """Under --tp-size 2 every rank captures the (replicated) hidden states and
    searches its copy of the store: the tokens equal the one-rank server's."""
    flags = datastore_flags(stores)
    jobs = [(p, {**KNN, "datastore": s}) for p in PROMPTS[:2] for s in ("stdlib", "mid")]
    jobs += [(PROMPTS[0], {**RTD, "heads": 2})]
    for tp2 in start_server(tiny_model_path, flags, ["--tp-size", "2"]):
        for prompt, ilsi in jobs:
            got = tp2.generate(prompt, max_new_tokens=10, ilsi=ilsi)
            assert got["meta_info"]["ilsi"]["cost"]["datastore_searches"] == 10
            assert (got["output_ids"]
                    == client.generate(prompt, max_new_tokens=10, ilsi=ilsi)["output_ids"])


# -- launch-time refusals ---------------------------------------------------------------


def _launch(tiny_model_path: str, store: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sglang.launch_server", "--ilsi-datastore", f"s={store}",
         "--model-path", tiny_model_path, "--device", "cpu", "--port", "1"],
        capture_output=True, text=True, timeout=180)


def test_corrupt_or_mismatched_store_stops_the_launch(tiny_model_path, stores, tmp_path):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(stores["stdlib"], corrupt)
    with open(corrupt / "index.faiss", "r+b") as f:
        f.seek(100)
        f.write(b"\xff" * 16)
    other = tmp_path / "other"
    shutil.copytree(stores["stdlib"], other)
    meta = json.loads((other / "meta.json").read_text())
    meta["model"]["fingerprint"] = "0" * 32  # as if built for another model
    (other / "meta.json").write_text(json.dumps(meta))
    for store, needle in ((corrupt, "index.faiss is corrupt"),
                          (other, "was built for another model")):
        done = _launch(tiny_model_path, str(store))
        assert done.returncode != 0
        assert "sglang-ilsi:" in done.stderr and needle in done.stderr, done.stderr[-2000:]
