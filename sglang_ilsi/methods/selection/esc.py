"""Early-stopping self-consistency (Li et al. 2024): vote window by window."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sglang_ilsi.methods.selection.base import (
    MAX_CANDIDATES,
    SelectionRule,
    checked_params,
    majority_vote,
    make_selection,
    n_param,
    usable_logprobs,
    vote_scores,
)
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register
from sglang_ilsi.selection.candidates import Candidate, Selection
from sglang_ilsi.selection.extractors import (
    extract_answers,
    extractor_from_params,
    extractor_params,
)


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


@register
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
    def round_size(cls, params: Mapping[str, Any], sampled: int) -> int:
        return min(int(params["window"]), int(params["n"]) - sampled)

    @classmethod
    def enough(cls, candidates: Sequence[Candidate], params: Mapping[str, Any]) -> bool:
        extract = extractor_from_params(params)
        return should_stop([extract(c.text) for c in candidates], int(params["window"]))

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
        p = checked_params(cls, candidates, params)
        answers = extract_answers([c.text for c in candidates], p)
        used = cls.stopping_point(answers, p["window"])
        lps = usable_logprobs(candidates[:used])
        position, info = majority_vote(answers[:used], lps)
        scores: list[float | None] = list(vote_scores(answers[:used], max(info["voters"], 1)))
        scores += [None] * (len(candidates) - used)
        return make_selection(cls, candidates, position, scores, answers, **info,
                       window=p["window"], samples_used=used,
                       samples_saved=max(p["n"], len(candidates)) - used,
                       stopped_early=used < max(p["n"], len(candidates)))
