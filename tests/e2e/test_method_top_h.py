"""``top_h`` against transformers' own ``TopHLogitsWarper``: offline on random
logits, and through a real server (greedy tokens, and each sampled step's
traced distribution against the warper applied to transformers' logits)."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import TopHLogitsWarper
from truncation_checks import check_greedy, check_traced_steps, warper_keep

from sglang_ilsi import registry
from sglang_ilsi.methods.base import RowContext
from sglang_ilsi.params import validate_params

METHOD = registry.get("top_h")
PROMPT = "def hello(world):"


def transformers_keep(logits: torch.Tensor, alpha: float, temperature: float) -> torch.Tensor:
    return warper_keep(TopHLogitsWarper(alpha), logits, temperature)


def ours(logits: torch.Tensor, params: list[dict], temperature: float) -> torch.Tensor:
    rows = [RowContext(params=validate_params(METHOD.params, p), prompt_ids=[], output_ids=[],
                       temperature=temperature) for p in params]
    return METHOD.apply(logits.clone(), rows)


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0, 1.5])
@pytest.mark.parametrize("alpha", [0.05, 0.4, 0.9, 1.0])
def test_equals_transformers_on_random_logits(alpha, temperature):
    generator = torch.Generator().manual_seed(int(alpha * 100) + int(temperature * 10))
    logits = torch.randn(6, 500, generator=generator) * torch.tensor([[0.5], [1], [2], [4], [8],
                                                                     [16]])
    out = ours(logits, [{"alpha": alpha}] * 6, temperature)
    keep = torch.isfinite(out)
    assert torch.equal(keep, transformers_keep(logits, alpha, temperature))
    assert torch.equal(out[keep], logits[keep])  # kept logits untouched (raw, not scaled)


def test_rows_keep_their_own_parameters():
    logits = torch.randn(3, 300, generator=torch.Generator().manual_seed(1)) * 3
    params = [{"alpha": 0.2}, {"alpha": 0.8}, {"alpha": 0.5, "top_n": 10}]
    out = ours(logits, params, 1.0)
    for i, p in enumerate(params[:2]):
        assert torch.equal(torch.isfinite(out[i:i + 1]),
                           transformers_keep(logits[i:i + 1], p["alpha"], 1.0))
    kept = torch.isfinite(out[2])
    assert 1 <= int(kept.sum()) <= 10
    assert set(kept.nonzero().flatten().tolist()) <= set(logits[2].topk(10).indices.tolist())


def test_the_entropy_bound_tracks_the_step():
    """A confident step keeps fewer tokens than an uncertain one."""
    peaked = torch.full((1, 200), -10.0)
    peaked[0, :3] = torch.tensor([8.0, 6.0, 5.0])
    flat = torch.randn(1, 200, generator=torch.Generator().manual_seed(0)) * 0.1
    few = int(torch.isfinite(ours(peaked, [{}], 1.0)).sum())
    many = int(torch.isfinite(ours(flat, [{}], 1.0)).sum())
    assert few < many


# -- through a real server --------------------------------------------------------------------


@pytest.mark.server
def test_greedy_tokens_equal_transformers(tiny_server, hf):
    keep = lambda logits, t: transformers_keep(logits, 0.3, t)  # noqa: E731
    report = check_greedy(tiny_server, hf, PROMPT, {"method": "top_h", "alpha": 0.3}, keep)
    assert report["method"] == "top_h" and report["params"]["alpha"] == 0.3


@pytest.mark.server
def test_traced_distribution_equals_transformers(tiny_server, hf):
    keep = lambda logits, t: transformers_keep(logits, 0.3, t)  # noqa: E731
    check_traced_steps(tiny_server, hf, PROMPT, {"method": "top_h", "alpha": 0.3}, keep, 0.8)
