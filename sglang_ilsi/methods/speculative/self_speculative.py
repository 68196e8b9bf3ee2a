"""Self-speculative decoding: the target, skipping some layers, is its own draft.

Zhang et al. 2024, Draft & Verify: Lossless Large Language Model Acceleration via Self-Speculative Decoding (ACL).

``--speculative-algorithm SELF_SPECULATIVE`` with ``--ilsi-self-spec-skip L1,L2,...``.
The skipped layers default to every other layer (first and last kept);
``sglang-ilsi self-spec-search`` chooses them on calibration prompts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from sglang_ilsi.methods.speculative.base import SpeculativeAlgorithm
from sglang_ilsi.registry import register


@register
class SelfSpeculative(SpeculativeAlgorithm):
    """Self-speculative decoding: the target, skipping some layers, is its own draft."""

    name = "self_speculative"
    family = "independent/self-speculative"
    paper = ('Zhang et al. 2024, Draft & Verify: Lossless Large Language Model Acceleration via Self-Speculative Decoding (ACL), arXiv:2309.08168')
    algorithm = "SELF_SPECULATIVE"
    flags = ('--ilsi-self-spec-skip L1,L2,...',)


def num_layers(target: Path) -> int:
    config = json.loads((Path(target) / "config.json").read_text())
    return int(config.get("num_hidden_layers") or config["text_config"]["num_hidden_layers"])


def default_skip(layers: int) -> tuple[int, ...]:
    """Every other layer, keeping the first and the last: 1, 3, 5, ... < layers - 1."""
    return tuple(range(1, layers - 1, 2))


def check_skip(skip: Sequence[int], layers: int) -> tuple[int, ...]:
    """Sorted, de-duplicated layer ids; raises ValueError naming the problem."""
    chosen = tuple(sorted(set(int(i) for i in skip)))
    bad = [i for i in chosen if not 0 <= i < layers]
    if bad:
        raise ValueError(f"layer(s) {bad} do not exist (the target has {layers}: 0..{layers - 1})")
    if len(chosen) >= layers:
        raise ValueError(f"skipping all {layers} layers leaves no draft model")
    if not chosen:
        raise ValueError("no layer to skip: the draft would be the target itself")
    return chosen
