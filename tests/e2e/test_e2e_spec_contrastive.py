"""End-to-end: speculative contrastive decoding (``--speculative-algorithm
SPECULATIVE_CONTRASTIVE``, Yuan et al. 2024) in a real SGLang server.

The lab pair: ``lab-target`` is the expert, its draft ``lab-draft`` is both
the speculative draft and the contrastive amateur. The exactness oracle is
plain transformers contrastive decoding (CD_β of O'Brien & Lewis, α = 0.1,
β = 1, one token at a time, the amateur run on the full sequence):
- greedy output equals the oracle's token for token, one request at a time,
  as one batch, and beside sampled requests, with drafts really accepted; on
  at least one prompt the oracle differs from plain greedy decoding, so the
  contrast is visible in the tokens;
- sampled output follows ``softmax(s_cd / T)``: the second token, drawn by the
  verify step, passes a chi-square test against the oracle's distribution;
- ``meta_info.ilsi`` and the OpenAI ``ilsi`` field name the method, α, β
  and what the amateur ran;
- logits-stage methods are refused with a 400 naming the algorithm.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import multi_references as ref
import numpy as np
import pytest
from conftest import start_server
from multi_reference_decoding import MultiHF
from speculative_checks import check_logits_methods_refused, check_sampled_second_token

from sglang_ilsi.engine.speculative.contrastive import ALGORITHM
from sglang_ilsi_lab.models import catalog

pytestmark = pytest.mark.server

ALPHA, BETA = 0.1, 1.0
# arithmetic (where the lab target is confident) and an open start ("Q:"),
# where the contrast changes the greedy tokens
PROMPTS = ["Q: 23+45-12=?\nA:", "Q: 7*8+1=?\nA:", "Q: 90-41+3=?\nA:", "Q:"]
TOKENS = 24


class ContrastiveOracle:
    """Plain transformers CD_β over the lab pair."""

    def __init__(self) -> None:
        self.hf = MultiHF(str(catalog.prepare("lab-target")),
                          {"amateur": str(catalog.prepare("lab-draft"))})
        self.encode = self.hf.encode

    def logits(self, ids: list[int]) -> np.ndarray:
        return ref.contrastive_decoding_beta(self.hf._last(self.hf.model, ids),
                                             self.hf._last(self.hf.aux["amateur"], ids),
                                             ALPHA, BETA)

    def greedy(self, ids: list[int], n: int, contrast: bool = True) -> list[int]:
        out: list[int] = []
        for _ in range(n):
            row = self.logits(ids + out) if contrast else self.hf._last(self.hf.model, ids + out)
            out.append(int(np.argmax(row)))
            if out[-1] in self.hf.eos_ids:
                break
        return out


@pytest.fixture(scope="module")
def oracle():
    return ContrastiveOracle()


@pytest.fixture(scope="module")
def scd():
    sglang = ["--speculative-algorithm", ALGORITHM,
              "--speculative-draft-model-path", str(catalog.prepare("lab-draft"))]
    ours = ["--ilsi", "--ilsi-scd-alpha", str(ALPHA), "--ilsi-scd-beta", str(BETA)]
    yield from start_server(str(catalog.prepare("lab-target")), ours, sglang)


def test_greedy_equals_contrastive_decoding(scd, oracle):
    expected = [oracle.greedy(oracle.encode(p), TOKENS) for p in PROMPTS]
    plain = [oracle.greedy(oracle.encode(p), TOKENS, contrast=False) for p in PROMPTS]
    assert any(e != p for e, p in zip(expected, plain, strict=True)), "no visible contrast"
    accepted = []
    for prompt, ids in zip(PROMPTS, expected, strict=True):
        out = scd.generate(prompt, max_new_tokens=TOKENS)
        assert out["output_ids"] == ids, prompt
        accepted.append(out["meta_info"]["spec_accept_length"])
    assert np.mean(accepted) > 1.5, accepted  # the amateur's drafts are accepted
    r = scd.post("/generate", {"text": PROMPTS, "sampling_params": {
        "max_new_tokens": TOKENS, "temperature": 0}})
    assert r.status_code == 200, r.text
    assert [o["output_ids"] for o in r.json()] == expected


def test_responses_report_the_method_and_its_cost(scd, oracle):
    prompt = PROMPTS[0]
    out = scd.generate(prompt, max_new_tokens=TOKENS)
    report = out["meta_info"]["ilsi"]
    assert report["method"] == "speculative_contrastive_decoding"
    assert report["params"] == {"alpha": ALPHA, "beta": BETA}
    assert ALGORITHM in report["why"]
    # the amateur ran at least the prompt (or its uncached part) and every verified position
    verified = out["meta_info"]["spec_verify_ct"] * 4
    assert report["cost"]["aux_model_tokens"] >= verified > 0, report
    completion = scd.post("/v1/completions", {"model": scd.model, "prompt": prompt,
                                              "max_tokens": 8, "temperature": 0})
    assert completion.status_code == 200, completion.text
    assert completion.json()["ilsi"]["method"] == "speculative_contrastive_decoding"


def test_greedy_unchanged_beside_sampled_requests(scd, oracle):
    """Batch isolation: a greedy request shares verify steps with sampled ones."""
    expected = oracle.greedy(oracle.encode(PROMPTS[3]), TOKENS)

    def sampled(prompt: str) -> None:
        r = scd.post("/generate", {"text": prompt, "sampling_params": {
            "max_new_tokens": TOKENS, "temperature": 1.3, "ignore_eos": True}})
        assert r.status_code == 200, r.text

    with ThreadPoolExecutor(4) as pool:
        others = [pool.submit(sampled, p) for p in PROMPTS[:3]]
        greedy = pool.submit(scd.generate, PROMPTS[3], max_new_tokens=TOKENS)
        assert greedy.result()["output_ids"] == expected
        for f in others:
            f.result()


def test_sampled_tokens_follow_the_contrastive_distribution(scd, oracle):
    check_sampled_second_token(scd, oracle, logits_of=oracle.logits)


def test_logits_methods_are_refused_plain_requests_served(scd):
    check_logits_methods_refused(scd, ALGORITHM, PROMPTS)
