"""Self-certainty best-of-N (Kang et al. 2025): the candidate whose token
distributions are furthest from uniform."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sglang_ilsi.methods.selection.base import (
    SelectionRule,
    argmax_first,
    checked_params,
    make_selection,
    n_param,
)
from sglang_ilsi.registry import register
from sglang_ilsi.selection.candidates import Candidate, Selection

CERTAINTY = "self_certainty"  # the ``confidence`` method's statistic


def certainties(candidates: Sequence[Candidate]) -> list[float | None]:
    return [float(c.confidence[CERTAINTY]) if c.confidence and CERTAINTY in c.confidence
            else None for c in candidates]


@register
class SelfCertainty(SelectionRule):
    """Self-certainty best-of-N: return the candidate with the highest self-certainty.

    Kang, Zhao & Song, "Scalable Best-of-N Selection for Large Language Models via
    Self-Certainty", 2025 (arXiv:2502.18581).

        SC(y) = (1/n) Σ_{i=1..n} KL(U ‖ p(· | x, y_<i))
              = −(1/(n·V)) Σ_i Σ_v log(V · p(v | x, y_<i))

    measured by the ``confidence`` method on the model's raw distribution while
    each candidate decodes: no reward model, no extra forward pass. Ties go to
    the earliest candidate; unmeasured candidates (no token) score −∞.
    ``scores[k]`` = SC of candidate k.
    """

    name = "self_certainty"
    family = "independent/sampling"
    paper = ("Kang, Zhao & Song 2025, Scalable Best-of-N Selection for Large Language Models "
             "via Self-Certainty, arXiv:2502.18581")
    needs = frozenset({"samples", "confidence"})
    params = (n_param(8),)

    @classmethod
    def select(cls, candidates: Sequence[Candidate],
               params: Mapping[str, Any] | None = None) -> Selection:
        checked_params(cls, candidates, params)
        scores = certainties(candidates)
        position = argmax_first([s if s is not None else float("-inf") for s in scores])
        return make_selection(cls, candidates, position, list(scores))
