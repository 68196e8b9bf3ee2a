"""Self-consistency (Wang et al. 2023): majority vote over N sampled answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sglang_ilsi.methods.selection.base import (
    SelectionRule,
    checked_params,
    majority_vote,
    make_selection,
    n_param,
    usable_logprobs,
    vote_scores,
)
from sglang_ilsi.registry import register
from sglang_ilsi.selection.candidates import Candidate, Selection
from sglang_ilsi.selection.extractors import extract_answers, extractor_params


@register
class SelfConsistency(SelectionRule):
    """Self-consistency: majority vote over the answers extracted from N samples.

    Wang et al., "Self-Consistency Improves Chain of Thought Reasoning in Language
    Models", ICLR 2023 (arXiv:2203.11171).

        a* = argmax_a Σ_i 1[extract(y_i) = a],   return the first y_i with answer a*.

    Candidates without an extractable answer do not vote; if none has one,
    candidate 0 is returned (``info.no_answer``). Ties between answers go to the
    highest summed cumulative logprob of their voters when every candidate has a
    logprob, else to the answer given first. ``scores[i]`` is the vote share of
    candidate i's answer (0 without one).
    """

    name = "self_consistency"
    family = "independent/sampling"
    paper = ("Wang et al. 2023, Self-Consistency Improves Chain of Thought Reasoning in "
             "Language Models (ICLR), arXiv:2203.11171")
    params = (n_param(8), *extractor_params())

    @classmethod
    def select(cls, candidates: Sequence[Candidate],
               params: Mapping[str, Any] | None = None) -> Selection:
        p = checked_params(cls, candidates, params)
        answers = extract_answers([c.text for c in candidates], p)
        position, info = majority_vote(answers, usable_logprobs(candidates))
        scores = vote_scores(answers, max(info["voters"], 1))
        return make_selection(cls, candidates, position, scores, answers, **info)
