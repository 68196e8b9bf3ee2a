"""Model-based MBR (Jinnai et al. 2024): references weighted by model probability."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sglang_ilsi.methods.selection.base import (
    MBR_PARAMS,
    SelectionRule,
    argmax_first,
    checked_params,
    compare_texts,
    make_selection,
    n_param,
    usable_logprobs,
)
from sglang_ilsi.registry import register
from sglang_ilsi.selection.candidates import Candidate, Selection
from sglang_ilsi.selection.utilities import utility_matrix


def model_weights(candidates: Sequence[Candidate], texts: Sequence[str]
                  ) -> tuple[list[int], list[float]]:
    """MBMBR's reference distribution: the distinct outputs (grouped by compared
    text; the first candidate of each group represents it) with probabilities
    P(y) ∝ Σ exp(logprob) over the group's distinct samples (distinct token ids,
    or distinct texts where the engine gave none), normalized over the groups.
    Computed stably (log-sum-exp around the largest logprob)."""
    lps = usable_logprobs(candidates)
    if lps is None:
        raise ValueError("mbr_model needs the cumulative logprob of every candidate")
    groups: dict[str, list[int]] = {}
    for k, t in enumerate(texts):
        groups.setdefault(t, []).append(k)
    top = max(lps)
    if math.isinf(top):  # every sample has probability 0: fall back to uniform
        lps = [0.0] * len(lps)
        top = 0.0
    reps, mass = [], []
    for members in groups.values():
        seen: set[Any] = set()
        parts = []
        for k in members:
            c = candidates[k]
            key = tuple(c.token_ids) if len(c.token_ids) else c.text
            if key not in seen:
                seen.add(key)
                parts.append(math.exp(lps[k] - top))
        reps.append(members[0])
        mass.append(math.fsum(parts))
    z = math.fsum(mass)
    return reps, [m / z for m in mass]


@register
class ModelBasedMBR(SelectionRule):
    """Model-based MBR (MBMBR): weight each pseudo-reference by its normalized model
    probability instead of its sample frequency.

    Jinnai et al., "Model-based Minimum Bayes Risk Decoding for Text Generation",
    ICML 2024 (arXiv:2311.05263).

        y* = argmax_i Σ_{y∈R} P̂(y) · u(y_i, y),   P̂(y) = P(y) / Σ_{y'∈R} P(y'),

    where R is the set of distinct candidates (duplicates merged, see
    :func:`model_weights`) and P(y) = exp(cumulative logprob). As in the paper the
    sum runs over the whole reference set, the hypothesis' own entry included.
    Needs every candidate's logprob. Ties go to the earliest candidate.
    """

    name = "mbr_model"
    family = "independent/minimum-bayes-risk"
    paper = ("Jinnai et al. 2024, Model-based Minimum Bayes Risk Decoding for Text "
             "Generation (ICML), arXiv:2311.05263")
    params = (n_param(8), *MBR_PARAMS)

    @classmethod
    def select(cls, candidates: Sequence[Candidate],
               params: Mapping[str, Any] | None = None) -> Selection:
        p = checked_params(cls, candidates, params)
        texts, answers = compare_texts(candidates, p)
        reps, weights = model_weights(candidates, texts)
        u = utility_matrix(p["utility"], texts, [texts[r] for r in reps])
        scores = [math.fsum(w * float(u[i, g]) for g, w in enumerate(weights))
                  for i in range(len(candidates))]
        return make_selection(cls, candidates, argmax_first(scores), scores, answers,
                       utility=p["utility"], reference_positions=reps,
                       reference_weights=weights,
                       utility_evaluations=len(candidates) * len(reps))
