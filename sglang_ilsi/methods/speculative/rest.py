"""REST: retrieval-based speculative decoding, drafts from a datastore's text.

He et al. 2024, REST: Retrieval-Based Speculative Decoding (NAACL), arXiv:2311.08252.

``--speculative-algorithm REST --ilsi-rest-datastore PATH``.
Drafts are the continuations of the longest exact suffix match of the text so
far in a datastore, verified by the target in one forward (lossless). The
datastore is the ``corpus.jsonl`` that ``sglang-ilsi datastore build`` writes
beside a store's index, in SGLang's own external n-gram corpus format.

REST runs on SGLang's NGRAM worker, whose suffix automaton over an external
corpus answers exactly REST's query (the longest suffix match, then the
continuations that follow it): the plugin launches NGRAM with the store's
corpus and gives it half the draft budget
(``--speculative-ngram-external-sam-budget``), unless the operator sets it.
The other half stays with the worker's own trie over the text seen so far,
which REST's paper does not have: measured on SmolLM2 completing code from the
stdlib's ``json`` package, drafts from the datastore alone (all slots but one)
were accepted less often than NGRAM's own (1.22 vs 2.43 tokens per forward on
first sight of a prompt), since the model does not write the stored code
verbatim; where it does (the lab target's own continuations in the store),
datastore drafts are accepted at 7-8 tokens per forward of 8.
"""

from __future__ import annotations

from sglang_ilsi.methods.speculative.base import SpeculativeAlgorithm
from sglang_ilsi.registry import register

# the draft tokens SGLang gives NGRAM when --speculative-num-draft-tokens is not set
NGRAM_DEFAULT_DRAFT_TOKENS = 12


@register
class RetrievalSpeculative(SpeculativeAlgorithm):
    """REST: retrieval-based speculative decoding, drafts from a datastore's text."""

    name = "rest"
    family = "context-aware/retrieval"
    paper = ('He et al. 2024, REST: Retrieval-Based Speculative Decoding (NAACL), '
             'arXiv:2311.08252')
    algorithm = "REST"
    flags = ('--ilsi-rest-datastore PATH',)
