"""End-to-end: SGLang's outlines grammar backend with the plugin's cached masks.

A server launched with ``--grammar-backend outlines`` fills each request's
vocabulary mask from ``engine/scheduler/outlines_masks.py`` (one cached row per FSM
state) instead of SGLang's per-step rebuild. The oracle is a transformers
greedy loop masked by SGLang's own, unpatched outlines backend (this test
process never installs the plugin's patches): the server's greedy tokens must
equal it token for token, alone and when the requests share a batch with each
other and with a sampled plain request; finished outputs must match the regex
and parse as JSON of the schema.
"""

from __future__ import annotations

import functools
import json
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import start_server
from reference_decoding import HFReference

pytestmark = pytest.mark.server

REGEX = r"[a-z]{1,6}( [a-z]{1,6}){0,2}\."
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 6},
                                           "ok": {"type": "boolean"}},
          "required": ["name", "ok"], "additionalProperties": False}
WHITESPACE = "[ ]?"  # bounded, so a random-weight model cannot pad forever
PROMPTS = ["The answer is", "def f(x):"]
TOKENS = 48


@pytest.fixture(scope="module")
def served(tiny_model_path):
    flags = ["--grammar-backend", "outlines", "--constrained-json-whitespace-pattern", WHITESPACE]
    for client in start_server(tiny_model_path, ["--ilsi"], flags):
        yield client, HFReference(tiny_model_path)


@functools.cache
def _backend(hf: HFReference):
    from sglang.srt.constrained.outlines_backend import OutlinesGrammarBackend

    return OutlinesGrammarBackend(hf.tokenizer, whitespace_pattern=WHITESPACE)


def _grammar(hf: HFReference, kind: str):
    backend = _backend(hf)
    return backend.dispatch_regex(REGEX) if kind == "regex" else backend.dispatch_json(
        json.dumps(SCHEMA))


def _reference(hf: HFReference, prompt: str, kind: str) -> list[int]:
    """Greedy decoding under SGLang's own outlines masks, as a scheduler applies them."""
    import torch

    grammar = _grammar(hf, kind)

    def masked(row: np.ndarray, prompt_ids, out: list[int]) -> np.ndarray:
        if out:
            grammar.accept_token(out[-1])
        mask = torch.zeros(1, len(row), dtype=torch.bool)
        grammar.fill_vocab_mask(mask, 0)
        return np.where(mask[0].numpy(), -np.inf, row)

    return hf.greedy(hf.encode(prompt), TOKENS, masked)


def _params(kind: str) -> dict:
    grammar = {"regex": REGEX} if kind == "regex" else {"json_schema": json.dumps(SCHEMA)}
    return {"max_new_tokens": TOKENS, "temperature": 0, **grammar}


def _check_finished(out: dict, kind: str) -> None:
    assert out["meta_info"]["finish_reason"]["type"] == "stop", out["meta_info"]
    if kind == "regex":
        assert re.fullmatch(REGEX, out["text"]), out["text"]
    else:
        value = json.loads(out["text"])
        assert set(value) == {"name", "ok"} and isinstance(value["ok"], bool), value
        assert isinstance(value["name"], str) and len(value["name"]) <= 6


@pytest.mark.parametrize("kind", ["regex", "json_schema"])
def test_greedy_equals_sglangs_outlines_masks(served, kind):
    client, hf = served
    for prompt in PROMPTS:
        r = client.post("/generate", {"text": prompt, "sampling_params": _params(kind)})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["output_ids"] == _reference(hf, prompt, kind), (prompt, out["text"])
        _check_finished(out, kind)


def test_batch_isolation_with_other_grammars_and_sampling(served):
    client, hf = served
    jobs = [(p, k) for p in PROMPTS for k in ("regex", "json_schema")]
    expected = [_reference(hf, p, k) for p, k in jobs]

    def one(job):
        if job is None:  # a sampled plain request in the same batches
            return client.post("/generate", {"text": "Once upon", "sampling_params": {
                "max_new_tokens": TOKENS, "temperature": 1.0, "ignore_eos": True}})
        prompt, kind = job
        return client.post("/generate", {"text": prompt, "sampling_params": _params(kind)})

    with ThreadPoolExecutor(len(jobs) + 1) as pool:
        responses = list(pool.map(one, [*jobs, None]))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    for (prompt, kind), ids, r in zip(jobs, expected, responses[:-1], strict=True):
        assert r.json()["output_ids"] == ids, (prompt, kind)
    assert len(responses[-1].json()["output_ids"]) == TOKENS
