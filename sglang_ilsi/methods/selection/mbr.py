"""Minimum Bayes risk decoding over N samples (Kumar & Byrne 2004; Freitag et al. 2022)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sglang_ilsi.methods.selection.base import (
    MBR_PARAMS,
    SelectionRule,
    argmax_first,
    checked_params,
    compare_texts,
    make_selection,
    mbr_scores,
    n_param,
)
from sglang_ilsi.registry import register
from sglang_ilsi.selection.candidates import Candidate, Selection
from sglang_ilsi.selection.utilities import utility_matrix


@register
class MinimumBayesRisk(SelectionRule):
    """MBR: choose the candidate with the highest expected utility against the
    others used as pseudo-references.

    Kumar & Byrne, "Minimum Bayes-Risk Decoding for Statistical Machine
    Translation", HLT-NAACL 2004; with neural/sampled candidates: Freitag et al.,
    "High Quality Rather than High Model Probability: Minimum Bayes Risk Decoding
    with Neural Metrics", TACL 2022, and "Epsilon Sampling Rocks", WMT 2023.

        y* = argmax_i Σ_{j≠i} w_j · u(y_i, y_j),   w_j = 1/(N-1).

    ``u`` is ``utility`` (chrF by default) on the full texts, or on the answers of
    ``extractor`` (an absent answer compares as ""). ``scores[i]`` is candidate
    i's expected utility. Ties go to the earliest candidate.
    """

    name = "mbr"
    family = "independent/minimum-bayes-risk"
    paper = ("Kumar & Byrne 2004, Minimum Bayes-Risk Decoding for Statistical Machine "
             "Translation (HLT-NAACL); Freitag et al. 2022, High Quality Rather than High "
             "Model Probability: MBR Decoding with Neural Metrics (TACL); Freitag et al. "
             "2023, Epsilon Sampling Rocks (WMT)")
    params = (n_param(8), *MBR_PARAMS)

    @classmethod
    def select(cls, candidates: Sequence[Candidate],
               params: Mapping[str, Any] | None = None) -> Selection:
        p = checked_params(cls, candidates, params)
        texts, answers = compare_texts(candidates, p)
        scores = mbr_scores(utility_matrix(p["utility"], texts))
        n = len(candidates)
        return make_selection(cls, candidates, argmax_first(scores), list(scores), answers,
                       utility=p["utility"], utility_evaluations=n * (n - 1))
