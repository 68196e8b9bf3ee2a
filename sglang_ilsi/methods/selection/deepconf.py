"""DeepConf (Fu et al. 2025): confidence-filtered, confidence-weighted voting; online
it stops weak traces while they decode."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sglang_ilsi.methods.selection.base import (
    MAX_CANDIDATES,
    SelectionRule,
    checked_params,
    make_selection,
    n_param,
    weighted_vote,
)
from sglang_ilsi.params import IlsiRequestError, Param
from sglang_ilsi.registry import register
from sglang_ilsi.selection.candidates import Candidate, Selection
from sglang_ilsi.selection.extractors import extract_answers, extractor_params

MEASURES = {  # the trace confidence C_t, by the ``confidence`` method's statistic
    "lowest_group": "lowest_group_confidence",
    "tail": "tail_confidence",
    "mean": "mean_confidence",
}


def trace_confidence(candidate: Candidate, measure: str) -> float | None:
    stats = candidate.confidence or {}
    value = stats.get(MEASURES[measure])
    return float(value) if value is not None else None


def threshold(values: Sequence[float], keep_percent: float) -> float:
    """s = the (100 − η)-th percentile of the warm-up traces' confidences (linear
    interpolation, numpy's default)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), 100.0 - keep_percent))


@register
class DeepConf(SelectionRule):
    """DeepConf: vote with the most confident traces only, weighted by confidence;
    online, traces whose confidence drops are stopped inside the server.

    Fu, Wang, Tian & Zhao, "Deep Think with Confidence", 2025 (arXiv:2508.15260).

    Each candidate is measured while it decodes by the ``confidence`` method
    (token confidence C_i = −mean of the top-k log-probabilities; group
    confidence = its mean over a sliding window of w tokens). The trace
    confidence C_t is its lowest group confidence (or ``tail`` / ``mean``,
    offline only).

    offline: sample N; keep the ⌈η/100 · N⌉ traces with the highest C_t (ties:
      earlier first); V(a) = Σ_{kept t with answer a} C_t; answer argmax_a V(a).
    online: sample N_init warm-up traces; s = Percentile_{100−η}(C_t of the
      warm-up); sample the other N − N_init with the ``confidence`` method told to
      stop a trace at the first window whose group confidence is below s (its
      slot is freed at once). Voters: the traces not stopped with C_t ≥ s
      (warm-up included); same weighted vote.

    η = 10 is DeepConf-low (the paper's headline token savings), η = 90
    DeepConf-high. The returned candidate is the most confident voter of the
    winning answer (ties: earliest); with no answer among the voters, the most
    confident voter. ``scores[k]`` = C_t (None if unmeasured);
    ``info``: ``threshold`` (online), ``voters``, ``stopped``, ``votes``.
    """

    name = "deepconf"
    family = "independent/sampling"
    paper = "Fu, Wang, Tian & Zhao 2025, Deep Think with Confidence, arXiv:2508.15260"
    needs = frozenset({"samples", "confidence"})
    params = (
        n_param(16),
        Param("mode", "str", "online", "online: stop weak traces while decoding; offline: "
              "filter after all N finished", choices=("online", "offline")),
        Param("warmup", "int", 8, "N_init (online): warm-up traces that set the threshold",
              minimum=1, maximum=MAX_CANDIDATES),
        Param("keep_percent", "float", 10.0, "η: the percentage of most confident traces "
              "kept (10: DeepConf-low, 90: DeepConf-high)", minimum=0.0, maximum=100.0,
              exclusive_minimum=True),
        Param("measure", "str", "lowest_group", "the trace confidence (online: lowest_group "
              "only)", choices=tuple(MEASURES)),
        Param("window", "int", 16, "w: the group confidence's window, in tokens",
              minimum=1, maximum=4096),
        Param("top_k", "int", 20, "k: token confidence averages the k most probable "
              "log-probabilities", minimum=1, maximum=100),
        *extractor_params(),
    )

    @classmethod
    def validate(cls, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        params = super().validate(given)
        if params["mode"] == "online":
            if params["warmup"] >= params["n"]:
                raise IlsiRequestError("warmup", f"must be below n ({params['n']}) online")
            if params["measure"] != "lowest_group":
                raise IlsiRequestError("measure", "online mode stops and ranks traces by "
                                       "their lowest group confidence")
        return params

    @classmethod
    def round_size(cls, params: Mapping[str, Any], sampled: int) -> int:
        if params["mode"] == "online" and sampled == 0:
            return int(params["warmup"])
        return int(params["n"]) - sampled

    @classmethod
    def ends_candidates(cls, params: Mapping[str, Any]) -> bool:
        return params["mode"] == "online"

    @classmethod
    def meter(cls, params: Mapping[str, Any], sampled: Sequence[Candidate]) -> dict[str, Any]:
        stop_below = 0.0
        if params["mode"] == "online" and sampled:
            stop_below = cls.online_threshold(sampled, params)
        return {"top_k": params["top_k"], "window": params["window"], "stop_below": stop_below}

    @classmethod
    def online_threshold(cls, candidates: Sequence[Candidate], params: Mapping[str, Any]
                         ) -> float:
        warm = [trace_confidence(c, "lowest_group") for c in candidates[:params["warmup"]]]
        measured = [w for w in warm if w is not None]
        return threshold(measured, params["keep_percent"]) if measured else 0.0

    @classmethod
    def select(cls, candidates: Sequence[Candidate],
               params: Mapping[str, Any] | None = None) -> Selection:
        p = checked_params(cls, candidates, params)
        answers = extract_answers([c.text for c in candidates], p)
        weights = [trace_confidence(c, p["measure"]) for c in candidates]
        measured = [k for k, w in enumerate(weights) if w is not None]
        stopped = [k for k, c in enumerate(candidates)
                   if (c.confidence or {}).get("stopped", 0.0) > 0]
        info: dict[str, Any] = {"stopped": stopped}
        if p["mode"] == "offline":
            count = max(1, math.ceil(p["keep_percent"] / 100.0 * len(measured)))
            ranked = sorted(measured, key=lambda k: (-weights[k], k))
            voters = sorted(ranked[:count])
        else:
            bar = cls.online_threshold(candidates, p)
            info["threshold"] = bar
            voters = [k for k in measured if k not in stopped and weights[k] >= bar]
        full = [w if w is not None else 0.0 for w in weights]
        answer, votes = weighted_vote(answers, full, voters)
        pool = [k for k in voters if answers[k] == answer] if answer is not None else voters
        pool = pool or list(range(len(candidates)))
        position = max(pool, key=lambda k: (full[k], -k))
        return make_selection(cls, candidates, position, list(weights), answers,
                              **info, voters=voters, votes=votes, answer=answer,
                              samples_used=len(candidates))
