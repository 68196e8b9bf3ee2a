"""Weighted self-consistency (Li et al. 2023; Uesato et al. 2022): a reward-weighted vote."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sglang_ilsi.methods.selection.base import (
    SelectionRule,
    checked_params,
    make_selection,
    n_param,
    rewards_of,
    weighted_vote,
)
from sglang_ilsi.registry import register
from sglang_ilsi.reward import AGGREGATE_PARAM, REWARD_MODEL_PARAM
from sglang_ilsi.selection.candidates import Candidate, Selection
from sglang_ilsi.selection.extractors import extract_answers, extractor_params


@register
class WeightedSelfConsistency(SelectionRule):
    """Weighted self-consistency: each candidate votes for its answer with its reward.

    Li et al., "Making Language Models Better Reasoners with Step-Aware
    Verifier" (DiVeRSe), ACL 2023 (arXiv:2206.02336); Uesato et al., "Solving
    math word problems with process- and outcome-based feedback", 2022
    (arXiv:2211.14275).

        V(a) = Σ_{i : extract(y_i) = a} r(x, y_i),   a* = argmax_a V(a),

    returning the highest-reward candidate with answer a*. ``r`` is a served
    reward model's reward (an outcome model's score, or a process model's step
    scores folded by ``aggregate``). Candidates without an extractable answer
    or with a NaN reward do not vote; with no voter, the highest-reward
    candidate wins (``info.no_answer``). Ties between answers: the answer given
    first; between candidates: the earliest. ``scores[i]`` is candidate i's reward.
    """

    name = "weighted_self_consistency"
    family = "model-aided/reward"
    paper = ("Li et al. 2023, Making Language Models Better Reasoners with Step-Aware "
             "Verifier (ACL), arXiv:2206.02336; Uesato et al. 2022, Solving math word "
             "problems with process- and outcome-based feedback, arXiv:2211.14275")
    needs = frozenset({"samples", "reward"})
    params = (n_param(8), *extractor_params(), REWARD_MODEL_PARAM, AGGREGATE_PARAM)

    @classmethod
    def select(cls, candidates: Sequence[Candidate],
               params: Mapping[str, Any] | None = None) -> Selection:
        p = checked_params(cls, candidates, params)
        rewards = rewards_of(cls, candidates)
        answers = extract_answers([c.text for c in candidates], p)
        voters = [k for k, r in enumerate(rewards) if not math.isnan(r)]
        winner, votes = weighted_vote(answers, rewards, voters)
        ranked = [r if not math.isnan(r) else -math.inf for r in rewards]
        pool = ([k for k in voters if answers[k] == winner] if winner is not None
                else list(range(len(candidates))))
        position = max(pool, key=lambda k: (ranked[k], -k))
        return make_selection(cls, candidates, position, list(rewards), answers,
                              votes=votes, answer=winner, voters=len(voters),
                              no_answer=winner is None)
