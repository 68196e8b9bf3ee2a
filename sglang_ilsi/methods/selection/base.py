"""Selection rules (kind ``selection``): pick one answer out of N sampled candidates.

This file holds their base class and the pieces several rules share; each
rule is one file beside it.

Every rule is a class with the same declaration style as the logits methods
(``name``, ``family``, ``paper``, ``needs``, typed ``params``) and two class
methods: ``validate(given) -> params`` (raises :class:`IlsiRequestError` naming
the bad parameter) and ``select(candidates, params) -> Selection``. Rules are
deterministic: ties go to the earliest candidate in the list (generation
order); ``mbr_pruned`` draws its random numbers from a seeded generator.

Scores that are sums use ``math.fsum`` (exactly rounded, independent of the
summation order), so equal candidates get bit-equal scores and ties are real.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from sglang_ilsi.declaration import Method
from sglang_ilsi.params import Param, validate_params
from sglang_ilsi.selection.candidates import Candidate, Selection, check_candidates
from sglang_ilsi.selection.extractors import (
    extract_answers,
    extractor_from_params,
    extractor_params,
)
from sglang_ilsi.selection.utilities import (
    DEFAULT_UTILITY,
    UTILITIES,
    check_utility_available,
)

MAX_CANDIDATES = 64


def n_param(default: int = 8) -> Param:
    return Param("n", "int", default, "N: the number of candidates sampled",
                 minimum=1, maximum=MAX_CANDIDATES)


UTILITY_PARAM = Param("utility", "str", DEFAULT_UTILITY,
                      "u(hypothesis, reference) used to compare candidates", choices=UTILITIES)


class SelectionRule(Method):
    """Base class of the rules that choose among N sampled candidates."""

    needs: ClassVar[frozenset[str]] = frozenset({"samples"})
    # a logits method may decode the candidates (``ilsi.candidates``)
    composes_with: ClassVar[frozenset[str]] = frozenset({"logits"})
    decoded_by: ClassVar[str | None] = "candidates"

    @classmethod
    def validate(cls, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Check a request's parameters; return them with defaults filled in.
        Idempotent: validating validated parameters returns them unchanged."""
        params = validate_params(cls.params, given or {})
        names = {p.name for p in cls.params}
        if "extractor" in names:
            extractor_from_params(params)  # checks pattern / field for the chosen extractor
        if "utility" in names:
            check_utility_available(params["utility"])
        return params

    @classmethod
    def round_size(cls, params: Mapping[str, Any], sampled: int) -> int:
        """How many candidates the engine samples next, ``sampled`` being sampled
        already; after each round it asks :meth:`enough`. Default: all ``n`` at once."""
        return int(params["n"]) - sampled

    @classmethod
    def enough(cls, candidates: Sequence[Candidate], params: Mapping[str, Any]) -> bool:
        """Whether the candidates sampled so far suffice (early stopping)."""
        return False

    @classmethod
    def ends_candidates(cls, params: Mapping[str, Any]) -> bool:
        """Whether the rule may end candidates early by end-of-sequence (through
        :meth:`meter`); such a request cannot set ``ignore_eos``."""
        return False

    @classmethod
    def meter(cls, params: Mapping[str, Any], sampled: Sequence[Candidate]) -> dict[str, Any]:
        """Rules that need ``"confidence"``: the ``confidence`` method's parameters
        for the next round's candidates (it decodes them first, before
        ``ilsi.candidates``), given the candidates sampled so far."""
        return {}

    @classmethod
    def select(cls, candidates: Sequence[Candidate],
               params: Mapping[str, Any] | None = None) -> Selection:
        raise NotImplementedError


# The parameters every MBR rule takes beside ``n``.
MBR_PARAMS = (UTILITY_PARAM, *extractor_params(default="full_text"))


# -- shared pieces -----------------------------------------------------------------


def usable_logprobs(candidates: Sequence[Candidate]) -> list[float] | None:
    lps = [c.logprob for c in candidates]
    if any(lp is None or math.isnan(lp) or lp == math.inf for lp in lps):
        return None
    return [float(lp) for lp in lps if lp is not None]


def majority_vote(answers: Sequence[str | None], logprobs: Sequence[float] | None
                  ) -> tuple[int, dict[str, Any]]:
    """Plurality vote over the non-None answers. Returns (position, info).

    Ties between answers with equally many votes go to the answer with the
    highest summed logprob of its voters (when ``logprobs`` is given), then to
    the answer first given earliest. The chosen position is the earliest
    candidate giving the winning answer; with no answer at all, position 0."""
    voters = [k for k, a in enumerate(answers) if a is not None]
    if not voters:
        return 0, {"votes": {}, "voters": 0, "no_answer": True, "tie_break": None}
    counts = Counter(answers[k] for k in voters)  # insertion order = first occurrence
    top = max(counts.values())
    tied = [a for a, c in counts.items() if c == top]
    tie_break = None
    if len(tied) > 1:
        if logprobs is not None:
            sums = {a: math.fsum(logprobs[k] for k in voters if answers[k] == a) for a in tied}
            best = max(sums.values())
            tied = [a for a in tied if sums[a] == best]
        tie_break = "logprob" if len(tied) == 1 else "first_index"
    winner = tied[0]
    position = next(k for k in voters if answers[k] == winner)
    info = {"votes": dict(counts), "voters": len(voters), "no_answer": False,
            "tie_break": tie_break, "answer": winner}
    return position, info


def weighted_vote(answers: Sequence[str | None], weights: Sequence[float],
                  voters: Sequence[int]) -> tuple[str | None, dict[str, float]]:
    """V(a) = Σ_{t ∈ voters, answer_t = a} w_t; the answer with the largest V (ties:
    the answer given first). None when no voter has an answer."""
    totals: dict[str, list[float]] = {}
    for t in voters:
        if answers[t] is not None:
            totals.setdefault(answers[t], []).append(weights[t])
    votes = {a: math.fsum(w) for a, w in totals.items()}
    if not votes:
        return None, {}
    best = max(votes.values())
    return next(a for a, v in votes.items() if v == best), votes


def rewards_of(cls: type[SelectionRule], candidates: Sequence[Candidate]) -> list[float]:
    """Every candidate's reward (the engine fills them for rules needing ``reward``)."""
    rewards = []
    for k, c in enumerate(candidates):
        if c.reward is None:
            raise ValueError(f"{cls.name} needs a reward for every candidate "
                             f"(candidates[{k}] has none)")
        rewards.append(float(c.reward))
    return rewards


def vote_scores(answers: Sequence[str | None], voted: int) -> list[float | None]:
    counts = Counter(a for a in answers if a is not None)
    return [counts[a] / voted if a is not None else 0.0 for a in answers]


def compare_texts(candidates: Sequence[Candidate], params: Mapping[str, Any]
                   ) -> tuple[list[str], list[str | None] | None]:
    """The strings the MBR utility compares (extracted answers, "" for none) and
    the answers to report (None when comparing full texts)."""
    if params.get("extractor", "full_text") == "full_text":
        return [c.text for c in candidates], None
    answers = extract_answers([c.text for c in candidates], params)
    return [a if a is not None else "" for a in answers], answers


def mbr_scores(u: np.ndarray) -> list[float]:
    """score_i = (1/(N-1)) Σ_{j≠i} u[i, j] (uniform weights over the other
    candidates as pseudo-references); 0.0 when N = 1."""
    n = u.shape[0]
    if n == 1:
        return [0.0]
    return [math.fsum(float(u[i, j]) for j in range(n) if j != i) / (n - 1) for i in range(n)]


def argmax_first(values: Sequence[float]) -> int:
    best = 0
    for k in range(1, len(values)):
        if values[k] > values[best]:
            best = k
    return best


def make_selection(cls: type[SelectionRule], candidates: Sequence[Candidate], position: int,
            scores: list[float | None], answers: list[str | None] | None = None,
            **info: Any) -> Selection:
    return Selection(method=cls.name, index=candidates[position].index, position=position,
                     scores=scores, answers=answers, info=info)


def checked_params(cls: type[SelectionRule], candidates: Sequence[Candidate],
             params: Mapping[str, Any] | None) -> dict[str, Any]:
    check_candidates(candidates)
    return cls.validate(params)


