"""End-to-end: SGLang's own draft-model speculative decoding on CPU.

``--speculative-algorithm STANDALONE --speculative-draft-model-path ...`` used
to be refused on the torch_native backend; ``engine/cpu/draft_attention.py`` adds
the draft model's multi-step decode attention, ``engine/cpu/verify_attention.py``
the target's tree verify, and ``engine/cpu/verify_sampling.py`` the sampled
verify step (SGLang fell back to argmax on CPU for every batch).

On the lab pair (``lab-target`` and its 0.27 M-parameter ``lab-draft``, same
tokenizer), with a draft chain (topk 1) and a draft tree (topk 2), and with
our registered ``SELF_SPECULATIVE`` algorithm (the draft is the target with a
layer skipped, derived at launch):
- greedy output equals the transformers reference that plain serving matches
  token for token, one request at a time and as one batch, and drafts are
  really accepted;
- sampled output follows the target distribution: the second token, drawn by
  the verify step, passes a chi-square test against transformers'
  ``softmax(logits / T)`` given the first;
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


def _standalone(topk: int, draft_tokens: int) -> list[str]:
    return [
        "--speculative-algorithm", "STANDALONE",
        "--speculative-draft-model-path", str(catalog.prepare("lab-draft")),
        "--speculative-num-steps", "3", "--speculative-eagle-topk", str(topk),
        "--speculative-num-draft-tokens", str(draft_tokens),
    ]


# name -> (our flags, SGLang flags, least mean accepted length on ARITHMETIC)
CONFIGS = {
    "chain": ([], _standalone(1, 4), 2.0),
    "tree": ([], _standalone(2, 6), 2.0),
    # the draft is lab-target without its layer 1 (of 4), derived at launch
    "self": (["--ilsi-self-spec-skip", "1"], ["--speculative-algorithm", "SELF_SPECULATIVE"], 1.5),
}


@pytest.fixture(scope="module")
def hf():
    return HFReference(str(catalog.prepare("lab-target")))


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def lab(request):
    ours, sglang, least_accept = CONFIGS[request.param]
    for client in start_server(str(catalog.prepare("lab-target")), ["--ilsi", *ours], sglang):
        client.least_accept = least_accept
        client.algorithm = sglang[1]
        yield client


def test_greedy_equals_plain_greedy(lab, hf):
    accepted = check_greedy_identity(lab, hf, ARITHMETIC, 32)
    # lab-draft agrees with the target on ~94% of greedy tokens
    assert np.mean(accepted) > lab.least_accept, accepted


def test_sampled_tokens_follow_the_target_distribution(lab, hf):
    check_sampled_second_token(lab, hf)


def test_logits_methods_are_refused_plain_requests_served(lab):
    check_logits_methods_refused(lab, lab.algorithm, ARITHMETIC)
