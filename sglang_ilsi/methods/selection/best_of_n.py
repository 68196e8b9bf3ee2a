"""Best-of-N (Cobbe et al. 2021; Nakano et al. 2021): the highest-reward candidate."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sglang_ilsi.methods.selection.base import (
    SelectionRule,
    argmax_first,
    checked_params,
    make_selection,
    n_param,
    rewards_of,
)
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register
from sglang_ilsi.reward import AGGREGATE_PARAM, REWARD_MODEL_PARAM
from sglang_ilsi.selection.candidates import Candidate, Selection


@register
class BestOfN(SelectionRule):
    """Best-of-N: return the candidate an external reward model scores highest.

    Reward/verifier ranking of N samples: Cobbe et al., "Training Verifiers to
    Solve Math Word Problems", 2021 (arXiv:2110.14168); Nakano et al., "WebGPT",
    2021 (arXiv:2112.09332).

        y* = argmax_i r(x, y_i)   (ties: earliest; NaN rewards never win).

    The engine fills ``Candidate.reward``; a missing reward is an error. With
    ``reward="model"`` a served reward model scores each candidate
    (``reward_model``; a process model's step scores folded by ``aggregate``,
    see :mod:`sglang_ilsi.reward`): the setting of Cobbe et al. (outcome
    verifier) and Lightman et al. 2023 (process verifier). With
    ``reward="verifier"`` the engine scores each candidate with the policy
    model itself as a yes/no verifier (SGLang's scoring path): r = P(yes) /
    (P(yes) + P(no)) for the label tokens after
    ``prompt + candidate + verifier_prompt``.
    """

    name = "best_of_n"
    family = "model-aided/reward"
    paper = ("Cobbe et al. 2021, Training Verifiers to Solve Math Word Problems, "
             "arXiv:2110.14168; Nakano et al. 2021, WebGPT: Browser-assisted "
             "Question-answering with Human Feedback, arXiv:2112.09332")
    needs = frozenset({"samples", "reward"})
    params = (
        n_param(8),
        Param("reward", "str", "verifier", "where rewards come from: 'verifier' = the "
              "policy model asked whether the answer is correct; 'model' = a served reward "
              "model (reward_model)", choices=("verifier", "model")),
        REWARD_MODEL_PARAM,
        AGGREGATE_PARAM,
        Param("verifier_prompt", "str", "\nIs the answer above correct? Answer Yes or No.\nAnswer:",
              "text appended after each candidate before reading the yes/no label",
              max_length=500),
        Param("yes", "str", " Yes", "the 'correct' label (its first token is read)", max_length=20),
        Param("no", "str", " No", "the 'incorrect' label (its first token is read)", max_length=20),
    )

    @classmethod
    def select(cls, candidates: Sequence[Candidate],
               params: Mapping[str, Any] | None = None) -> Selection:
        checked_params(cls, candidates, params)
        rewards = rewards_of(cls, candidates)
        ranked = [r if not math.isnan(r) else -math.inf for r in rewards]
        position = argmax_first(ranked)
        return make_selection(cls, candidates, position, list(rewards),
                       all_nan=all(math.isnan(r) for r in rewards))
