"""Speculative decoding with drafts from an n-gram trie over the text so far (SGLang's own NGRAM).

Fu et al. 2024, Break the Sequential Dependency of LLM Inference Using Lookahead Decoding (ICML).

``--speculative-algorithm NGRAM``.
No draft model: the drafts are n-grams of the prompt and the output so far.
"""

from __future__ import annotations

from sglang_ilsi.methods.speculative.base import SpeculativeAlgorithm
from sglang_ilsi.registry import register


@register
class NgramSpeculative(SpeculativeAlgorithm):
    """Speculative decoding with drafts from an n-gram trie over the text so far (SGLang's own NGRAM)."""

    name = "speculative_ngram"
    family = "independent/parallel"
    paper = ('Fu et al. 2024, Break the Sequential Dependency of LLM Inference Using Lookahead Decoding (ICML), arXiv:2402.02057 (n-gram drafts verified in one forward)')
    algorithm = "NGRAM"
    flags = ()
