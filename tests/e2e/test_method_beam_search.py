"""End-to-end: beam search (kind ``search``) on the shared tiny-model server,
token for token against transformers' own ``generate(num_beams=B,
length_penalty=α)`` (the tiny model rarely ends, so its beams run to
``max_new_tokens``; the lab model's end-of-sequence path is checked in
``test_method_reward_search.py``), composed with a logits method, and batched
beside plain requests."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

pytestmark = pytest.mark.server

PROMPTS = ["def hello(world):", "The quick brown fox"]


def hf_beam_search(hf, prompt: str, beams: int, alpha: float, max_new: int,
                   processor=None) -> list[int]:
    ids = torch.tensor([hf.encode(prompt)])
    kwargs = {"logits_processor": [processor]} if processor is not None else {}
    out = hf.model.generate(ids, attention_mask=torch.ones_like(ids), num_beams=beams,
                            do_sample=False, length_penalty=alpha, max_new_tokens=max_new,
                            early_stopping=False, pad_token_id=hf.eos_ids[0], **kwargs)
    generated = out[0, ids.shape[1]:].tolist()
    if hf.eos_ids[0] in generated:  # padding after the end
        generated = generated[:generated.index(hf.eos_ids[0]) + 1]
    return generated


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("beams,alpha", [(2, 1.0), (4, 0.0), (3, 2.0)])
def test_beam_search_equals_transformers(tiny_server, hf, prompt, beams, alpha):
    out = tiny_server.generate(prompt, 10, ilsi={"method": "beam_search", "beams": beams,
                                                 "length_penalty": alpha})
    assert out["output_ids"] == hf_beam_search(hf, prompt, beams, alpha, 10)
    report = out["meta_info"]["ilsi"]
    assert report["method"] == "beam_search" and len(report["leaves"]) == beams
    assert report["cost"]["generate_calls"] == report["info"]["steps"]


def test_beam_search_composes_with_a_logits_method(tiny_server, hf):
    """Under ``decoding: epsilon`` the beams extend the renormalised truncated
    distribution; transformers with a processor doing the same agrees."""
    epsilon = 0.002

    def truncated(input_ids, log_probs):
        masked = log_probs.masked_fill(log_probs.exp() < epsilon, float("-inf"))
        return torch.log_softmax(masked, dim=-1)

    prompt = PROMPTS[0]
    out = tiny_server.generate(prompt, 8, ilsi={"method": "beam_search", "beams": 3,
                                                "decoding": {"method": "epsilon",
                                                             "epsilon": epsilon}})
    assert out["output_ids"] == hf_beam_search(hf, prompt, 3, 1.0, 8, truncated)
    assert out["meta_info"]["ilsi"]["decoding"]["method"] == "epsilon"


def test_beam_search_batched_with_plain_requests(tiny_server):
    ilsi = {"method": "beam_search", "beams": 3}
    alone = tiny_server.generate(PROMPTS[1], 8, ilsi=ilsi)
    plain_alone = tiny_server.generate(PROMPTS[0], 8)
    with ThreadPoolExecutor(3) as pool:
        jobs = [pool.submit(tiny_server.generate, PROMPTS[1], 8, 0.0, ilsi),
                pool.submit(tiny_server.generate, PROMPTS[0], 8),
                pool.submit(tiny_server.generate, PROMPTS[0], 8, 0.0, {"method": "beam_search",
                                                                     "beams": 2})]
        search, plain, _ = [j.result() for j in jobs]
    assert search["output_ids"] == alone["output_ids"]
    assert plain["output_ids"] == plain_alone["output_ids"]


@pytest.mark.parametrize("ilsi,param", [({"method": "beam_search", "beams": 0}, "beams"),
                                        ({"method": "beam_search", "beams": 33}, "beams"),
                                        ({"method": "beam_search", "length_penalty": 9},
                                         "length_penalty")])
def test_bad_beam_search_requests_are_400(tiny_server, ilsi, param):
    r = tiny_server.post("/generate", {"text": PROMPTS[0],
                                       "sampling_params": {"custom_params": {"ilsi": ilsi}}})
    assert r.status_code == 400 and param in r.text, r.text
