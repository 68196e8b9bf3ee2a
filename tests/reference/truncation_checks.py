"""Checks shared by the tests of truncation samplers that transformers also
implements (``top_h``, ``min_p``): greedy tokens, and each sampled step's traced
distribution, against transformers' warper applied to transformers' logits."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from confidence_references import log_softmax
from reference_decoding import HFReference
from transformers.generation.logits_process import TemperatureLogitsWarper

# keep(logits [1, vocab], temperature) -> bool mask of the tokens the warper keeps
Keep = Callable[[torch.Tensor, float], torch.Tensor]


def warper_keep(warper: Callable, logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The tokens transformers keeps: temperature, then the warper (its own order)."""
    scores = logits.clone()
    if temperature > 1e-6:
        scores = TemperatureLogitsWarper(temperature)(None, scores)
    return torch.isfinite(warper(None, scores))


def _reference(raw: np.ndarray, keep: Keep, temperature: float) -> np.ndarray:
    mask = keep(torch.tensor(raw)[None], temperature)[0].numpy()
    return np.where(mask, raw, -np.inf)


def check_greedy(server, hf: HFReference, prompt: str, ilsi: dict, keep: Keep) -> dict:
    out = server.generate(prompt, max_new_tokens=12, ilsi=ilsi)
    transform = lambda raw, prompt_ids, output: _reference(raw, keep, 0.0)  # noqa: E731
    assert out["output_ids"] == hf.greedy(hf.encode(prompt), 12, transform)
    return out["meta_info"]["ilsi"]


def check_traced_steps(server, hf: HFReference, prompt: str, ilsi: dict, keep: Keep,
                       temperature: float, k: int = 6) -> None:
    prompt_ids = hf.encode(prompt)
    out = server.generate(prompt, max_new_tokens=8, temperature=temperature,
                          ilsi={**ilsi, "trace": k})
    tokens, trace = out["output_ids"], out["meta_info"]["ilsi_trace"]
    assert len(trace) == len(tokens)
    truncated = False
    for step, entry in enumerate(trace):
        raw = hf.logits(prompt_ids + tokens[:step])
        after = log_softmax(_reference(raw, keep, temperature) / temperature)
        for token, lp in entry["after"]:
            assert lp == pytest.approx(after[token], abs=2e-3), step
        assert np.isfinite(after[tokens[step]]), step  # every sampled token was kept
        truncated |= int(np.isfinite(after).sum()) < k
    assert truncated, f"{ilsi['method']} never cut below the traced top-k: is it applied?"
