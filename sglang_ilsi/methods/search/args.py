"""ARGS: alignment as reward-guided search (Khanov et al. 2024)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sglang_ilsi.methods.search.base import SearchMethod, SearchResult, Tree, reward_guided_tokens
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register
from sglang_ilsi.reward import AGGREGATE_PARAM, REWARD_MODEL_PARAM


def reward_weighted(logprobs: Sequence[float], rewards: Sequence[float],
                    weight: float) -> list[float]:
    """s(v) = log p(v | x) + w · r([x, v]) (a missing reward counts 0)."""
    return [lp + weight * (0.0 if math.isnan(r) else r) for lp, r in zip(logprobs, rewards,
                                                                          strict=True)]


@register
class Args(SearchMethod):
    """ARGS: each token is the top-k candidate with the best model score plus weighted reward.

    Khanov, Burapacheep & Li, "ARGS: Alignment as Reward-Guided Search", ICLR
    2024 (arXiv:2402.01694). At every step the k most likely next tokens v
    (under the request's logits methods) are scored

        s(v) = log p(v | x, y_<t) + w · r([x, y_<t, v])

    with r a served reward model reading the prefix, and the argmax is taken
    (ARGS-greedy; ties: the more likely token). The paper adds the weighted
    reward to the logit, which differs from the log-probability by a constant
    per step: the same choice. One policy forward and one batched reward call
    per token.
    """

    name = "args"
    family = "model-aided/reward"
    paper = ("Khanov, Burapacheep & Li 2024, ARGS: Alignment as Reward-Guided Search (ICLR), "
             "arXiv:2402.01694")
    needs = frozenset({"tree", "reward"})
    params = (
        Param("k", "int", 10, "the candidate tokens scored at each step", minimum=1, maximum=64),
        Param("weight", "float", 1.5, "w: the weight of the reward", minimum=0.0,
              maximum=1000.0),
        REWARD_MODEL_PARAM,
        AGGREGATE_PARAM,
    )
    example = {"k": 4}

    @classmethod
    async def search(cls, tree: Tree, params: Mapping[str, Any]) -> SearchResult:
        weight = float(params["weight"])

        def choose(logprobs: Sequence[float], rewards: Sequence[float]) -> int:
            scores = reward_weighted(logprobs, rewards, weight)
            return scores.index(max(scores))

        return await reward_guided_tokens(tree, int(params["k"]), choose)
