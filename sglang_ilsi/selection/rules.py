"""Selection rules: pick one answer out of N sampled candidates.

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

from sglang_ilsi.params import Param, validate_params
from sglang_ilsi.selection.candidates import Candidate, Selection, check_candidates
from sglang_ilsi.selection.extractors import (
    extract_answers,
    extractor_from_params,
    extractor_params,
)
from sglang_ilsi.selection.registry import register_rule
from sglang_ilsi.selection.utilities import (
    DEFAULT_UTILITY,
    UTILITIES,
    check_utility_available,
    utility_matrix,
)

MAX_CANDIDATES = 64


def n_param(default: int = 8) -> Param:
    return Param("n", "int", default, "N: the number of candidates sampled",
                 minimum=1, maximum=MAX_CANDIDATES)


UTILITY_PARAM = Param("utility", "str", DEFAULT_UTILITY,
                      "u(hypothesis, reference) used to compare candidates", choices=UTILITIES)


class SelectionRule:
    """Base class of the rules that choose among N sampled candidates."""

    name: ClassVar[str]
    family: ClassVar[str]
    paper: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset({"samples"})
    params: ClassVar[tuple[Param, ...]] = ()

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
    def select(cls, candidates: Sequence[Candidate],
               params: Mapping[str, Any] | None = None) -> Selection:
        raise NotImplementedError

    @classmethod
    def summary(cls) -> str:
        doc = (cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else cls.name


# -- shared pieces -----------------------------------------------------------------


def _usable_logprobs(candidates: Sequence[Candidate]) -> list[float] | None:
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


def _vote_scores(answers: Sequence[str | None], voted: int) -> list[float | None]:
    counts = Counter(a for a in answers if a is not None)
    return [counts[a] / voted if a is not None else 0.0 for a in answers]


def _compare_texts(candidates: Sequence[Candidate], params: Mapping[str, Any]
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


def _argmax_first(values: Sequence[float]) -> int:
    best = 0
    for k in range(1, len(values)):
        if values[k] > values[best]:
            best = k
    return best


def _result(cls: type[SelectionRule], candidates: Sequence[Candidate], position: int,
            scores: list[float | None], answers: list[str | None] | None = None,
            **info: Any) -> Selection:
    return Selection(method=cls.name, index=candidates[position].index, position=position,
                     scores=scores, answers=answers, info=info)


def _prepare(cls: type[SelectionRule], candidates: Sequence[Candidate],
             params: Mapping[str, Any] | None) -> dict[str, Any]:
    check_candidates(candidates)
    return cls.validate(params)


# -- independent/sampling -------------------------------------------------------------


@register_rule
class SelfConsistency(SelectionRule):
    """Self-consistency: majority vote over the answers extracted from N samples.

    Wang et al., "Self-Consistency Improves Chain of Thought Reasoning in Language
    Models", ICLR 2023 (arXiv:2203.11171).

        a* = argmax_a Σ_i 1[extract(y_i) = a],   return the first y_i with answer a*.

    Candidates without an extractable answer do not vote; if none has one,
    candidate 0 is returned (``info.no_answer``). Ties between answers go to the
    highest summed cumulative logprob of their voters when every candidate has a
    logprob, else to the answer given first. ``scores[i]`` is the vote share of
    candidate i's answer (0 without one).
    """

    name = "self_consistency"
    family = "independent/sampling"
    paper = ("Wang et al. 2023, Self-Consistency Improves Chain of Thought Reasoning in "
             "Language Models (ICLR), arXiv:2203.11171")
    params = (n_param(8), *extractor_params())

    @classmethod
    def select(cls, candidates: Sequence[Candidate],
               params: Mapping[str, Any] | None = None) -> Selection:
        p = _prepare(cls, candidates, params)
        answers = extract_answers([c.text for c in candidates], p)
        position, info = majority_vote(answers, _usable_logprobs(candidates))
        scores = _vote_scores(answers, max(info["voters"], 1))
        return _result(cls, candidates, position, scores, answers, **info)


def should_stop(answers_so_far: Sequence[str | None], window: int) -> bool:
    """ESC's stopping test, for an engine that samples window by window: True when
    the samples so far end a complete window (a multiple of ``window``) whose
    answers are all equal (and not None)."""
    if window < 1:
        raise ValueError("window must be >= 1")
    k = len(answers_so_far)
    if k == 0 or k % window:
        return False
    last = list(answers_so_far[k - window:])
    return last[0] is not None and all(a == last[0] for a in last)


@register_rule
class EarlyStoppingSelfConsistency(SelectionRule):
    """Early-stopping self-consistency (ESC): sample window by window, stop at the
    first window whose answers all agree, then majority-vote.

    Li et al., "Escape Sky-high Cost: Early-stopping Self-Consistency for Multi-step
    Reasoning", ICLR 2024 (arXiv:2401.10480).

    Samples are split, in generation order, into consecutive windows of size w.
    Sampling stops after window t when its answers are identical (zero entropy):
    m = t·w samples are used, otherwise all N. The answer is then the
    self-consistency vote over the first m samples (same tie rules).
    ``info.samples_used = m``, ``info.samples_saved = max(n, len(candidates)) - m``.
    The engine samples incrementally with :func:`should_stop`; given all N
    candidates, ``select`` reproduces the same stopping point.
    """

    name = "esc"
    family = "independent/sampling"
    paper = ("Li et al. 2024, Escape Sky-high Cost: Early-stopping Self-Consistency for "
             "Multi-step Reasoning (ICLR), arXiv:2401.10480")
    params = (
        n_param(20),
        Param("window", "int", 5, "w: the window size; stop when a window's answers all agree",
              minimum=1, maximum=MAX_CANDIDATES),
        *extractor_params(),
    )

    @classmethod
    def stopping_point(cls, answers: Sequence[str | None], window: int) -> int:
        """How many of ``answers`` (in generation order) ESC uses."""
        for m in range(window, len(answers) + 1, window):
            if should_stop(answers[:m], window):
                return m
        return len(answers)

    @classmethod
    def select(cls, candidates: Sequence[Candidate],
               params: Mapping[str, Any] | None = None) -> Selection:
        p = _prepare(cls, candidates, params)
        answers = extract_answers([c.text for c in candidates], p)
        used = cls.stopping_point(answers, p["window"])
        lps = _usable_logprobs(candidates[:used])
        position, info = majority_vote(answers[:used], lps)
        scores: list[float | None] = list(_vote_scores(answers[:used], max(info["voters"], 1)))
        scores += [None] * (len(candidates) - used)
        return _result(cls, candidates, position, scores, answers, **info,
                       window=p["window"], samples_used=used,
                       samples_saved=max(p["n"], len(candidates)) - used,
                       stopped_early=used < max(p["n"], len(candidates)))


# -- independent/minimum-bayes-risk -----------------------------------------------------

_MBR_PARAMS = (UTILITY_PARAM, *extractor_params(default="full_text"))


@register_rule
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
    params = (n_param(8), *_MBR_PARAMS)

    @classmethod
    def select(cls, candidates: Sequence[Candidate],
               params: Mapping[str, Any] | None = None) -> Selection:
        p = _prepare(cls, candidates, params)
        texts, answers = _compare_texts(candidates, p)
        scores = mbr_scores(utility_matrix(p["utility"], texts))
        n = len(candidates)
        return _result(cls, candidates, _argmax_first(scores), list(scores), answers,
                       utility=p["utility"], utility_evaluations=n * (n - 1))


def model_weights(candidates: Sequence[Candidate], texts: Sequence[str]
                  ) -> tuple[list[int], list[float]]:
    """MBMBR's reference distribution: the distinct outputs (grouped by compared
    text; the first candidate of each group represents it) with probabilities
    P(y) ∝ Σ exp(logprob) over the group's distinct samples (distinct token ids,
    or distinct texts where the engine gave none), normalized over the groups.
    Computed stably (log-sum-exp around the largest logprob)."""
    lps = _usable_logprobs(candidates)
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


@register_rule
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
    params = (n_param(8), *_MBR_PARAMS)

    @classmethod
    def select(cls, candidates: Sequence[Candidate],
               params: Mapping[str, Any] | None = None) -> Selection:
        p = _prepare(cls, candidates, params)
        texts, answers = _compare_texts(candidates, p)
        reps, weights = model_weights(candidates, texts)
        u = utility_matrix(p["utility"], texts, [texts[r] for r in reps])
        scores = [math.fsum(w * float(u[i, g]) for g, w in enumerate(weights))
                  for i in range(len(candidates))]
        return _result(cls, candidates, _argmax_first(scores), scores, answers,
                       utility=p["utility"], reference_positions=reps,
                       reference_weights=weights,
                       utility_evaluations=len(candidates) * len(reps))


@register_rule
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
        *_MBR_PARAMS,
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
        p = _prepare(cls, candidates, params)
        texts, answers = _compare_texts(candidates, p)
        n = len(candidates)
        full = n * (n - 1)
        if n == 1:
            return _result(cls, candidates, 0, [0.0], answers, utility=p["utility"],
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
        best = alive[_argmax_first([est[h] for h in alive])]
        scores: list[float | None] = [est[k] if k in alive else None for k in range(n)]
        return _result(cls, candidates, best, scores, answers, utility=p["utility"],
                       utility_evaluations=evaluations, utility_evaluations_full=full,
                       utility_evaluations_saved=full - evaluations, steps=steps)

    @classmethod
    def _prune(cls, u: np.ndarray, alive: list[int], refs: list[int], est: dict[int, float],
               rng: np.random.Generator, n_boot: int, alpha: float) -> list[int]:
        r = len(refs)
        leader = alive[_argmax_first([est[h] for h in alive])]
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


@register_rule
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
        *_MBR_PARAMS,
        Param("k", "int", 4, "size of the diverse set", minimum=1, maximum=MAX_CANDIDATES),
        Param("lambda", "float", 1.0, "λ: weight of the pairwise-similarity penalty",
              minimum=0.0, maximum=100.0),
    )

    @classmethod
    def select(cls, candidates: Sequence[Candidate],
               params: Mapping[str, Any] | None = None) -> Selection:
        p = _prepare(cls, candidates, params)
        texts, answers = _compare_texts(candidates, p)
        u = utility_matrix(p["utility"], texts)
        m = mbr_scores(u)
        n, lam = len(candidates), p["lambda"]
        sim = [[(float(u[i, j]) + float(u[j, i])) / 2 for j in range(n)] for i in range(n)]
        chosen: list[int] = []
        gains: list[float] = []
        for _ in range(min(p["k"], n)):
            rest = [i for i in range(n) if i not in chosen]
            g = [m[i] - lam * math.fsum(sim[i][j] for j in chosen) for i in rest]
            pick = _argmax_first(g)
            chosen.append(rest[pick])
            gains.append(g[pick])
        objective = math.fsum(m[i] for i in chosen) - lam * math.fsum(
            sim[a][b] for x, a in enumerate(chosen) for b in chosen[x + 1:])
        return _result(cls, candidates, chosen[0], list(m), answers, utility=p["utility"],
                       set=[candidates[i].index for i in chosen], set_positions=chosen,
                       gains=gains, objective=objective, utility_evaluations=n * (n - 1))


# -- model-aided/reward ---------------------------------------------------------------


@register_rule
class BestOfN(SelectionRule):
    """Best-of-N: return the candidate an external reward model scores highest.

    Reward/verifier ranking of N samples: Cobbe et al., "Training Verifiers to
    Solve Math Word Problems", 2021 (arXiv:2110.14168); Nakano et al., "WebGPT",
    2021 (arXiv:2112.09332).

        y* = argmax_i r(x, y_i)   (ties: earliest; NaN rewards never win).

    The engine fills ``Candidate.reward``; a missing reward is an error. With
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
              "policy model asked whether the answer is correct", choices=("verifier",)),
        Param("verifier_prompt", "str", "\nIs the answer above correct? Answer Yes or No.\nAnswer:",
              "text appended after each candidate before reading the yes/no label",
              max_length=500),
        Param("yes", "str", " Yes", "the 'correct' label (its first token is read)", max_length=20),
        Param("no", "str", " No", "the 'incorrect' label (its first token is read)", max_length=20),
    )

    @classmethod
    def select(cls, candidates: Sequence[Candidate],
               params: Mapping[str, Any] | None = None) -> Selection:
        _prepare(cls, candidates, params)
        rewards = []
        for k, c in enumerate(candidates):
            if c.reward is None:
                raise ValueError(f"best_of_n needs a reward for every candidate "
                                 f"(candidates[{k}] has none)")
            rewards.append(float(c.reward))
        ranked = [r if not math.isnan(r) else -math.inf for r in rewards]
        position = _argmax_first(ranked)
        return _result(cls, candidates, position, list(rewards),
                       all_nan=all(math.isnan(r) for r in rewards))


__all__ = [
    "BestOfN",
    "DiverseMBR",
    "EarlyStoppingSelfConsistency",
    "MinimumBayesRisk",
    "ModelBasedMBR",
    "PrunedMBR",
    "SelectionRule",
    "SelfConsistency",
    "majority_vote",
    "mbr_scores",
    "model_weights",
    "should_stop",
]
