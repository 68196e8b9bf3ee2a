"""End-to-end: ``ilsi.forced_continuation`` (teacher forcing) on the session's datastore
server (the tiny model with stores of the stdlib's ``json`` package).

A request gives the continuation; the output is exactly its tokens, and the report
sums each token's log-probability under the method's distribution and under the
model's own. Checked against the transformers + faiss kNN-LM reference
(``tests/reference/knn_reference.py``) and against SGLang's own prefill
log-probabilities of the same text; the OpenAI endpoint, bad input, and forced rows
among concurrent free ones."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from knn_reference import KnnReference

pytestmark = pytest.mark.server

PROMPT = "def encode(self, o):\n"
CONTINUATION = "        return json.dumps(o, indent=2)\n"
KNN = {"method": "knn_lm", "datastore": "stdlib", "k": 16, "knn_temperature": 10.0,
       "lambda": 0.6}


@pytest.fixture(scope="module")
def client(datastore_server):
    return datastore_server


@pytest.fixture(scope="module")
def knn(hf, datastores):
    return KnnReference(hf, datastores["stdlib"])


@pytest.fixture(scope="module")
def forced_ids(hf):
    return hf.tokenizer(CONTINUATION, add_special_tokens=False)["input_ids"]


def _reference_sums(knn, prompt_ids, forced_ids, ilsi=KNN):
    method = model = 0.0
    for step, token in enumerate(forced_ids):
        before, after = knn.logprobs(prompt_ids + forced_ids[:step], ilsi["k"],
                                     ilsi["knn_temperature"], ilsi["lambda"])
        method += float(after[token])
        model += float(before[token])
    return method, model


def test_the_output_is_the_continuation_scored_as_the_reference_scores_it(
        client, hf, knn, forced_ids):
    # max_new_tokens is the continuation's length, whatever the request says
    out = client.generate(PROMPT, max_new_tokens=3, ilsi={**KNN, "forced_continuation":
                                                          CONTINUATION})
    assert out["output_ids"] == forced_ids
    report = out["meta_info"]["ilsi"]["forced"]
    assert report["tokens"] == len(forced_ids) and report["impossible_tokens"] == 0
    method, model = _reference_sums(knn, hf.encode(PROMPT), forced_ids)
    assert report["logprob"] == pytest.approx(method, abs=2e-3 * len(forced_ids))
    assert report["model_logprob"] == pytest.approx(model, abs=2e-3 * len(forced_ids))
    assert abs(report["logprob"] - report["model_logprob"]) > 1e-3  # the store counts
    # token ids give the same report
    again = client.generate(PROMPT, ilsi={**KNN, "forced_continuation": forced_ids})
    assert again["output_ids"] == forced_ids
    assert again["meta_info"]["ilsi"]["forced"] == pytest.approx(report, abs=1e-4)


def test_the_model_s_score_equals_sglang_s_own_prefill_logprobs(client, hf, forced_ids):
    prompt_ids = hf.encode(PROMPT)
    forced = client.generate(prompt_ids, ilsi={**KNN, "forced_continuation": forced_ids})
    r = client.post("/generate", {
        "input_ids": prompt_ids + forced_ids, "return_logprob": True,
        "logprob_start_len": len(prompt_ids) - 1,
        "sampling_params": {"max_new_tokens": 0, "temperature": 0.0}})
    assert r.status_code == 200, r.text
    rows = r.json()["meta_info"]["input_token_logprobs"]
    prefill = sum(row[0] for row in rows[-len(forced_ids):])
    assert forced["meta_info"]["ilsi"]["forced"]["model_logprob"] == pytest.approx(
        prefill, abs=2e-3 * len(forced_ids))


def test_openai_completions_carry_the_report(client, forced_ids):
    r = client.post("/v1/completions", {
        "model": client.model, "prompt": PROMPT, "temperature": 0,
        "custom_params": {"ilsi": {**KNN, "forced_continuation": CONTINUATION}}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["text"] == CONTINUATION
    assert body["ilsi"]["forced"]["tokens"] == len(forced_ids)


@pytest.mark.parametrize("ilsi, needle", [
    ({**KNN, "forced_continuation": [10 ** 7]}, "outside the model's vocabulary"),
    ({"forced_continuation": "x"}, "name one"),
    ({**KNN, "forced_continuation": []}, "1 to"),
])
def test_bad_continuations_are_400s_naming_the_parameter(client, ilsi, needle):
    r = client.post("/generate", {"text": PROMPT, "sampling_params": {
        "max_new_tokens": 2, "custom_params": {"ilsi": ilsi}}})
    assert r.status_code == 400, r.text
    assert "forced_continuation" in r.text and needle in r.text
    assert client.generate(PROMPT, max_new_tokens=2)["output_ids"]  # still serving


def test_a_grammar_in_sampling_params_is_refused(client):
    r = client.post("/generate", {"text": PROMPT, "sampling_params": {
        "max_new_tokens": 2, "regex": "[a-z]+",
        "custom_params": {"ilsi": {**KNN, "forced_continuation": "abc"}}}})
    assert r.status_code == 400, r.text
    assert "forced_continuation" in r.text and "sampling_params.regex" in r.text


def test_forced_rows_among_concurrent_free_rows(client, hf, forced_ids):
    """Forced rows batched with free kNN-LM, typical and plain rows: every row's
    tokens and report are those it gets alone."""
    prompts = [PROMPT, "class JSONDecodeError(ValueError):", "import re\n"]
    jobs = [(p, {**KNN, "forced_continuation": forced_ids}) for p in prompts]
    jobs += [(p, {"method": "typical", "mass": 0.9, "forced_continuation": CONTINUATION})
             for p in prompts]
    jobs += [(p, KNN) for p in prompts] + [(p, None) for p in prompts]
    alone = [client.generate(p, max_new_tokens=10, ilsi=i) for p, i in jobs]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        together = list(pool.map(
            lambda job: client.generate(job[0], max_new_tokens=10, ilsi=job[1]), jobs))
    for (prompt, ilsi), want, got in zip(jobs, alone, together, strict=True):
        assert got["output_ids"] == want["output_ids"], (prompt, ilsi)
        if ilsi and "forced_continuation" in ilsi:
            assert got["output_ids"] == forced_ids
            assert got["meta_info"]["ilsi"]["forced"] == pytest.approx(
                want["meta_info"]["ilsi"]["forced"], abs=1e-3)
