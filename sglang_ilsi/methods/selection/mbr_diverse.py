"""Diverse MBR (Jinnai et al. 2024): k diverse, high-utility outputs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sglang_ilsi.methods.selection.base import (
    MAX_CANDIDATES,
    MBR_PARAMS,
    SelectionRule,
    argmax_first,
    checked_params,
    compare_texts,
    make_selection,
    mbr_scores,
    n_param,
)
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register
from sglang_ilsi.selection.candidates import Candidate, Selection
from sglang_ilsi.selection.utilities import utility_matrix


@register
class DiverseMBR(SelectionRule):
    """Diverse MBR: choose a set of k candidates with high MBR scores that are
    dissimilar to each other (greedy).

    Jinnai et al., "Generating Diverse and High-Quality Texts by Minimum Bayes Risk
    Decoding", Findings of ACL 2024 (arXiv:2401.05054).

        S* = argmax_{|S|=k} Σ_{i∈S} m_i − λ Σ_{i<j∈S} s(i, j),

    with m_i the ``mbr`` score and s(i, j) = (u(i, j) + u(j, i)) / 2. Greedy: start
    empty, repeatedly add the candidate with the largest marginal gain
    m_i − λ Σ_{j∈S} s(i, j) (ties: earliest). The chosen index is the first member
    of the set; ``info.set`` lists the set (candidate indices, in selection
    order) and ``info.objective`` its value.
    """

    name = "mbr_diverse"
    family = "independent/minimum-bayes-risk"
    paper = ("Jinnai et al. 2024, Generating Diverse and High-Quality Texts by Minimum "
             "Bayes Risk Decoding (Findings of ACL), arXiv:2401.05054")
    params = (
        n_param(8),
        *MBR_PARAMS,
        Param("k", "int", 4, "size of the diverse set", minimum=1, maximum=MAX_CANDIDATES),
        Param("lambda", "float", 1.0, "λ: weight of the pairwise-similarity penalty",
              minimum=0.0, maximum=100.0),
    )

    @classmethod
    def select(cls, candidates: Sequence[Candidate],
               params: Mapping[str, Any] | None = None) -> Selection:
        p = checked_params(cls, candidates, params)
        texts, answers = compare_texts(candidates, p)
        u = utility_matrix(p["utility"], texts)
        m = mbr_scores(u)
        n, lam = len(candidates), p["lambda"]
        sim = [[(float(u[i, j]) + float(u[j, i])) / 2 for j in range(n)] for i in range(n)]
        chosen: list[int] = []
        gains: list[float] = []
        for _ in range(min(p["k"], n)):
            rest = [i for i in range(n) if i not in chosen]
            g = [m[i] - lam * math.fsum(sim[i][j] for j in chosen) for i in rest]
            pick = argmax_first(g)
            chosen.append(rest[pick])
            gains.append(g[pick])
        objective = math.fsum(m[i] for i in chosen) - lam * math.fsum(
            sim[a][b] for x, a in enumerate(chosen) for b in chosen[x + 1:])
        return make_selection(cls, candidates, chosen[0], list(m), answers, utility=p["utility"],
                       set=[candidates[i].index for i in chosen], set_positions=chosen,
                       gains=gains, objective=objective, utility_evaluations=n * (n - 1))
