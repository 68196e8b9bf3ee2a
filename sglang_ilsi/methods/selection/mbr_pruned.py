"""Pruned MBR (Cheng & Vlachos 2023): confidence-based pruning of hypotheses."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from sglang_ilsi.methods.selection.base import (
    MAX_CANDIDATES,
    MBR_PARAMS,
    SelectionRule,
    argmax_first,
    checked_params,
    compare_texts,
    make_selection,
    n_param,
)
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register
from sglang_ilsi.selection.candidates import Candidate, Selection
from sglang_ilsi.selection.utilities import utility_matrix


@register
class PrunedMBR(SelectionRule):
    """MBR with confidence-based pruning: evaluate hypotheses on growing subsets of
    pseudo-references and drop those unlikely to win.

    Cheng & Vlachos, "Faster Minimum Bayes Risk Decoding with Confidence-based
    Pruning", EMNLP 2023 (arXiv:2312.14955).

    The pseudo-references are the candidates in a seeded random order; a schedule
    r_1 = min(schedule_start, N), r_{t+1} = min(2·r_t, N) grows their number. At
    step t every surviving hypothesis h is scored on the first r_t references,
    ū_t(h) = mean_{y ≠ h} u(h, y) (utilities computed once and reused). If r_t < N
    and more than one hypothesis survives, ``bootstrap`` resamples (with
    replacement) of those references estimate, for each h, the probability that
    ū(h) ≥ ū(ĥ) for the current leader ĥ = argmax ū_t; hypotheses whose estimate
    is below 1 − α are pruned. The loop ends when r_t = N or one hypothesis is
    left; the answer is argmax ū_t over the survivors (with α = 1 nothing is
    pruned and this is exactly ``mbr``). Pruned candidates get score None.

    Random numbers, in this order: ``rng = numpy.random.default_rng(seed)``;
    ``order = rng.permutation(N)``; per pruning step
    ``rng.integers(0, r_t, size=(bootstrap, r_t))`` (indices into the first r_t
    references). A bootstrap sample in which h or ĥ has no reference other than
    itself counts as a win for h (no evidence, no pruning).
    ``info.utility_evaluations`` counts the u(h, y), h ≠ y, computed, against
    ``utility_evaluations_full`` = N(N−1) for plain MBR.
    """

    name = "mbr_pruned"
    family = "independent/minimum-bayes-risk"
    paper = ("Cheng & Vlachos 2023, Faster Minimum Bayes Risk Decoding with "
             "Confidence-based Pruning (EMNLP), arXiv:2312.14955")
    params = (
        n_param(16),
        *MBR_PARAMS,
        Param("alpha", "float", 0.99,
              "α: prune a hypothesis when its estimated chance to beat the leader is < 1-α",
              minimum=0.0, maximum=1.0, exclusive_minimum=True),
        Param("bootstrap", "int", 500, "number of bootstrap resamples per pruning step",
              minimum=1, maximum=5000),
        Param("schedule_start", "int", 8, "r_1: pseudo-references used at the first step "
              "(doubled at each step)", minimum=2, maximum=MAX_CANDIDATES),
        Param("seed", "int", 0, "seed of the reference order and the bootstrap",
              minimum=0, maximum=2**31 - 1),
    )

    TOLERANCE: ClassVar[float] = 1e-9

    @classmethod
    def select(cls, candidates: Sequence[Candidate],
               params: Mapping[str, Any] | None = None) -> Selection:
        p = checked_params(cls, candidates, params)
        texts, answers = compare_texts(candidates, p)
        n = len(candidates)
        full = n * (n - 1)
        if n == 1:
            return make_selection(cls, candidates, 0, [0.0], answers, utility=p["utility"],
                           utility_evaluations=0, utility_evaluations_full=0,
                           utility_evaluations_saved=0, steps=[])
        rng = np.random.default_rng(p["seed"])
        order = rng.permutation(n)
        u = np.full((n, n), np.nan)
        alive = list(range(n))
        evaluations = 0
        steps: list[dict[str, int]] = []
        r_prev, r = 0, min(p["schedule_start"], n)
        while True:
            refs = [int(y) for y in order[:r]]
            new = [int(y) for y in order[r_prev:r]]
            u[np.ix_(alive, new)] = utility_matrix(
                p["utility"], [texts[h] for h in alive], [texts[y] for y in new])
            evaluations += sum(1 for h in alive for y in new if h != y)
            est = {h: math.fsum(float(u[h, y]) for y in refs if y != h)
                   / sum(1 for y in refs if y != h) for h in alive}
            before = len(alive)
            if r < n and len(alive) > 1:
                alive = cls._prune(u, alive, refs, est, rng, p["bootstrap"], p["alpha"])
            steps.append({"references": r, "hypotheses": before, "kept": len(alive)})
            if r == n or len(alive) == 1:
                break
            r_prev, r = r, min(2 * r, n)
        best = alive[argmax_first([est[h] for h in alive])]
        scores: list[float | None] = [est[k] if k in alive else None for k in range(n)]
        return make_selection(cls, candidates, best, scores, answers, utility=p["utility"],
                       utility_evaluations=evaluations, utility_evaluations_full=full,
                       utility_evaluations_saved=full - evaluations, steps=steps)

    @classmethod
    def _prune(cls, u: np.ndarray, alive: list[int], refs: list[int], est: dict[int, float],
               rng: np.random.Generator, n_boot: int, alpha: float) -> list[int]:
        r = len(refs)
        leader = alive[argmax_first([est[h] for h in alive])]
        draws = rng.integers(0, r, size=(n_boot, r))
        counts = np.zeros((n_boot, r))
        np.add.at(counts, (np.repeat(np.arange(n_boot), r), draws.ravel()), 1.0)
        ref_arr = np.array(refs)
        sub = u[np.ix_(alive, refs)]  # [H, r]
        other = ref_arr[None, :] != np.array(alive)[:, None]  # y ≠ h
        num = counts @ np.where(other, sub, 0.0).T  # [B, H]
        den = counts @ other.T.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = num / den
        li = alive.index(leader)
        no_evidence = (den == 0) | (den[:, [li]] == 0)
        wins = no_evidence | (mean >= mean[:, [li]] - cls.TOLERANCE)
        rate = wins.mean(axis=0)
        return [h for k, h in enumerate(alive) if h == leader or rate[k] >= 1.0 - alpha]
