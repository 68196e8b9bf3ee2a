"""``--speculative-algorithm LOOKAHEAD``: lookahead decoding, registered with SGLang.

Lookahead decoding (Fu, Bailis, Stoica, Zhang 2024, "Break the Sequential
Dependency of LLM Inference Using Lookahead Decoding") needs no draft model.
Each step, one target forward runs two branches side by side:

* the **lookahead branch**, a 2D window of ``W`` columns and ``N - 1`` levels
  of Jacobi guesses. Level ``l``, column ``c`` sits at relative position
  ``c + l + 1`` after the current token; its parent is level ``l - 1`` in the
  same column (level 0 forms a chain from the current token). The target's
  prediction after the newest level becomes the next level (a Jacobi step,
  ``y_{l+1}[c] = argmax p(. | path to y_l[c])``), the oldest level is dropped,
  and each column's trajectory ``(y_0[c], ..., y_{N-2}[c], new[c])`` is an
  ``N``-gram each of whose tokens the target predicted after the one before;
* the **verification branch**: ``N``-grams from a pool, whose start matches
  the end of the text, proposed as a draft tree and verified exactly.

The paper's 2D window mask is a tree (every node's ancestors form one path),
so both branches fit SGLang's draft-tree verify step: the window's nodes are
appended to the pool's tree, and the whole tree is verified at once. Any
root path is a candidate, lookahead ones included. Verification is SGLang's
own (greedy, or target-only tree speculative sampling on CPU), so decoding is
lossless: greedy output equals plain greedy decoding token for token.

The pool is SGLang's n-gram trie (``NgramCorpus``, the one NGRAM uses). It
holds the text's own n-grams, as NGRAM's does, plus each step's window
trajectories.

Flags: ``--speculative-algorithm LOOKAHEAD [--ilsi-lookahead W,N]`` (default
``4,3``); ``--speculative-num-draft-tokens`` is the whole verified tree, so
the pool's tree gets what the window's ``W * (N - 1)`` nodes leave (default
8, root included: 16 verified tokens with the default window). ``--speculative-ngram-*`` flags shape the pool's tree as
they do for NGRAM.

This module holds the window and the tree layout (pure NumPy);
:mod:`sglang_ilsi.engine.speculative.lookahead_worker` is the SGLang worker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np

from sglang_ilsi.methods.speculative.lookahead import (
    LookaheadDecoding,
    WindowShape,
    pool_size,
)

logger = logging.getLogger(__name__)

ALGORITHM = LookaheadDecoding.algorithm
DEFAULT_POOL_TOKENS = 8  # the verification branch's tree, root included


@cache
def window_mask(shape: WindowShape) -> np.ndarray:
    """``mask[i, j]``: window node ``j`` is ``i`` itself or one of its ancestors
    (the current token, the tree's root, is not in the window). Built once per
    shape, read-only: every verify step reuses it."""
    mask = np.zeros((shape.nodes, shape.nodes), dtype=bool)
    for level in range(shape.levels):
        for column in range(shape.window):
            row = mask[shape.index(level, column)]
            row[[shape.index(0, c) for c in range(column + 1)]] = True
            row[[shape.index(lv, column) for lv in range(1, level + 1)]] = True
    mask.setflags(write=False)
    return mask


class JacobiWindow:
    """One request's 2D window of Jacobi guesses (``levels[l][c]``)."""

    def __init__(self, shape: WindowShape, seed: Sequence[int]) -> None:
        # The paper starts from random tokens; the prompt's tail is as good a
        # guess and keeps runs reproducible. Only speed depends on it.
        tail = list(seed)[-(shape.window + shape.levels):] or [0]
        self.shape = shape
        self.levels = [[int(tail[(c + lv) % len(tail)]) for c in range(shape.window)]
                       for lv in range(shape.levels)]
        self.model_levels = 0  # how many of the newest levels the target produced

    def tokens(self) -> list[int]:
        return [t for level in self.levels for t in level]

    def advance(self, predicted: Sequence[int]) -> list[list[int]]:
        """One Jacobi step: ``predicted[c]`` is the target's next token after
        the newest level's column ``c``. Returns the trajectories as
        ``N``-grams once every level but the oldest came from the target."""
        shape = self.shape
        if len(predicted) != shape.window:
            raise ValueError(f"expected {shape.window} predictions, got {len(predicted)}")
        ngrams: list[list[int]] = []
        if self.model_levels >= shape.levels - 1:
            ngrams = [[level[c] for level in self.levels] + [int(predicted[c])]
                      for c in range(shape.window)]
        self.levels = [*self.levels[1:], [int(t) for t in predicted]]
        self.model_levels = min(self.model_levels + 1, shape.levels)
        return ngrams


def compose_tree(pool_tokens: np.ndarray, pool_mask: np.ndarray,
                 window_tokens: np.ndarray, shape: WindowShape) -> tuple[np.ndarray, np.ndarray]:
    """The verify tree: each request's pool tree, then its window under the root.

    ``pool_tokens`` is ``(bs * G,)`` with each request's root first,
    ``pool_mask`` ``(bs * G * G,)``, ``window_tokens`` ``(bs, W * (N - 1))``.
    Returns ``(bs * D,)`` tokens and a ``(bs * D * D,)`` ancestor mask,
    ``D = G + W * (N - 1)``, in the layout SGLang's NGRAM verify reads.
    """
    bs, nodes = window_tokens.shape
    if nodes != shape.nodes:
        raise ValueError(f"window has {nodes} tokens, shape needs {shape.nodes}")
    pool = pool_tokens.size // bs
    total = pool + nodes
    tokens = np.concatenate(
        [pool_tokens.reshape(bs, pool), window_tokens.astype(pool_tokens.dtype)], axis=1)
    mask = np.zeros((bs, total, total), dtype=bool)
    mask[:, :pool, :pool] = pool_mask.reshape(bs, pool, pool)
    mask[:, pool:, 0] = True  # every window node descends from the root
    mask[:, pool:, pool:] = window_mask(shape)
    return tokens.reshape(-1), mask.reshape(-1)


class DraftSources:
    """Which branch supplied each step's accepted drafts (for the operator's log).

    A greedy verify walks the tree from the root, taking the first child whose
    token is the target's argmax at its parent; the branch of the first step
    (pool children come first, then the window's level-0 chain) names the
    source. Rows whose accepted length the walk does not reproduce (sampled
    rows) are counted as ``other``.
    """

    def __init__(self, pool_tokens: int) -> None:
        self.pool_tokens = pool_tokens
        self.steps = 0
        self.accepted = {"pool": 0, "window": 0, "other": 0}

    def count(self, tokens: np.ndarray, mask: np.ndarray, argmax: np.ndarray,
              accepted_drafts: np.ndarray) -> None:
        bs, total = argmax.shape
        tree = mask.reshape(bs, total, total)
        rows = tokens.reshape(bs, total)
        self.steps += 1
        for b in range(bs):
            drafts = int(accepted_drafts[b])
            if drafts:
                length, source = greedy_walk(rows[b], tree[b], argmax[b], self.pool_tokens)
                self.accepted[source if length == drafts else "other"] += drafts

    def summary(self) -> str:
        a = self.accepted
        return (f"{self.steps} verify steps; accepted drafts: {a['window']} via the lookahead "
                f"window, {a['pool']} via the n-gram pool, {a['other']} sampled")


def greedy_walk(tokens: np.ndarray, ancestors: np.ndarray, argmax: np.ndarray,
                pool_tokens: int) -> tuple[int, str | None]:
    """Drafts a greedy verify of one tree accepts, and their branch: ``"window"``
    when the path leaves the root through a window node (index ``>= pool_tokens``),
    ``"pool"`` otherwise, ``None`` when nothing is accepted."""
    total = len(tokens)
    # a node's parent is its last ancestor before it (-1: the root has none)
    earlier = ancestors & np.tri(total, k=-1, dtype=bool)
    parent = np.where(earlier.any(axis=1), total - 1 - earlier[:, ::-1].argmax(axis=1), -1)
    node, length, first = 0, 0, None
    while True:
        child = next((i for i in range(node + 1, total)
                      if parent[i] == node and tokens[i] == argmax[node]), None)
        if child is None:
            break
        first = child if first is None else first
        node, length = child, length + 1
    if first is None:
        return 0, None
    return length, "window" if first >= pool_tokens else "pool"


def shape_in_use() -> WindowShape:
    from sglang_ilsi.engine.http import api

    chosen = api.config().lookahead
    return WindowShape(*chosen) if chosen else WindowShape()


def register() -> None:
    """Register the algorithm in this process (idempotent)."""
    from sglang_ilsi.engine.speculative.algorithm_base import register_algorithm

    register_algorithm(ALGORITHM, "ngram", handle_server_args,
                       "sglang_ilsi.engine.speculative.lookahead_worker:LookaheadWorker")


def handle_server_args(server_args: Any) -> None:
    """SGLang's NGRAM launch defaults, sized for the window, run synchronously."""
    shape = shape_in_use()
    if getattr(server_args, "speculative_draft_model_path", None):
        raise ValueError(f"--speculative-algorithm {ALGORITHM} uses no draft model; "
                         "drop --speculative-draft-model-path")
    if getattr(server_args, "speculative_ngram_external_corpus_path", None):
        raise ValueError(f"--speculative-ngram-external-corpus-path is not supported with "
                         f"--speculative-algorithm {ALGORITHM}")
    if getattr(server_args, "speculative_num_draft_tokens", None) is None:
        server_args.speculative_num_draft_tokens = shape.nodes + DEFAULT_POOL_TOKENS
    pool_size(server_args.speculative_num_draft_tokens, shape)
    server_args.speculative_eagle_topk = server_args.speculative_ngram_max_bfs_breadth
    if getattr(server_args, "speculative_num_steps", None) is None:
        server_args.speculative_num_steps = max(
            1, server_args.speculative_num_draft_tokens // server_args.speculative_eagle_topk)
    if getattr(server_args, "max_running_requests", None) is None:
        server_args.max_running_requests = 48  # as SGLang does for NGRAM
    server_args.enable_mixed_chunk = False
    # The window advances on each verify's logits, before the next draft: the
    # worker is synchronous (the overlap scheduler drafts one step ahead).
    server_args.disable_overlap_schedule = True
    logger.info("sglang-ilsi: lookahead window W=%d N=%d, %d verified tokens per step",
                shape.window, shape.ngram, server_args.speculative_num_draft_tokens)
