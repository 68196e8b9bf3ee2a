"""End-to-end: REST (retrieval-based speculative decoding) on a real server.

The datastore is built by our CLI code from a corpus that holds, among the
CPython standard library's ``json`` sources, the text the lab target writes
after some arithmetic prompts (its greedy continuations, from transformers):
REST then finds those continuations by suffix match and the target accepts
them (measured: 7-8 tokens per forward of 8 drafted, against ~1.3 for prompts
whose continuation the store does not hold). Greedy
output equals plain greedy decoding token for token (lossless), for prompts
whose continuation the store holds and for prompts it does not; drafts from the
store are accepted at length; logits methods are refused as under NGRAM.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests
from conftest import start_server
from reference_decoding import HFReference
from speculative_checks import check_greedy_identity, check_logits_methods_refused

from sglang_ilsi import datastore
from sglang_ilsi_lab.models import catalog

pytestmark = pytest.mark.server

IN_STORE = ["Q: 23+45-12=?\nA:", "Q: 7*8+1=?\nA:", "Q: 12+34-5+67-8=?\nA:"]
NOT_IN_STORE = ["Q: 90-41+3=?\nA:", "Q: 41+18=?\nA:"]
TOKENS = 40


@pytest.fixture(scope="module")
def target() -> str:
    return str(catalog.prepare("lab-target"))


@pytest.fixture(scope="module")
def hf(target) -> HFReference:
    return HFReference(target)


@pytest.fixture(scope="module")
def store(target, hf, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("rest")
    corpus = root / "corpus"
    shutil.copytree(Path(json.__file__).parent, corpus, ignore=shutil.ignore_patterns("__pycache__"))
    with open(corpus / "continuations.txt", "w", encoding="utf-8") as f:
        for prompt in IN_STORE:
            ids = hf.encode(prompt)
            f.write(hf.tokenizer.decode(ids + hf.greedy(ids, TOKENS + 8, None)) + "\n\n")
    out = root / "store"
    datastore.build(str(corpus), target, str(out),
                    datastore.BuildOptions(window=128, stride=64), quiet=True)
    return str(out)


@pytest.fixture(scope="module")
def client(target, store):
    yield from start_server(target, ["--ilsi", "--ilsi-rest-datastore", store],
                            ["--speculative-algorithm", "REST",
                             "--speculative-num-draft-tokens", "8",
                             # all drafts but one from the store (the default gives it
                             # half, the other half to NGRAM's trie over earlier text)
                             "--speculative-ngram-external-sam-budget", "7"])


def test_greedy_equals_plain_greedy_and_store_drafts_are_accepted(client, hf):
    # each prompt once, before any other request: NGRAM's own trie over earlier
    # requests cannot be where the drafts come from
    in_store = check_greedy_identity(client, hf, IN_STORE, TOKENS)
    elsewhere = check_greedy_identity(client, hf, NOT_IN_STORE, TOKENS)
    assert min(in_store) >= 3.0, in_store  # several tokens per forward
    assert min(in_store) > max(elsewhere), (in_store, elsewhere)


def test_the_catalog_says_rest_runs_here(client):
    r = requests.get(client.base_url + "/ilsi/methods", timeout=60)
    cards = {c["name"]: c for c in r.json()}
    assert cards["rest"]["available"]
    assert not cards["speculative_ngram"]["available"]
    assert "REST" in cards["speculative_ngram"]["unavailable_because"]


def test_logits_methods_are_refused(client):
    check_logits_methods_refused(client, "REST", NOT_IN_STORE)
