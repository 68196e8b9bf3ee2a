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
corpus and gives it the whole draft budget but one token
(``--speculative-ngram-external-sam-budget``), unless the operator sets it.
The worker keeps its own trie over the request's text beside it, as REST's
reference implementation does not; what REST adds over NGRAM is the datastore.
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
