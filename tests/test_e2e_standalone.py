"""End-to-end: SGLang's own draft-model speculative decoding on CPU.

``--speculative-algorithm STANDALONE --speculative-draft-model-path ...`` used
to be refused on the torch_native backend; ``engine/spec_draft_cpu.py`` adds
the draft model's multi-step decode attention, ``engine/spec_verify_cpu.py``
the target's tree verify, and ``engine/spec_sampling_cpu.py`` the sampled
verify step (SGLang fell back to argmax on CPU for every batch).

On the lab pair (``lab-target`` and its 0.27 M-parameter ``lab-draft``, same
tokenizer), with a draft chain (topk 1) and a draft tree (topk 2):
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
from scipy.stats import chisquare

from sglang_ilsi.models import catalog

pytestmark = pytest.mark.server

ARITHMETIC = ["Q: 23+45-12=?\nA:", "Q: 7*8+1=?\nA:", "Q: 90-41+3=?\nA:", "Q: 15+27=?\nA:"]


def _standalone(topk: int, draft_tokens: int) -> list[str]:
    return [
        "--speculative-algorithm", "STANDALONE",
        "--speculative-draft-model-path", str(catalog.prepare("lab-draft")),
        "--speculative-num-steps", "3", "--speculative-eagle-topk", str(topk),
        "--speculative-num-draft-tokens", str(draft_tokens),
    ]


@pytest.fixture(scope="module")
def hf():
    return HFReference(str(catalog.prepare("lab-target")))


@pytest.fixture(scope="module", params=[(1, 4), (2, 6)], ids=["chain", "tree"])
def lab(request):
    topk, draft_tokens = request.param
    yield from start_server(str(catalog.prepare("lab-target")), ["--ilsi"],
                            _standalone(topk, draft_tokens))


def test_greedy_equals_plain_greedy(lab, hf):
    expected = [hf.greedy(hf.encode(p), 32, None) for p in ARITHMETIC]
    accepted = []
    for prompt, ids in zip(ARITHMETIC, expected, strict=True):
        out = lab.generate(prompt, max_new_tokens=32)
        assert out["output_ids"] == ids, prompt
        accepted.append(out["meta_info"]["spec_accept_length"])
    r = lab.post("/generate", {"text": ARITHMETIC, "sampling_params": {
        "max_new_tokens": 32, "temperature": 0}})
    assert r.status_code == 200, r.text
    assert [o["output_ids"] for o in r.json()] == expected
    # the draft agrees with the target on ~94% of greedy tokens
    assert np.mean(accepted) > 2.0, accepted


def test_sampled_tokens_follow_the_target_distribution(lab, hf):
    # 400 two-token samples in one batch: the first token comes from the
    # prefill, the second from the speculative verify step.
    # After "Q:" the first token is near-certain and the second is spread out.
    temperature, samples = 1.5, 400
    prompt = "Q:"
    r = lab.post("/generate", {"text": [prompt] * samples, "sampling_params": {
        "max_new_tokens": 2, "temperature": temperature, "ignore_eos": True}}, timeout=600)
    assert r.status_code == 200, r.text
    pairs = [tuple(o["output_ids"]) for o in r.json()]
    assert any(o["meta_info"].get("spec_verify_ct", 0) > 0 for o in r.json())
    firsts = [a for a, _ in pairs]
    first = max(set(firsts), key=firsts.count)
    seconds = [b for a, b in pairs if a == first]
    assert len(seconds) >= 100, f"only {len(seconds)} samples share the first token"

    logits = hf.logits([*hf.encode(prompt), first]).astype(np.float64) / temperature
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    frequent = [t for t in np.argsort(-probs) if probs[t] * len(seconds) >= 5]
    observed = [seconds.count(int(t)) for t in frequent]
    expected = [probs[t] * len(seconds) for t in frequent]
    observed.append(len(seconds) - sum(observed))  # every other token, pooled
    expected.append(len(seconds) - sum(expected))
    if expected[-1] < 1:  # nothing left to pool
        observed, expected = observed[:-1], expected[:-1]
    assert len(observed) >= 2, "the distribution is too peaked for a test at this temperature"
    assert chisquare(observed, expected).pvalue > 1e-3, (observed, expected)


def test_logits_methods_are_refused_plain_requests_served(lab):
    r = lab.post("/generate", {"text": ARITHMETIC[0], "sampling_params": {
        "max_new_tokens": 8, "temperature": 0, "custom_params": {"ilsi": {"method": "typical"}}}})
    assert r.status_code == 400, r.text
    assert "typical" in r.text and "STANDALONE" in r.text
    assert lab.generate(ARITHMETIC[0], max_new_tokens=8)["output_ids"]
