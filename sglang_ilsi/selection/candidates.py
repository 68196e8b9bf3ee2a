"""The data that flows between the engine and the selection rules.

The engine forks N continuations of one request, turns each finished one into a
:class:`Candidate` and hands the list (in generation order) to a rule's
``select``, which returns a :class:`Selection`. Neither type knows about SGLang.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Candidate:
    """One sampled continuation.

    ``index`` is the engine's number for the fork (0..N-1, reported back in
    :attr:`Selection.index`); ``logprob`` is the cumulative log-probability of
    ``token_ids`` under the model (natural log; None where the engine did not
    record it); ``reward`` is the score of an external reward model / verifier,
    filled in by the engine only for rules that declare the ``"reward"`` need;
    ``confidence`` holds the ``confidence`` method's statistics of this
    candidate (token confidence, self-certainty, whether it was stopped), filled
    in only for rules that declare the ``"confidence"`` need.
    """

    index: int
    text: str
    token_ids: Sequence[int] = ()
    logprob: float | None = None
    finish_reason: str | None = None
    reward: float | None = None
    confidence: Mapping[str, float] | None = None


@dataclass
class Selection:
    """The outcome of a selection rule.

    ``index`` is the chosen candidate's :attr:`Candidate.index`; ``position`` its
    position in the list passed to ``select``. ``scores[k]`` is the rule's score
    of the k-th candidate in that list (None where it has none, e.g. a hypothesis
    pruned early); ``answers[k]`` the extracted answer where the rule extracts
    answers. ``info`` holds rule-specific, JSON-able details (``samples_used``,
    ``samples_saved``, ``utility_evaluations``, the chosen set, ...).
    """

    method: str
    index: int
    position: int
    scores: list[float | None]
    answers: list[str | None] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (non-finite floats become None)."""
        out: dict[str, Any] = {
            "method": self.method,
            "index": self.index,
            "position": self.position,
            "scores": [_json_float(s) for s in self.scores],
        }
        if self.answers is not None:
            out["answers"] = list(self.answers)
        out["info"] = _jsonable(self.info)
        return out


def check_candidates(candidates: Sequence[Candidate]) -> None:
    """Refuse an empty list or items that are not :class:`Candidate` (an engine bug,
    hence ValueError/TypeError rather than a request error)."""
    if len(candidates) == 0:
        raise ValueError("selection needs at least one candidate")
    for k, c in enumerate(candidates):
        if not isinstance(c, Candidate):
            raise TypeError(f"candidates[{k}] is {type(c).__name__}, expected Candidate")


def _json_float(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _json_float(value)
    # numpy scalars and the like
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return str(value)
