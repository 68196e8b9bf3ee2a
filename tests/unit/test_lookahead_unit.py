"""Lookahead decoding's window and verify-tree layout (``engine/speculative/lookahead.py``).

The 2D window must be a tree whose node ``(level l, column c)`` sits at
relative position ``c + l + 1``, hanging off level ``l - 1`` in its column;
composed with the pool's tree it must give SGLang's verify step the positions
and first-child/next-sibling links a reference walk of the parents gives. The
Jacobi step must shift the levels and hand out only trajectories the model
produced.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from sglang_ilsi.engine.speculative import lookahead
from sglang_ilsi.engine.speculative.lookahead import JacobiWindow, WindowShape
from sglang_ilsi.methods.speculative import lookahead as lookahead_declaration

# The CPU stand-in of SGLang's tree-index kernel (the one the server runs here).
_SPEC = Path(lookahead.__file__).parents[1] / "cpu" / "shim" / "sgl_kernel" / "_spec.py"


def _reconstruct():
    spec = importlib.util.spec_from_file_location("ilsi_shim_spec", _SPEC)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reconstruct_indices_from_tree_mask


SHAPES = [WindowShape(1, 2), WindowShape(4, 2), WindowShape(3, 3), WindowShape(4, 5)]


def reference_parents(shape: WindowShape) -> list[int]:
    """Each window node's parent (-1: the root), from the paper's layout."""
    parents = []
    for level in range(shape.levels):
        for column in range(shape.window):
            if level > 0:
                parents.append(shape.index(level - 1, column))
            else:
                parents.append(shape.index(0, column - 1) if column > 0 else -1)
    return parents


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_window_mask_is_the_ancestor_closure_of_the_layout(shape):
    parents = reference_parents(shape)
    expected = np.zeros((shape.nodes, shape.nodes), dtype=bool)
    for node in range(shape.nodes):
        j = node
        while j != -1:
            expected[node, j] = True
            j = parents[j]
    np.testing.assert_array_equal(lookahead.window_mask(shape), expected)
    # every node's parent comes before it, as SGLang's tree walk assumes
    assert all(p < i for i, p in enumerate(parents))


def _composed(shape: WindowShape, bs: int = 2, pool: int = 4):
    rng = np.random.default_rng(0)
    pool_tokens = rng.integers(5, 100, size=bs * pool)
    pool_mask = np.zeros((bs, pool, pool), dtype=bool)
    for b in range(bs):  # root, a chain of two, and a second child of the root
        pool_mask[b] = np.tril(np.ones((pool, pool), dtype=bool))
        pool_mask[b, pool - 1, 1:pool - 1] = False
    window = rng.integers(100, 200, size=(bs, shape.nodes))
    tokens, mask = lookahead.compose_tree(pool_tokens, pool_mask.reshape(-1), window, shape)
    return pool_tokens, pool_mask, window, tokens, mask


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_composed_tree_positions_and_links(shape):
    reconstruct_indices_from_tree_mask = _reconstruct()
    bs, pool = 2, 4
    pool_tokens, pool_mask, window, tokens, mask = _composed(shape, bs, pool)
    total = pool + shape.nodes
    np.testing.assert_array_equal(tokens.reshape(bs, total)[:, :pool], pool_tokens.reshape(bs, pool))
    np.testing.assert_array_equal(tokens.reshape(bs, total)[:, pool:], window)
    full = mask.reshape(bs, total, total)
    np.testing.assert_array_equal(full[:, :pool, :pool], pool_mask)
    assert not full[:, :pool, pool:].any()  # the pool never sees the window

    seq_lens = torch.tensor([7, 11])
    positions = torch.empty(bs * total, dtype=torch.long)
    index, next_token, next_sibling = (torch.empty(bs, total, dtype=torch.long) for _ in range(3))
    reconstruct_indices_from_tree_mask(torch.from_numpy(mask), seq_lens, positions, index,
                                       next_token, next_sibling, bs, total)
    parents = [pool + p if p >= 0 else 0 for p in reference_parents(shape)]
    for b in range(bs):
        for level in range(shape.levels):
            for column in range(shape.window):
                node = pool + shape.index(level, column)
                assert positions[b * total + node] == seq_lens[b] + column + level + 1
        # first child / next sibling, from the parents alone
        all_parents = [-1, 0, 1, 0, *parents]
        for node in range(total):
            children = [i for i in range(total) if all_parents[i] == node]
            assert next_token[b, node] == (children[0] if children else -1)
            if node:
                siblings = [i for i in range(node + 1, total)
                            if all_parents[i] == all_parents[node]]
                assert next_sibling[b, node] == (siblings[0] if siblings else -1)


def _successor(token: int) -> int:
    """A deterministic toy model whose next token depends on the last only."""
    return (token * 7 + 3) % 101


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_jacobi_steps_shift_levels_and_collect_model_trajectories(shape):
    window = JacobiWindow(shape, seed=list(range(40, 60)))
    assert window.tokens() == [t for level in window.levels for t in level]
    collected = []
    for step in range(shape.levels + 3):
        before = [list(level) for level in window.levels]
        predicted = [_successor(t) for t in before[-1]]
        ngrams = window.advance(predicted)
        assert window.levels == [*before[1:], predicted]
        # only once every level but the oldest came from the model
        assert bool(ngrams) == (step >= shape.levels - 1)
        collected.extend(ngrams)
    assert collected
    for ngram in collected:
        assert len(ngram) == shape.ngram
        # every token after the first is the model's successor of the one before
        assert all(b == _successor(a) for a, b in zip(ngram, ngram[1:]))
    with pytest.raises(ValueError, match="expected"):
        window.advance([1] * (shape.window + 1))


def test_window_seeds_from_the_prompt_tail():
    window = JacobiWindow(WindowShape(3, 3), seed=[1, 2, 3, 4, 5, 6, 7])
    assert window.levels == [[3, 4, 5], [4, 5, 6]]
    assert JacobiWindow(WindowShape(2, 2), seed=[]).levels == [[0, 0]]


def test_shapes_and_budgets():
    assert lookahead_declaration.parse_shape(" 5 ,4") == WindowShape(5, 4)
    assert WindowShape(4, 3).nodes == 8
    assert lookahead_declaration.pool_size(12, WindowShape(4, 3)) == 4
    with pytest.raises(ValueError, match="needs at least 10"):
        lookahead_declaration.pool_size(9, WindowShape(4, 3))
    for bad in ("4", "4,3,2", "-1,3", "x,3"):
        with pytest.raises(ValueError, match="expected W,N"):
            lookahead_declaration.parse_shape(bad)


_TOUCH_POINTS = """
import inspect

from sglang_ilsi.engine.cpu import portability

portability.activate()  # without CUDA, SGLang's kernels package needs the stand-in
from sglang.srt.speculative.cpp_ngram.ngram_corpus import NgramCorpus
from sglang.srt.speculative.ngram_worker import NGRAMWorker

from sglang_ilsi.engine.speculative.lookahead_worker import LookaheadWorker

assert issubclass(LookaheadWorker, NGRAMWorker)
expected = {
    "_prepare_draft_tokens": ["self", "batch"],
    "forward_batch_generation": ["self", "batch", "on_publish", "pp_proxy_tensors"],
    "clear_cache_pool": ["self"],
    "__init__": ["self", "server_args", "gpu_id", "nccl_port", "target_worker"],
}
for name, params in expected.items():
    assert list(inspect.signature(getattr(NGRAMWorker, name)).parameters) == params, name
# the pool's tree comes root first, in the layout compose_tree expects
corpus = NgramCorpus(max_trie_depth=6, draft_token_num=4, capacity=1000)
corpus.batch_put([[5, 6, 7, 8]])
corpus.synchronize()
tokens, mask = corpus.batch_get(["r"], [[1, 2, 5]], [3])
assert tokens.shape == (4,) and tokens[0] == 5 and mask.shape == (16,), (tokens, mask)
assert mask.reshape(4, 4)[:, 0].all()
# both registered algorithms answer the scheduler's predicates as their built-in paths do
from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

from sglang_ilsi.engine.speculative import lookahead
from sglang_ilsi.methods.speculative import lookahead as lookahead_declaration
from sglang_ilsi.engine.speculative import self_speculative

lookahead.register()
self_speculative.register()
la = SpeculativeAlgorithm.from_string("LOOKAHEAD")
assert la.is_ngram() and not la.has_draft_kv() and not la.need_topk()
assert not la.carries_draft_hidden_states() and not la.is_standalone()
ss = SpeculativeAlgorithm.from_string("SELF_SPECULATIVE")
assert ss.is_standalone() and ss.need_topk() and ss.has_draft_kv() and not ss.is_ngram()
print("ok")
"""


def test_sglang_touch_points_of_the_worker():
    """The NGRAM worker methods LookaheadWorker overrides or calls (SGLang 0.5.23),
    checked in a fresh interpreter (importing SGLang's worker activates the CPU shim)."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _TOUCH_POINTS], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]


def test_draft_sources_follow_the_greedy_path():
    shape, pool, bs = WindowShape(3, 3), 4, 2
    pool_tokens, pool_mask, window, tokens, mask = _composed(shape, bs, pool)
    total = pool + shape.nodes
    rows = tokens.reshape(bs, total)
    argmax = np.full((bs, total), -1)
    # row 0: root -> pool node 1 -> pool node 2 (the chain of two)
    argmax[0, 0], argmax[0, 1] = rows[0, 1], rows[0, 2]
    # row 1: root -> window (0,0) -> (0,1) -> (1,1) (up the column)
    w = [pool + shape.index(0, 0), pool + shape.index(0, 1), pool + shape.index(1, 1)]
    argmax[1, 0], argmax[1, w[0]], argmax[1, w[1]] = rows[1, w[0]], rows[1, w[1]], rows[1, w[2]]
    tree = mask.reshape(bs, total, total)
    assert lookahead.greedy_walk(rows[0], tree[0], argmax[0], pool) == (2, "pool")
    assert lookahead.greedy_walk(rows[1], tree[1], argmax[1], pool) == (3, "window")
    sources = lookahead.DraftSources(pool)
    sources.count(tokens, mask, argmax, np.array([2, 3]))
    sources.count(tokens, mask, argmax, np.array([0, 1]))  # row 1 sampled: not the walk
    assert sources.accepted == {"pool": 2, "window": 3, "other": 1}
    assert sources.steps == 2 and "3 via the lookahead window" in sources.summary()
