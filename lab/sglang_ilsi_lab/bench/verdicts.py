"""Verdicts: does a row's measurement show the claim its paper published?

The test depends on the claim's kind, declared with the claim
(:class:`~sglang_ilsi_lab.bench.spec.Published`):

- ``effect``: the paired effect's 95% CI on the published side of 0 is
  *reproduced*, a CI containing 0 *inconclusive*, one on the other side
  *opposite*.
- ``speed``: first the quality check (the effect CI within ±margin; margin 0:
  identical); then the wall-time ratio to the comparison row: *reproduced*
  when its bootstrap CI lies below 1 (*opposite* above 1, *inconclusive* when
  it contains 1). Where per-item times were not recorded, the recorded ratio
  of wall seconds per item is used as a point estimate, said so in the verdict:
  below 1 is *reproduced (point estimate)*, otherwise *not shown*.
- ``equivalence`` ("same quality at lower cost"): *reproduced* when the effect
  CI lies inside ±margin, the margin stated in the claim before the run, and
  the cost ratio is below 1; *not shown* otherwise.
- ``non_inferiority`` ("the same or better quality at lower cost"): *reproduced*
  when the effect CI's lower end lies above −margin and the cost ratio is below 1;
  *not shown* otherwise.
- ``by_construction``: the metric moves by construction under the method
  (perplexity under the same model after cutting the tail): *by construction
  (not evidence)*, never counted as reproduced.

A row whose setting was chosen on its own test items (``MethodSpec.chosen_on_test``)
gets *pending rerun* whatever its numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sglang_ilsi_lab.bench import stats
from sglang_ilsi_lab.bench.spec import Published

REPRODUCED = "reproduced"
INCONCLUSIVE = "inconclusive"
OPPOSITE = "opposite"
NOT_SHOWN = "not shown"
BY_CONSTRUCTION = "by construction"
PENDING_RERUN = "pending rerun"
NO_DATA = "no data"
OUTCOMES = (REPRODUCED, INCONCLUSIVE, OPPOSITE, NOT_SHOWN, BY_CONSTRUCTION, PENDING_RERUN,
            NO_DATA)
OUTCOME_TEXT = {REPRODUCED: "reproduced", INCONCLUSIVE: "inconclusive",
                OPPOSITE: "**opposite**", NOT_SHOWN: "not shown",
                BY_CONSTRUCTION: "by construction (not evidence)",
                PENDING_RERUN: "**pending rerun**", NO_DATA: "no data"}


@dataclass(frozen=True)
class Verdict:
    """An outcome (one of :data:`OUTCOMES`) and the test that gave it, in words."""

    kind: str  # the claim kind judged
    outcome: str
    test: str

    def text(self) -> str:
        return f"{OUTCOME_TEXT[self.outcome]} ({self.test})"


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ci(effect: dict[str, Any]) -> str:
    return f"[{_num(effect.get('ci_low'))}, {_num(effect.get('ci_high'))}]"


def _within(effect: dict[str, Any], margin: float) -> bool:
    low, high = effect.get("ci_low"), effect.get("ci_high")
    return low is not None and high is not None and -margin <= low and high <= margin


def improvement(effect: dict[str, Any], higher_is_better: bool) -> dict[str, Any]:
    """The effect turned so that positive means better."""
    if higher_is_better or effect.get("diff") is None:
        return effect
    return {**effect, "diff": -effect["diff"], "ci_low": -effect["ci_high"],
            "ci_high": -effect["ci_low"]}


def judge_effect(effect: dict[str, Any], expected_sign: int) -> Verdict:
    """The CI's side of 0 against the published sign (``effect`` oriented so that
    positive is better, see :func:`improvement`)."""
    outcome = stats.verdict(effect, expected_sign)
    side = {1: "above", -1: "below"}.get(expected_sign, "at")
    if outcome == NO_DATA:
        return Verdict("effect", NO_DATA, "effect test: no paired items")
    return Verdict("effect", outcome, f"effect test: CI {_ci(effect)} vs published side "
                   f"({side} 0)")


def _quality(effect: dict[str, Any], margin: float) -> tuple[bool, str]:
    """Whether the effect CI lies within ±``margin`` (0: identical), said in words."""
    same = _within(effect, margin)
    if margin == 0:
        return same, (f"metric {'identical' if same else 'not identical'} "
                      f"(effect CI {_ci(effect)})")
    return same, f"effect CI {_ci(effect)} {'within' if same else 'not within'} ±{margin:g}"


def judge_speed(effect: dict[str, Any], margin: float) -> Verdict:
    """Quality equal (within ±``margin``), then the wall-time ratio below 1."""
    if effect.get("ci_low") is None:
        return Verdict("speed", NO_DATA, "speed test: no paired items")
    same, quality = _quality(effect, margin)
    if not same:
        return Verdict("speed", NOT_SHOWN, f"speed test: quality check failed, {quality}")
    ratio = effect.get("time_ratio") or {}
    if ratio.get("ci_low") is not None:
        low, high = ratio["ci_low"], ratio["ci_high"]
        outcome = REPRODUCED if high < 1 else OPPOSITE if low > 1 else INCONCLUSIVE
        return Verdict("speed", outcome, f"speed test: time × {_num(ratio['ratio'], 2)} "
                       f"[{_num(low, 2)}, {_num(high, 2)}] (per-item latency, paired "
                       f"bootstrap CI) vs 1; {quality}")
    point = (effect.get("cost_ratio") or {}).get("seconds_per_item")
    if point is None or not math.isfinite(point):
        return Verdict("speed", NO_DATA, "speed test: no wall time recorded")
    outcome = REPRODUCED if point < 1 else NOT_SHOWN
    return Verdict("speed", outcome, f"speed test: time × {_num(point, 2)} "
                   f"{'<' if point < 1 else '≥'} 1, a point estimate (per-item times not "
                   f"recorded, no CI); {quality}")


def _cheaper(effect: dict[str, Any], cost_measure: str) -> tuple[bool, str]:
    """Whether the ``cost_measure`` ratio is below 1, said in words."""
    cost = (effect.get("cost_ratio") or {}).get(cost_measure)
    cheaper = cost is not None and cost < 1
    return cheaper, (f"{cost_measure.replace('_', ' ')} × {_num(cost, 2)} "
                     f"{'<' if cheaper else '≥'} 1")


def judge_equivalence(effect: dict[str, Any], margin: float, cost_measure: str) -> Verdict:
    """Effect CI inside ±``margin`` and the ``cost_measure`` ratio below 1."""
    if effect.get("ci_low") is None:
        return Verdict("equivalence", NO_DATA, "equivalence test: no paired items")
    inside = _within(effect, margin)
    cheaper, cost = _cheaper(effect, cost_measure)
    test = (f"equivalence test: effect CI {_ci(effect)} {'inside' if inside else 'not inside'} "
            f"±{margin:g} (margin stated in advance); {cost}")
    return Verdict("equivalence", REPRODUCED if inside and cheaper else NOT_SHOWN, test)


def judge_non_inferiority(effect: dict[str, Any], margin: float, cost_measure: str
                          ) -> Verdict:
    """Effect CI's lower end above −``margin`` and the ``cost_measure`` ratio below 1."""
    if effect.get("ci_low") is None:
        return Verdict("non_inferiority", NO_DATA, "non-inferiority test: no paired items")
    above = effect["ci_low"] > -margin
    cheaper, cost = _cheaper(effect, cost_measure)
    test = (f"non-inferiority test: effect CI {_ci(effect)} lower end "
            f"{'above' if above else 'not above'} -{margin:g} (margin stated in advance); "
            f"{cost}")
    return Verdict("non_inferiority", REPRODUCED if above and cheaper else NOT_SHOWN, test)


def judge(effect: dict[str, Any], claim: Published | None, *, expected_sign: int,
          higher_is_better: bool, chosen_on_test: str = "") -> Verdict:
    """The verdict on a row's first comparison for its claim's kind."""
    kind = claim.kind if claim is not None else "effect"
    if chosen_on_test:
        return Verdict(kind, PENDING_RERUN, f"not judged: {chosen_on_test}")
    if kind == "by_construction":
        return Verdict(kind, BY_CONSTRUCTION, "not judged: the metric moves this way by "
                       "construction under this method")
    oriented = improvement(effect, higher_is_better)
    margin = claim.margin if claim is not None and claim.margin is not None else 0.0
    if kind == "speed":
        return judge_speed(oriented, margin)
    if kind == "equivalence":
        assert claim is not None
        return judge_equivalence(oriented, margin, claim.cost_measure)
    if kind == "non_inferiority":
        assert claim is not None
        return judge_non_inferiority(oriented, margin, claim.cost_measure)
    return judge_effect(oriented, expected_sign)
