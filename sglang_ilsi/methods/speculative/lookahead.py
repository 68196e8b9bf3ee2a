"""Lookahead decoding: a Jacobi window's trajectories and an n-gram pool, verified in one forward.

Fu et al. 2024, Break the Sequential Dependency of LLM Inference Using Lookahead Decoding (ICML).

``--speculative-algorithm LOOKAHEAD`` with ``--ilsi-lookahead W,N``.
No draft model: W columns of N-1 Jacobi levels (default 4,3) beside an n-gram pool.
"""

from __future__ import annotations

from dataclasses import dataclass

from sglang_ilsi.methods.speculative.base import SpeculativeAlgorithm
from sglang_ilsi.registry import register


@register
class LookaheadDecoding(SpeculativeAlgorithm):
    """Lookahead decoding: a Jacobi window's trajectories and an n-gram pool, verified in one forward."""

    name = "lookahead"
    family = "independent/parallel"
    paper = ('Fu et al. 2024, Break the Sequential Dependency of LLM Inference Using Lookahead Decoding (ICML), arXiv:2402.02057')
    algorithm = "LOOKAHEAD"
    flags = ('--ilsi-lookahead W,N',)


@dataclass(frozen=True)
class WindowShape:
    """``W`` columns, ``N``-grams: ``N - 1`` levels of guesses."""

    window: int = 4
    ngram: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.window <= 64:
            raise ValueError(f"window must be between 1 and 64, got {self.window}")
        if not 2 <= self.ngram <= 16:
            raise ValueError(f"n-gram size must be between 2 and 16, got {self.ngram}")

    @property
    def levels(self) -> int:
        return self.ngram - 1

    @property
    def nodes(self) -> int:
        return self.window * self.levels

    def index(self, level: int, column: int) -> int:
        """A window node's index within the window (level-major)."""
        return level * self.window + column


def parse_shape(text: str) -> WindowShape:
    """``"W,N"`` → :class:`WindowShape` (ValueError on anything else)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"expected W,N (two positive integers), got {text!r}")
    return WindowShape(int(parts[0]), int(parts[1]))


def pool_size(draft_tokens: int, shape: WindowShape) -> int:
    """The verification branch's share of ``--speculative-num-draft-tokens``."""
    pool = draft_tokens - shape.nodes
    if pool < 2:
        raise ValueError(
            f"--speculative-num-draft-tokens {draft_tokens} leaves {pool} for the n-gram pool "
            f"after the lookahead window's {shape.nodes} nodes (W={shape.window}, "
            f"N={shape.ngram}); it needs at least {shape.nodes + 2}")
    return pool
