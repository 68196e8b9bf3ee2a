"""Speculative contrastive decoding: the draft model is also the contrastive amateur.

Yuan et al. 2024, Speculative Contrastive Decoding (ACL).

``--speculative-algorithm SPECULATIVE_CONTRASTIVE`` with ``--speculative-draft-model-path PATH``, ``--ilsi-scd-alpha A``, ``--ilsi-scd-beta B``.
Lossless with respect to contrastive decoding (CD-beta with the draft as amateur), not
to plain greedy decoding.
"""

from __future__ import annotations

from sglang_ilsi.methods.speculative.base import SpeculativeAlgorithm
from sglang_ilsi.registry import register


@register
class SpeculativeContrastive(SpeculativeAlgorithm):
    """Speculative contrastive decoding: the draft model is also the contrastive amateur."""

    name = "speculative_contrastive"
    family = "model-aided/draft"
    paper = ('Yuan et al. 2024, Speculative Contrastive Decoding (ACL), arXiv:2311.08981')
    algorithm = "SPECULATIVE_CONTRASTIVE"
    flags = ('--speculative-draft-model-path PATH', '--ilsi-scd-alpha A', '--ilsi-scd-beta B')
