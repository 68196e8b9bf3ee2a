"""Self-certainty-weighted voting (Kang et al. 2025): Borda votes by self-certainty rank."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sglang_ilsi.methods.selection.base import (
    SelectionRule,
    checked_params,
    make_selection,
    n_param,
    weighted_vote,
)
from sglang_ilsi.methods.selection.self_certainty import certainties
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register
from sglang_ilsi.selection.candidates import Candidate, Selection
from sglang_ilsi.selection.extractors import extract_answers, extractor_params


def borda_weights(scores: Sequence[float | None], power: float) -> list[float]:
    """w_k = (N − r_k + 1)^p, r_k the rank of candidate k by self-certainty (1 = the
    highest; ties ranked by generation order; unmeasured candidates rank last)."""
    n = len(scores)
    order = sorted(range(n), key=lambda k: (scores[k] is None, -(scores[k] or 0.0), k))
    weights = [0.0] * n
    for rank, k in enumerate(order, start=1):
        weights[k] = float(n - rank + 1) ** power
    return weights


@register
class SelfCertaintyVote(SelectionRule):
    """Self-certainty-weighted voting: each answer collects Borda votes that grow with
    its candidates' self-certainty rank.

    Kang, Zhao & Song, "Scalable Best-of-N Selection for Large Language Models via
    Self-Certainty", 2025 (arXiv:2502.18581), "Borda voting":

        V(a) = Σ_{k: answer_k = a} (N − r_k + 1)^p,   a* = argmax_a V(a)

    with r_k candidate k's rank by self-certainty (see ``self_certainty``). p = 0
    is plain majority voting; a large p approaches self-certainty best-of-N.
    Candidates without an answer do not vote; ties go to the answer given first.
    The returned candidate is the most self-certain one with the winning answer
    (with no answer at all: the most self-certain). ``scores[k]`` = the Borda
    weight of candidate k.
    """

    name = "self_certainty_vote"
    family = "independent/sampling"
    paper = ("Kang, Zhao & Song 2025, Scalable Best-of-N Selection for Large Language Models "
             "via Self-Certainty, arXiv:2502.18581")
    needs = frozenset({"samples", "confidence"})
    params = (
        n_param(8),
        Param("power", "float", 0.5, "p: the Borda weight's exponent (0: majority vote)",
              minimum=0.0, maximum=10.0),
        *extractor_params(),
    )

    @classmethod
    def select(cls, candidates: Sequence[Candidate],
               params: Mapping[str, Any] | None = None) -> Selection:
        p = checked_params(cls, candidates, params)
        answers = extract_answers([c.text for c in candidates], p)
        weights = borda_weights(certainties(candidates), p["power"])
        winner, votes = weighted_vote(answers, weights, range(len(candidates)))
        pool = [k for k in range(len(candidates)) if winner is None or answers[k] == winner]
        position = max(pool, key=lambda k: (weights[k], -k))
        return make_selection(cls, candidates, position, list(weights), answers,
                              votes=votes, answer=winner, no_answer=winner is None)
