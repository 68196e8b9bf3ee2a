"""Unit tests for the torch_native TARGET_VERIFY attention (NGRAM on CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from sglang_ilsi.engine import patches
from sglang_ilsi.engine.cpu import portability, verify_attention

HEADS, KV_HEADS, DIM = 4, 2, 8


def _reference(q, keys, values, visible, scale):
    """Explicit softmax attention of one query over the visible key rows."""
    group = HEADS // KV_HEADS
    out = torch.empty(HEADS, values.shape[-1], dtype=torch.float64)
    for h in range(HEADS):
        k = keys[visible, h // group].double()
        v = values[visible, h // group].double()
        w = torch.softmax(k @ q[h].double() * scale, dim=0)
        out[h] = w @ v
    return out


def _setup(lens, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    slots = 64
    k_cache = torch.randn(slots, KV_HEADS, DIM, generator=g)
    v_cache = torch.randn(slots, KV_HEADS, DIM, generator=g)
    perm = torch.randperm(slots, generator=g)
    req_to_token = torch.zeros(4, 32, dtype=torch.int32)
    draft_locs, used = [], 0
    rows = [2, 0, 3][: len(lens)]
    for row, length in zip(rows, lens, strict=True):
        req_to_token[row, : length + n] = perm[used : used + length + n].to(torch.int32)
        draft_locs.append(req_to_token[row, length : length + n])
        used += length + n
    q = torch.randn(len(lens) * n, HEADS, DIM, generator=g)
    return q, k_cache, v_cache, req_to_token, torch.tensor(rows), torch.tensor(lens), torch.cat(draft_locs)


# parents of nodes 1..4 (node 0 is the root): a branching tree
PARENTS = [0, 0, 1, 1]


def _tree_mask(parents, n):
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        j = i
        while True:
            mask[i, j] = True
            if j == 0:
                break
            j = parents[j - 1]
    return mask


@pytest.mark.parametrize("lens", [[5], [3, 7], [0, 4, 9]])
def test_matches_explicit_tree_attention(lens):
    n = 5
    q, kc, vc, r2t, rows, seq, drafts = _setup(lens, n)
    tree = _tree_mask(PARENTS, n)
    mask = tree.repeat(len(lens), 1, 1).reshape(-1)
    scale = 1 / math.sqrt(DIM)
    out = verify_attention.tree_verify_attention(q, kc, vc, r2t, rows, seq, drafts, mask, n,
                                                scale=scale)
    for b, length in enumerate(lens):
        row_slots = r2t[rows[b], : length + n].long()
        for i in range(n):
            visible = [*range(length), *(length + j for j in range(n) if tree[i, j])]
            ref = _reference(q[b * n + i], kc[row_slots], vc[row_slots], visible, scale)
            torch.testing.assert_close(out[b * n + i].double(), ref, atol=1e-5, rtol=1e-5)


def test_chain_equals_causal_attention():
    n, length = 4, 6
    q, kc, vc, r2t, rows, seq, drafts = _setup([length], n, seed=3)
    chain = torch.tril(torch.ones(n, n, dtype=torch.bool)).reshape(-1)
    out = verify_attention.tree_verify_attention(q, kc, vc, r2t, rows, seq, drafts, chain, n)
    slots = r2t[rows[0], : length + n].long()
    k = kc[slots].repeat_interleave(HEADS // KV_HEADS, dim=1).movedim(0, 1)
    v = vc[slots].repeat_interleave(HEADS // KV_HEADS, dim=1).movedim(0, 1)
    causal = torch.ones(n, length + n, dtype=torch.bool).tril(diagonal=length)
    ref = torch.nn.functional.scaled_dot_product_attention(q.movedim(0, 1), k, v, attn_mask=causal)
    torch.testing.assert_close(out, ref.movedim(0, 1), atol=1e-5, rtol=1e-5)


def test_full_layout_equals_compact_and_self_is_always_visible():
    lens, n = [3, 5], 5
    q, kc, vc, r2t, rows, seq, drafts = _setup(lens, n, seed=7)
    tree = _tree_mask(PARENTS, n)
    strict = tree & ~torch.eye(n, dtype=torch.bool)  # a mask without the diagonal
    compact = tree.repeat(2, 1, 1).reshape(-1)
    full = torch.cat([torch.cat((torch.ones(n, length, dtype=torch.bool), strict), 1).reshape(-1)
                      for length in lens])
    a = verify_attention.tree_verify_attention(q, kc, vc, r2t, rows, seq, drafts, compact, n)
    b = verify_attention.tree_verify_attention(q, kc, vc, r2t, rows, seq, drafts, full, n)
    torch.testing.assert_close(a, b)


def test_sliding_window_hides_old_keys():
    n, length, window = 3, 8, 4
    q, kc, vc, r2t, rows, seq, drafts = _setup([length], n, seed=11)
    chain = torch.tril(torch.ones(n, n, dtype=torch.bool)).reshape(-1)
    positions = torch.arange(length, length + n)
    out = verify_attention.tree_verify_attention(q, kc, vc, r2t, rows, seq, drafts, chain, n,
                                                scale=1.0, positions=positions,
                                                sliding_window=window)
    slots = r2t[rows[0], : length + n].long()
    for i in range(n):
        pos = length + i
        visible = [j for j in range(length + i + 1) if j >= pos - window]
        ref = _reference(q[i], kc[slots], vc[slots], visible, 1.0)
        torch.testing.assert_close(out[i].double(), ref, atol=1e-5, rtol=1e-5)


def test_short_mask_is_an_error():
    q, kc, vc, r2t, rows, seq, drafts = _setup([4], 3)
    with pytest.raises(ValueError, match="custom_mask"):
        verify_attention.tree_verify_attention(q, kc, vc, r2t, rows, seq, drafts,
                                              torch.ones(4, dtype=torch.bool), 3)


def test_touch_point_only_without_cuda(monkeypatch):
    target = "TorchNativeAttnBackend.forward_extend"
    monkeypatch.setattr(portability, "cuda_available", lambda: True)
    assert not any(target in tp.target for tp in patches._cpu_only_touch_points())
    monkeypatch.setattr(portability, "cuda_available", lambda: False)
    (tp,) = [tp for tp in patches._cpu_only_touch_points() if target in tp.target]
    assert tp.where == patches.WORKER and tp.kind == "AROUND"
