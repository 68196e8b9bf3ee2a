"""Speculative decoding with a small draft model (SGLang's own STANDALONE worker).

Leviathan et al. 2023, Fast Inference from Transformers via Speculative Decoding (ICML).

``--speculative-algorithm STANDALONE`` with ``--speculative-draft-model-path PATH``.
On a CPU-only machine the plugin adds the draft model's decode attention and the
target's tree verify on the torch_native backend (``engine/cpu``).
"""

from __future__ import annotations

from sglang_ilsi.methods.speculative.base import SpeculativeAlgorithm
from sglang_ilsi.registry import register


@register
class StandaloneSpeculative(SpeculativeAlgorithm):
    """Speculative decoding with a small draft model (SGLang's own STANDALONE worker)."""

    name = "speculative_standalone"
    family = "model-aided/draft"
    paper = ('Leviathan et al. 2023, Fast Inference from Transformers via Speculative Decoding (ICML), arXiv:2211.17192')
    algorithm = "STANDALONE"
    flags = ('--speculative-draft-model-path PATH',)
