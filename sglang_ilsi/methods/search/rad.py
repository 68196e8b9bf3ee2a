"""RAD: reward-augmented decoding (Deng & Raffel 2023)."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from sglang_ilsi.methods.search.args import reward_weighted
from sglang_ilsi.methods.search.base import SearchMethod, SearchResult, Tree, reward_guided_tokens
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register
from sglang_ilsi.reward import AGGREGATE_PARAM, REWARD_MODEL_PARAM


@register
class Rad(SearchMethod):
    """RAD: sample each token from the top-k, re-weighted by a reward model's scores.

    Deng & Raffel, "Reward-Augmented Decoding: Efficient Controlled Text
    Generation With a Unidirectional Reward Model", EMNLP 2023
    (arXiv:2310.09520). At every step the k most likely tokens v get

        ρ(v) = log p(v | x, y_<t) + β · r([x, y_<t, v]),

    and the next token is drawn from softmax(ρ / τ) over them (τ = ``tau``;
    τ = 0 takes the argmax). The draws use a generator seeded with the
    request's ``sampling_seed`` (else a fresh seed), so a seeded request is
    reproducible. As in the paper, the reward model is unidirectional and reuses
    its KV cache across steps: a served reward model keeps the prefix it has read
    (:mod:`sglang_ilsi.reward_cache`), so each step computes only the candidate
    and what changed since the last step (``reward_model_cached_tokens`` in the
    cost counts the tokens it did not compute again).
    """

    name = "rad"
    family = "model-aided/reward"
    paper = ("Deng & Raffel 2023, Reward-Augmented Decoding: Efficient Controlled Text "
             "Generation With a Unidirectional Reward Model (EMNLP), arXiv:2310.09520")
    needs = frozenset({"tree", "reward"})
    params = (
        Param("k", "int", 20, "the candidate tokens re-weighted at each step", minimum=1,
              maximum=64),
        Param("beta", "float", 10.0, "β: the weight of the reward", minimum=0.0,
              maximum=1000.0),
        Param("tau", "float", 1.0, "τ: the temperature of the re-weighted draw (0: argmax)",
              minimum=0.0, maximum=10.0),
        Param("seed", "int", -1, "the draws' seed (-1: the request's sampling_seed, else "
              "fresh)", minimum=-1, maximum=2**31 - 1),
        REWARD_MODEL_PARAM,
        AGGREGATE_PARAM,
    )
    example = {"k": 4}

    @classmethod
    async def search(cls, tree: Tree, params: Mapping[str, Any]) -> SearchResult:
        beta, tau = float(params["beta"]), float(params["tau"])
        seed = int(params["seed"]) if params["seed"] >= 0 else getattr(tree, "seed", None)
        rng = random.Random(seed)

        def choose(logprobs: Sequence[float], rewards: Sequence[float]) -> int:
            scores = reward_weighted(logprobs, rewards, beta)
            top = max(scores)
            if tau == 0.0:
                return scores.index(top)
            weights = [math.exp((s - top) / tau) for s in scores]
            return draw(rng, weights)

        return await reward_guided_tokens(tree, int(params["k"]), choose)


def draw(rng: random.Random, weights: Sequence[float]) -> int:
    """An index drawn with probability proportional to ``weights``."""
    point = rng.random() * math.fsum(weights)
    for index, w in enumerate(weights):
        point -= w
        if point < 0:
            return index
    return len(weights) - 1
