"""End-to-end: SGLang's own NGRAM speculative decoding on CPU.

``--speculative-algorithm NGRAM`` used to crash the scheduler on the
torch_native backend (no target-verify mode); ``engine/cpu/verify_attention.py``
adds it. Greedy output must equal plain (non-speculative) greedy decoding,
checked against the transformers reference that plain serving already matches
token for token, on the lab target and on the tiny model, one request at a
time and as one batch; drafts must really be accepted on repetitive text; and
sampled tokens must follow the target distribution (SGLang's CPU verify
step used to take the argmax of every batch); logits-stage methods must be refused with a 400 while plain requests are served.
"""

from __future__ import annotations

import pytest
from conftest import start_server
from reference_decoding import HFReference
from speculative_checks import (
    check_greedy_identity,
    check_logits_methods_refused,
    check_sampled_second_token,
)

from sglang_ilsi_lab.models import catalog

pytestmark = pytest.mark.server

NGRAM = ["--speculative-algorithm", "NGRAM", "--speculative-num-draft-tokens", "4"]
ARITHMETIC = ["Q: 23+45-12=?\nA:", "Q: 7*8+1=?\nA:", "Q: 90-41+3=?\nA:"]
CODE = ["def hello(world):", "import os\nclass Foo:", "the cat sat on the mat. the cat"]


@pytest.fixture(scope="module")
def lab():
    path = str(catalog.prepare("lab-target"))
    for client in start_server(path, ["--ilsi"], NGRAM):
        yield client, HFReference(path)


@pytest.fixture(scope="module")
def tiny(tiny_model_path):
    for client in start_server(tiny_model_path, ["--ilsi"], NGRAM):
        yield client, HFReference(tiny_model_path)


def test_lab_target_greedy_equals_plain_greedy(lab):
    client, hf = lab
    check_greedy_identity(client, hf, ARITHMETIC, 32)


def test_tiny_model_greedy_equals_plain_greedy(tiny):
    client, hf = tiny
    check_greedy_identity(client, hf, CODE, 48)


def test_drafts_are_accepted_on_repetitive_text(tiny):
    # The random-weight tiny model falls into loops; once a continuation has
    # been seen, the n-gram corpus proposes it and the target accepts it.
    client, hf = tiny
    prompt = "def hello(world):"
    first = client.generate(prompt, max_new_tokens=64)
    again = client.generate(prompt, max_new_tokens=64)
    assert again["output_ids"] == first["output_ids"] == hf.greedy(hf.encode(prompt), 64, None)
    meta = again["meta_info"]
    assert meta["spec_accept_length"] > 1.5, meta
    assert meta["spec_num_correct_drafts"] > 0
    # fewer verify forwards than tokens: several tokens per target forward
    assert meta["spec_verify_ct"] < meta["completion_tokens"]


def test_sampled_tokens_follow_the_target_distribution(lab):
    # SGLang verified every CPU batch by argmax, temperature or not.
    client, hf = lab
    check_sampled_second_token(client, hf)


def test_logits_methods_are_refused_plain_requests_served(lab):
    client, _ = lab
    check_logits_methods_refused(client, "NGRAM", ARITHMETIC)
