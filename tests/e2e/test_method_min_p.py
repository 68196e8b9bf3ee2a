"""``min_p`` against transformers' ``MinPLogitsWarper`` and SGLang's own min-p
(its sampler's filter): offline on random logits, and through a real server
(greedy tokens, and each sampled step's traced distribution)."""

from __future__ import annotations

import pytest
import torch
from sglang.srt.layers.sampler import top_k_top_p_min_p_sampling_from_probs_torch
from transformers.generation.logits_process import MinPLogitsWarper
from truncation_checks import check_greedy, check_traced_steps, warper_keep

from sglang_ilsi import registry
from sglang_ilsi.methods.base import RowContext
from sglang_ilsi.params import validate_params

METHOD = registry.get("min_p")
PROMPT = "def hello(world):"


def transformers_keep(logits: torch.Tensor, p_base: float, temperature: float) -> torch.Tensor:
    return warper_keep(MinPLogitsWarper(p_base), logits, temperature)


def sglang_keep(logits: torch.Tensor, p_base: float, temperature: float) -> torch.Tensor:
    """The tokens SGLang's own ``min_p`` sampling parameter keeps (its sampler's
    filter, with top-k and top-p off)."""
    t = temperature if temperature > 1e-6 else 1.0
    probs = torch.softmax(logits / t, dim=-1)
    n, vocab = probs.shape
    _, filtered, index, _ = top_k_top_p_min_p_sampling_from_probs_torch(
        probs.clone(), torch.full((n,), vocab), torch.ones(n), torch.full((n,), p_base), True,
        None, torch.zeros(n, dtype=torch.long), return_filtered_probs=True)
    keep = torch.zeros_like(probs, dtype=torch.bool)
    return keep.scatter_(1, index.long(), filtered > 0)


def ours(logits: torch.Tensor, p_base: float, temperature: float) -> torch.Tensor:
    rows = [RowContext(params=validate_params(METHOD.params, {"p_base": p_base}), prompt_ids=[],
                       output_ids=[], temperature=temperature) for _ in range(len(logits))]
    return METHOD.apply(logits.clone(), rows)


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.5])
@pytest.mark.parametrize("p_base", [0.01, 0.1, 0.5, 1.0])
def test_equals_transformers_and_sglang_on_random_logits(p_base, temperature):
    generator = torch.Generator().manual_seed(int(p_base * 100) + int(temperature * 10))
    logits = torch.randn(5, 400, generator=generator) * torch.tensor([[0.5], [1], [2], [4], [8]])
    out = ours(logits, p_base, temperature)
    keep = torch.isfinite(out)
    assert torch.equal(keep, transformers_keep(logits, p_base, temperature))
    assert torch.equal(keep, sglang_keep(logits, p_base, temperature))
    assert torch.equal(out[keep], logits[keep])  # kept logits untouched (raw, not scaled)


def _keep(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return transformers_keep(logits, 0.3, temperature)


@pytest.mark.server
def test_greedy_tokens_equal_transformers(tiny_server, hf):
    report = check_greedy(tiny_server, hf, PROMPT, {"method": "min_p", "p_base": 0.3}, _keep)
    assert report["method"] == "min_p" and report["params"]["p_base"] == 0.3


@pytest.mark.server
def test_traced_distribution_equals_transformers(tiny_server, hf):
    check_traced_steps(tiny_server, hf, PROMPT, {"method": "min_p", "p_base": 0.3}, _keep, 1.0)
