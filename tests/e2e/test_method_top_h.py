"""``top_h`` against transformers' own ``TopHLogitsWarper``: offline on random
logits, and through a real server (greedy tokens, and each sampled step's
traced distribution against the warper applied to transformers' logits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_decoding import HFReference
from transformers.generation.logits_process import TemperatureLogitsWarper, TopHLogitsWarper

from sglang_ilsi import registry
from sglang_ilsi.methods.base import RowContext
from sglang_ilsi.params import validate_params

METHOD = registry.get("top_h")
PROMPT = "def hello(world):"


def transformers_keep(logits: torch.Tensor, alpha: float, temperature: float) -> torch.Tensor:
    """The tokens transformers keeps: temperature, then Top-H (its own order)."""
    scores = logits.clone()
    if temperature > 1e-6:
        scores = TemperatureLogitsWarper(temperature)(None, scores)
    return torch.isfinite(TopHLogitsWarper(alpha)(None, scores))


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


@pytest.fixture(scope="module")
def hf(tiny_model_path):
    return HFReference(tiny_model_path)


def _logprobs(row: np.ndarray, temperature: float) -> np.ndarray:
    x = row / temperature
    finite = np.isfinite(x)
    out = np.full_like(x, -np.inf)
    top = x[finite].max()
    out[finite] = x[finite] - top - np.log(np.exp(x[finite] - top).sum())
    return out


def _reference(raw: np.ndarray, alpha: float, temperature: float) -> np.ndarray:
    keep = transformers_keep(torch.tensor(raw)[None], alpha, temperature)[0].numpy()
    return np.where(keep, raw, -np.inf)


@pytest.mark.server
def test_greedy_tokens_equal_transformers(tiny_server, hf):
    out = tiny_server.generate(PROMPT, max_new_tokens=12, ilsi={"method": "top_h", "alpha": 0.3})
    transform = lambda raw, prompt_ids, output: _reference(raw, 0.3, 0.0)  # noqa: E731
    assert out["output_ids"] == hf.greedy(hf.encode(PROMPT), 12, transform)
    report = out["meta_info"]["ilsi"]
    assert report["method"] == "top_h" and report["params"]["alpha"] == 0.3


@pytest.mark.server
def test_traced_distribution_equals_transformers(tiny_server, hf):
    temperature, alpha, k = 0.8, 0.3, 6
    prompt_ids = hf.encode(PROMPT)
    out = tiny_server.generate(PROMPT, max_new_tokens=8, temperature=temperature,
                               ilsi={"method": "top_h", "alpha": alpha, "trace": k})
    tokens, trace = out["output_ids"], out["meta_info"]["ilsi_trace"]
    assert len(trace) == len(tokens)
    truncated = False
    for step, entry in enumerate(trace):
        raw = hf.logits(prompt_ids + tokens[:step])
        after = _logprobs(_reference(raw, alpha, temperature), temperature)
        for token, lp in entry["after"]:
            assert lp == pytest.approx(after[token], abs=2e-3), step
        assert np.isfinite(after[tokens[step]]), step  # every sampled token was kept
        truncated |= int(np.isfinite(after).sum()) < k
    assert truncated, "top_h never cut below the traced top-k: is it applied?"
