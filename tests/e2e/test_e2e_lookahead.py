"""End-to-end: ``--speculative-algorithm LOOKAHEAD``, our registered lookahead decoding.

On the lab target, with the default window (4 columns, 3-grams: 8 nodes) and
an 8-token pool tree (16 verified tokens per step), and on the tiny model with a 3x3 window:
- greedy output equals the transformers reference that plain serving matches
  token for token, one request at a time and as one batch, and several tokens
  are accepted per verify forward;
- sampled output follows the target distribution (chi-square on the token
  drawn by the verify step);
- logits-stage methods are refused with a 400 naming the algorithm.
"""

from __future__ import annotations

import numpy as np
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

ARITHMETIC = ["Q: 23+45-12=?\nA:", "Q: 7*8+1=?\nA:", "Q: 90-41+3=?\nA:", "Q: 15+27=?\nA:"]
CODE = ["def hello(world):", "import os\nclass Foo:", "the cat sat on the mat. the cat"]
LOOKAHEAD = ["--speculative-algorithm", "LOOKAHEAD"]


@pytest.fixture(scope="module")
def lab():
    path = str(catalog.prepare("lab-target"))
    env = {"SGLANG_ILSI_LOOKAHEAD_REPORT_EVERY": "8"}  # the draft-source log line
    for client in start_server(path, ["--ilsi"], LOOKAHEAD, extra_env=env):
        yield client, HFReference(path)


@pytest.fixture(scope="module")
def tiny(tiny_model_path):
    flags = [*LOOKAHEAD, "--speculative-num-draft-tokens", "9"]
    for client in start_server(tiny_model_path, ["--ilsi", "--ilsi-lookahead", "3,3"], flags):
        yield client, HFReference(tiny_model_path)


def test_lab_greedy_equals_plain_greedy(lab):
    client, hf = lab
    accepted = check_greedy_identity(client, hf, ARITHMETIC, 32)
    assert np.mean(accepted) > 1.5, accepted


def test_tiny_greedy_equals_plain_greedy(tiny):
    client, hf = tiny
    check_greedy_identity(client, hf, CODE, 48)
    # the random model loops; once seen, the pool proposes the loop again
    again = client.generate(CODE[0], max_new_tokens=48)
    assert again["meta_info"]["spec_accept_length"] > 1.5, again["meta_info"]


def test_sampled_tokens_follow_the_target_distribution(lab):
    client, hf = lab
    check_sampled_second_token(client, hf)


def test_logits_methods_are_refused_plain_requests_served(lab):
    client, _ = lab
    check_logits_methods_refused(client, "LOOKAHEAD", ARITHMETIC)


def test_the_window_supplies_accepted_drafts_on_new_text(lab):
    """Jacobi guesses are verified and accepted, not only n-grams the text already
    holds: the worker's log counts accepted drafts by the branch that supplied them."""
    import re
    import time

    client, _ = lab
    prompts = [f"Q: {a}+{b}-{c}=?\nA:" for a, b, c in [
        (31, 52, 14), (66, 17, 40), (48, 29, 3), (12, 85, 61), (73, 44, 28), (95, 13, 57),
        (27, 38, 19), (54, 61, 33), (19, 77, 42), (88, 16, 71)]]
    r = client.post("/generate", {"text": prompts, "sampling_params": {
        "max_new_tokens": 64, "temperature": 0, "ignore_eos": True}}, timeout=600)
    assert r.status_code == 200, r.text
    time.sleep(1)
    with open(client.server.log_path, encoding="utf-8", errors="replace") as log:
        reports = re.findall(r"accepted drafts: (\d+) via the lookahead window, (\d+) via the "
                             r"n-gram pool", log.read())
    assert reports, "no lookahead report in the server log"
    window, pool = map(int, reports[-1])
    assert window > 0 and pool > 0, reports[-1]
