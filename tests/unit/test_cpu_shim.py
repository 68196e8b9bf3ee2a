"""Unit tests for the pure-PyTorch ``sgl_kernel`` stand-in (engine/cpu/shim).

Every op is compared with a plain-Python reference over small random inputs
(several seeds) plus edge cases. The stand-in is imported by putting its
directory first on ``sys.path`` for this module only; afterwards the path
entry is removed and ``sgl_kernel`` dropped from ``sys.modules`` (restoring
whatever was there before), so other tests are unaffected.
"""

from __future__ import annotations

import importlib
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SHIM_DIR = str(Path(__file__).resolve().parents[2] / "sglang_ilsi" / "engine" / "cpu" / "shim")
SEEDS = [0, 1, 2, 3, 4, 5]
TREE_SEEDS = list(range(12))


def _sgl_modules() -> list[str]:
    return [k for k in sys.modules if k == "sgl_kernel" or k.startswith("sgl_kernel.")]


@pytest.fixture(scope="module")
def sk():
    saved = {k: sys.modules.pop(k) for k in _sgl_modules()}
    sys.path.insert(0, SHIM_DIR)
    try:
        module = importlib.import_module("sgl_kernel")
        assert str(module.__file__).startswith(SHIM_DIR)
        yield module
    finally:
        if SHIM_DIR in sys.path:
            sys.path.remove(SHIM_DIR)
        for k in _sgl_modules():
            del sys.modules[k]
        sys.modules.update(saved)


# --------------------------------------------------------------------------
# Package surface
# --------------------------------------------------------------------------

REQUIRED_OPS = [
    "assign_req_to_token_pool_cpu",
    "copy_all_layer_kv_cache_cpu",
    "build_tree_kernel_efficient_cpu",
    "verify_tree_greedy_cpu",
    "assign_draft_cache_locs_contiguous_cpu",
    "assign_extend_cache_locs_cpu",
    "fill_accept_out_cache_loc_cpu",
    "fill_bonus_tokens_cpu",
    "rotate_input_ids_cpu",
]


def test_surface(sk):
    assert sk.__version__ == "0.0.0+sglang-ilsi-cpu"
    for name in REQUIRED_OPS:
        fn = getattr(sk, name)
        assert callable(fn) and fn.__doc__
    from sgl_kernel.speculative import reconstruct_indices_from_tree_mask

    assert callable(reconstruct_indices_from_tree_mask)
    assert hasattr(torch.ops.sgl_kernel, "murmur_hash32_cpu")


def test_no_amx_marker_and_unknown_attributes(sk):
    assert not hasattr(sk, "convert_weight_packed")
    assert not hasattr(torch.ops.sgl_kernel, "convert_weight_packed")
    with pytest.raises(AttributeError, match="not provided by sglang-ilsi"):
        sk.some_unknown_op  # noqa: B018
    with pytest.raises(AttributeError):
        sk.speculative.some_unknown_op  # noqa: B018
    with pytest.raises(ImportError):
        from sgl_kernel import decode_attention_cpu  # noqa: F401
    with pytest.raises(ImportError):
        importlib.import_module("sgl_kernel.scalar_type")


def test_import_twice_is_safe(sk):
    saved = {k: sys.modules.pop(k) for k in _sgl_modules()}
    try:
        again = importlib.import_module("sgl_kernel")
        assert again is not sk
        out = torch.ops.sgl_kernel.murmur_hash32_cpu.default(
            torch.tensor([1], dtype=torch.uint64), torch.tensor([2]), torch.arange(3)
        )
        assert out.shape == (1, 3)
    finally:
        for k in _sgl_modules():
            del sys.modules[k]
        sys.modules.update(saved)


def test_imports_only_torch():
    code = (
        f"import sys; sys.path.insert(0, {SHIM_DIR!r}); import sgl_kernel, sgl_kernel.speculative; "
        "heavy = [m for m in ('sglang', 'triton', 'transformers', 'sgl_kernel.scalar_type') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------
# Request-to-token table ops
# --------------------------------------------------------------------------


def _rand_segments(rng: random.Random, num_rows: int, pool_len: int, max_bs: int = 4):
    bs = rng.randint(0, max_bs)
    rows = rng.sample(range(num_rows), bs)
    start, end = [], []
    for _ in range(bs):
        s = rng.randint(0, pool_len)
        e = s if rng.random() < 0.25 else rng.randint(s, pool_len)  # zero-token requests
        start.append(s)
        end.append(e)
    return rows, start, end


def ref_assign_req_to_token_pool(rows, table, start, end, out):
    table = table.clone()
    pt = 0
    for i, r in enumerate(rows):
        for c in range(start[i], end[i]):
            table[r, c] = out[pt]
            pt += 1
    return table


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("idx_dtype", [torch.int64, torch.int32])
def test_assign_req_to_token_pool(sk, seed, idx_dtype):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    num_rows, pool_len = 6, 12
    rows, start, end = _rand_segments(rng, num_rows, pool_len)
    total = sum(e - s for s, e in zip(start, end, strict=True))
    table = torch.randint(0, 1000, (num_rows, pool_len), dtype=torch.int32)
    out = torch.randint(1000, 2000, (total + 3,), dtype=torch.int64)
    expected = ref_assign_req_to_token_pool(rows, table, start, end, out)
    sk.assign_req_to_token_pool_cpu(
        torch.tensor(rows, dtype=idx_dtype),
        table,
        torch.tensor(start, dtype=idx_dtype),
        torch.tensor(end, dtype=idx_dtype),
        out,
        pool_len,
    )
    assert torch.equal(table, expected)


def test_assign_req_to_token_pool_empty_and_flat_table(sk):
    table = torch.zeros((3, 5), dtype=torch.int32)
    empty = torch.zeros((0,), dtype=torch.int64)
    sk.assign_req_to_token_pool_cpu(empty, table, empty, empty, empty, 5)
    assert not table.any()
    # A flat table addressed with pool_len as row stride.
    flat = torch.zeros(15, dtype=torch.int32)
    sk.assign_req_to_token_pool_cpu(
        torch.tensor([2, 0]),
        flat,
        torch.tensor([1, 0]),
        torch.tensor([3, 1]),
        torch.tensor([7, 8, 9]),
        5,
    )
    assert flat.view(3, 5)[2, 1:3].tolist() == [7, 8]
    assert flat.view(3, 5)[0, 0].item() == 9


def ref_assign_extend_cache_locs(rows, table, start, end, out):
    out = out.clone()
    pt = 0
    for i, r in enumerate(rows):
        for c in range(start[i], end[i]):
            out[pt] = table[r, c]
            pt += 1
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_assign_extend_cache_locs(sk, seed):
    rng = random.Random(seed)
    num_rows, pool_len = 5, 10
    rows, start, end = _rand_segments(rng, num_rows, pool_len)
    total = sum(e - s for s, e in zip(start, end, strict=True))
    table = torch.randint(0, 1000, (num_rows, pool_len), dtype=torch.int32)
    out = torch.full((total + 2,), -7, dtype=torch.int64)
    expected = ref_assign_extend_cache_locs(rows, table, start, end, out)
    sk.assign_extend_cache_locs_cpu(
        torch.tensor(rows, dtype=torch.int64),
        table,
        torch.tensor(start, dtype=torch.int64),
        torch.tensor(end, dtype=torch.int64),
        out,
        pool_len,
    )
    assert torch.equal(out, expected)


def test_assign_extend_cache_locs_front_window(sk):
    # SGLang's fill_front_out_cache_loc_func passes a [bs, w] window as table.
    window = torch.arange(12, dtype=torch.int64).view(3, 4)
    out = torch.zeros(12, dtype=torch.int64)
    sk.assign_extend_cache_locs_cpu(
        torch.arange(3),
        window.int(),
        torch.zeros(3, dtype=torch.int64),
        torch.tensor([2, 0, 3]),
        out,
        4,
    )
    assert out[:5].tolist() == [0, 1, 8, 9, 10]
    assert not out[5:].any()


def ref_assign_draft_cache_locs_contiguous(rows, table, seq_lens, out, topk, num_steps):
    out = out.clone()
    count = topk * num_steps
    for i, r in enumerate(rows):
        for k in range(count):
            out[i * count + k] = table[r, seq_lens[i] + k]
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_assign_draft_cache_locs_contiguous(sk, seed):
    rng = random.Random(seed)
    num_rows, pool_len = 6, 16
    topk, num_steps = rng.randint(1, 3), rng.randint(1, 3)
    bs = rng.randint(0, 4)
    rows = rng.sample(range(num_rows), bs)
    seq_lens = [rng.randint(0, pool_len - topk * num_steps) for _ in range(bs)]
    table = torch.randint(0, 1000, (num_rows, pool_len), dtype=torch.int32)
    out = torch.full((bs * topk * num_steps + 1,), -1, dtype=torch.int64)
    expected = ref_assign_draft_cache_locs_contiguous(rows, table, seq_lens, out, topk, num_steps)
    sk.assign_draft_cache_locs_contiguous_cpu(
        torch.tensor(rows, dtype=torch.int64),
        table,
        torch.tensor(seq_lens, dtype=torch.int64),
        out,
        pool_len,
        topk,
        num_steps,
    )
    assert torch.equal(out, expected)


def ref_build_draft_decode_metadata(table, rows, seq_lens, topk, num_steps, pool_len):
    out = torch.zeros((len(rows) * topk, pool_len), dtype=table.dtype)
    for i, r in enumerate(rows):
        seq = seq_lens[i]
        for t in range(topk):
            for c in range(seq):
                out[i * topk + t, c] = table[r, c]
            for s in range(num_steps):
                out[i * topk + t, seq + s] = table[r, seq + t * num_steps + s]
    return out


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_build_draft_decode_metadata(sk, seed):
    rng = random.Random(seed)
    num_rows, pool_len = 5, 20
    topk, num_steps = rng.randint(1, 3), rng.randint(1, 3)
    bs = rng.randint(0, 3)
    rows = rng.sample(range(num_rows), bs)
    seq_lens = [rng.randint(0, pool_len - topk * num_steps) for _ in range(bs)]
    table = torch.randint(1, 1000, (num_rows, pool_len), dtype=torch.int32)
    got = sk.build_draft_decode_metadata_cpu(
        table,
        torch.tensor(rows, dtype=torch.int64),
        torch.tensor(seq_lens, dtype=torch.int64),
        topk,
        num_steps,
        pool_len,
    )
    assert torch.equal(
        got, ref_build_draft_decode_metadata(table, rows, seq_lens, topk, num_steps, pool_len)
    )


# --------------------------------------------------------------------------
# Accept / bonus / rotate
# --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_fill_accept_out_cache_loc(sk, seed):
    rng = random.Random(seed)
    bs, width = rng.randint(0, 4), rng.randint(1, 4)
    size = bs * width
    out_cache_loc = torch.randint(0, 10_000, (size + 2,), dtype=torch.int64)
    flat = [rng.randrange(size) if rng.random() < 0.6 else -1 for _ in range(size)]
    accept_index = torch.tensor(flat, dtype=torch.int32).view(bs, width)
    dst = torch.full((size + 1,), -5, dtype=torch.int64)
    expected = dst.clone()
    j = 0
    for v in flat:
        if v > -1:
            expected[j] = out_cache_loc[v]
            j += 1
    sk.fill_accept_out_cache_loc_cpu(accept_index, out_cache_loc, dst)
    assert torch.equal(dst, expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_fill_bonus_tokens(sk, seed):
    rng = random.Random(seed)
    bs, stride = rng.randint(0, 5), rng.randint(1, 4)
    accept_tokens = torch.randint(0, 50_000, (bs * stride,), dtype=torch.int32)
    lens = [rng.randint(1, stride) for _ in range(bs)]
    bonus = torch.full((bs,), -1, dtype=torch.int32)
    expected = torch.tensor(
        [accept_tokens[i * stride + lens[i] - 1].item() for i in range(bs)], dtype=torch.int32
    )
    sk.fill_bonus_tokens_cpu(accept_tokens, torch.tensor(lens, dtype=torch.int32), bonus, stride)
    assert torch.equal(bonus, expected)


def ref_rotate(ids, start, lens, new, select):
    ids = list(ids)
    for i in range(len(lens)):
        s, n = start[i], lens[i]
        for k in range(n - 1):
            ids[s + k] = ids[s + k + 1]
        if n > 0:
            ids[select[i] if select is not None else s + n - 1] = new[i]
    return ids


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("use_select", [False, True])
def test_rotate_input_ids(sk, seed, use_select):
    rng = random.Random(seed)
    bs = rng.randint(0, 4)
    lens = [rng.randint(0, 4) for _ in range(bs)]
    start, pos = [], 0
    for n in lens:
        pos += rng.randint(0, 2)  # gaps between segments
        start.append(pos)
        pos += n
    ids = [rng.randrange(1000) for _ in range(pos + 2)]
    new = [rng.randrange(1000, 2000) for _ in range(bs)]
    select = [s + rng.randrange(n) if n else s for s, n in zip(start, lens, strict=True)]
    select = select if use_select else None
    expected = ref_rotate(ids, start, lens, new, select)
    t = torch.tensor(ids, dtype=torch.int64)
    sk.rotate_input_ids_cpu(
        t,
        torch.tensor(start, dtype=torch.int32),
        torch.tensor(lens, dtype=torch.int32),
        torch.tensor(new, dtype=torch.int64).view(bs, 1),
        torch.tensor(select, dtype=torch.int64) if select is not None else None,
    )
    assert t.tolist() == expected


# --------------------------------------------------------------------------
# KV copy through raw pointers
# --------------------------------------------------------------------------


def _kv_buffers(num_rows: int):
    return [
        torch.randn(num_rows, 2, 3, dtype=torch.float32),
        torch.randn(num_rows, 4, dtype=torch.bfloat16),
        torch.randint(-100, 100, (num_rows, 5), dtype=torch.int8),
        torch.randn(num_rows, 1, 8, dtype=torch.float16),
    ]


def _ptrs_and_strides(buffers):
    ptrs = torch.tensor([b.data_ptr() for b in buffers], dtype=torch.uint64)
    strides = torch.tensor([b.stride(0) * b.dtype.itemsize for b in buffers])
    return ptrs, strides


def ref_copy_rows(buffers, tgt, src):
    out = []
    for b in buffers:
        b = b.clone()
        rows = [b[s].clone() for s in src]  # read every source first
        for t, row in zip(tgt, rows, strict=True):
            b[t] = row
        out.append(b)
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_copy_all_layer_kv_cache_overlapping(sk, seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    num_rows = 10
    buffers = _kv_buffers(num_rows)
    count = rng.randint(1, 6)
    tgt = rng.sample(range(num_rows), count)  # distinct targets
    # sources deliberately overlap the targets (and may repeat)
    src = [rng.choice(tgt + [rng.randrange(num_rows)]) for _ in range(count)]
    expected = ref_copy_rows(buffers, tgt, src)
    ptrs, strides = _ptrs_and_strides(buffers)
    sk.copy_all_layer_kv_cache_cpu(
        ptrs, strides, torch.tensor(tgt, dtype=torch.int64), torch.tensor(src, dtype=torch.int64)
    )
    for got, exp in zip(buffers, expected, strict=True):
        assert torch.equal(got.view(torch.uint8), exp.view(torch.uint8))


def test_copy_all_layer_kv_cache_swap_and_edge_cases(sk):
    buffers = _kv_buffers(4)
    before = [b.clone() for b in buffers]
    ptrs, strides = _ptrs_and_strides(buffers)
    # swap rows 0 and 3: only correct if all reads happen before writes
    sk.copy_all_layer_kv_cache_cpu(ptrs, strides, torch.tensor([0, 3]), torch.tensor([3, 0]))
    for b, old in zip(buffers, before, strict=True):
        assert torch.equal(b[0], old[3]) and torch.equal(b[3], old[0])
        assert torch.equal(b[1:3], old[1:3])
    # SGLang's warm-up call (row 0 onto itself) and an empty copy change nothing
    snapshot = [b.clone() for b in buffers]
    sk.copy_all_layer_kv_cache_cpu(
        ptrs, strides, torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64)
    )
    empty = torch.zeros(0, dtype=torch.int64)
    sk.copy_all_layer_kv_cache_cpu(ptrs, strides, empty, empty)
    for b, old in zip(buffers, snapshot, strict=True):
        assert torch.equal(b, old)


# --------------------------------------------------------------------------
# EAGLE tree construction
# --------------------------------------------------------------------------


def _rows_of_step(step: int, topk: int) -> list[int]:
    return [0] if step == 0 else list(range(1 + (step - 1) * topk, 1 + step * topk))


def _rand_eagle_tree(rng: random.Random, topk: int, depth: int, want: int, valid: bool = True):
    """parent_list row [R] and sorted selected_index [want'] for one request."""
    num_rows = 1 + (depth - 1) * topk
    parent_list = [-1] * num_rows
    for r in range(1, num_rows):
        step = 1 + (r - 1) // topk
        prev = _rows_of_step(step - 1, topk)
        parent_list[r] = rng.choice(prev) * topk + rng.randrange(topk)
    num_cands = num_rows * topk
    if not valid:
        return parent_list, sorted(rng.sample(range(num_cands), min(want, num_cands)))
    chosen: set[int] = set()
    while len(chosen) < want:
        frontier = [
            c
            for c in range(num_cands)
            if c not in chosen and (c // topk == 0 or parent_list[c // topk] in chosen)
        ]
        if not frontier:
            break
        chosen.add(rng.choice(frontier))
    return parent_list, sorted(chosen)


def ref_build_tree(parent_list, sel, seq_lens, topk, n, mode, mask, next_tok, next_sib):
    """Plain loops: returns (mask, positions, retrieve_index, next_token, next_sibling)."""
    bs = len(seq_lens)
    mask = mask.clone().view(-1)
    mask_bytes = mask.view(torch.uint8) if mode == 2 else None
    nbytes = 4 if n > 16 else (2 if n > 8 else 1)
    positions = [0] * (bs * n)
    r_index = [[-1] * n for _ in range(bs)]
    nt = [list(r) for r in next_tok.tolist()]
    ns = [list(r) for r in next_sib.tolist()]

    def find(b, token):
        for p in range(n - 1):
            if sel[b][p] == token:
                return p
        return None

    for b in range(bs):
        seq = seq_lens[b]
        req_start = n * n * b + n * sum(seq_lens[:b])
        for tid in range(n):
            cols = {0}
            if tid == 0:
                positions[b * n] = seq
                for i in range(n - 1, 0, -1):
                    r_index[b][i] = b * n + i
                    parent_tb = sel[b][i - 1] // topk
                    pp = 0
                    if parent_tb > 0:
                        found = find(b, parent_list[b][parent_tb])
                        if found is None:
                            continue
                        pp = found + 1
                    if nt[b][pp] != -1:
                        ns[b][i] = nt[b][pp]
                    nt[b][pp] = i
                r_index[b][0] = b * n
            else:
                cur, depth_count = tid - 1, 0
                while True:
                    depth_count += 1
                    cols.add(cur + 1)
                    parent_tb = sel[b][cur] // topk
                    if parent_tb == 0:
                        break
                    found = find(b, parent_list[b][parent_tb])
                    if found is None:
                        break
                    cur = found
                positions[b * n + tid] = seq + depth_count
            if mode == 0:
                row = req_start + (seq + n) * tid + seq
                for j in range(n):
                    mask[row + j] = j in cols
            elif mode == 1:
                row = n * n * b + n * tid
                for j in range(n):
                    mask[row + j] = j in cols
            else:
                word = sum(1 << j for j in cols)
                base = (b * n + tid) * nbytes
                mask_bytes[base] = word & 0xFF
                for k in range(1, nbytes):
                    mask_bytes[base + k] |= (word >> (8 * k)) & 0xFF
    return mask, positions, r_index, nt, ns


def _tree_case(rng, bs, topk, depth, valid=True):
    want = rng.randint(min(2, topk), min(8, (1 + (depth - 1) * topk) * topk))
    trees = [_rand_eagle_tree(rng, topk, depth, want, valid) for _ in range(bs)]
    n = 1 + min((len(t[1]) for t in trees), default=want)
    parent_list = [t[0] for t in trees]
    sel = [t[1][: n - 1] for t in trees]
    return parent_list, sel, n


@pytest.mark.parametrize("seed", TREE_SEEDS)
@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("valid", [True, False])
def test_build_tree_kernel_efficient(sk, seed, mode, valid):
    rng = random.Random(seed * 7 + mode)
    topk, depth = rng.randint(1, 3), rng.randint(1, 4)
    bs = 0 if seed == 0 else rng.randint(1, 3)  # seed 0: empty batch
    parent_list, sel, n = _tree_case(rng, bs, topk, depth, valid)
    seq_lens = [rng.randint(0, 5) for _ in range(bs)]
    if mode == 0:
        mask = torch.ones(sum(seq_lens) * n + n * n * bs, dtype=torch.bool)
    elif mode == 1:
        mask = torch.ones(bs * n * n, dtype=torch.bool)
    else:
        mask = torch.zeros(
            bs * n, dtype=torch.uint8 if n <= 8 else torch.int16 if n <= 16 else torch.int32
        )
    width = 1 + (depth - 1) * topk
    parent_t = torch.tensor(parent_list, dtype=torch.int64).view(bs, width)
    sel_t = torch.tensor(sel, dtype=torch.int64).view(bs, n - 1)
    retrieve = torch.full((3, bs, n), -1, dtype=torch.int64)
    positions = torch.empty(bs * n, dtype=torch.int64)
    exp_mask, exp_pos, exp_ri, exp_nt, exp_ns = ref_build_tree(
        parent_list, sel, seq_lens, topk, n, mode, mask, retrieve[1], retrieve[2]
    )
    sk.build_tree_kernel_efficient_cpu(
        parent_t,
        sel_t,
        torch.tensor(seq_lens, dtype=torch.int64),
        mask,
        positions,
        retrieve[0],
        retrieve[1],
        retrieve[2],
        topk,
        depth,
        n,
        mode,
    )
    assert torch.equal(mask.view(-1), exp_mask)
    if bs:
        assert positions.tolist() == exp_pos
        assert retrieve[0].tolist() == exp_ri
        assert retrieve[1].tolist() == exp_nt
        assert retrieve[2].tolist() == exp_ns


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("want", [10, 19])
def test_build_tree_bitpacking_wide_words(sk, seed, want):
    # 10 draft nodes -> 11 tokens -> 2-byte rows; 19 -> 20 tokens -> 4-byte rows.
    rng = random.Random(400 + seed)
    topk, depth, bs = 4, 5, 2
    trees = [_rand_eagle_tree(rng, topk, depth, want) for _ in range(bs)]
    assert all(len(t[1]) == want for t in trees)
    n = want + 1
    parent_list = [t[0] for t in trees]
    sel = [t[1] for t in trees]
    mask = torch.zeros(bs * n, dtype=torch.uint16 if n <= 16 else torch.uint32)
    retrieve = torch.full((3, bs, n), -1, dtype=torch.int64)
    positions = torch.empty(bs * n, dtype=torch.int64)
    seq_lens = [3, 0]
    exp_mask, exp_pos, exp_ri, exp_nt, exp_ns = ref_build_tree(
        parent_list, sel, seq_lens, topk, n, 2, mask, retrieve[1], retrieve[2]
    )
    sk.build_tree_kernel_efficient_cpu(
        torch.tensor(parent_list),
        torch.tensor(sel),
        torch.tensor(seq_lens),
        mask,
        positions,
        *retrieve,
        topk,
        depth,
        n,
        2,
    )
    assert torch.equal(mask.view(torch.uint8), exp_mask.view(torch.uint8))
    assert positions.tolist() == exp_pos
    assert retrieve[1].tolist() == exp_nt and retrieve[2].tolist() == exp_ns


def test_build_tree_known_example(sk):
    # topk=2, depth=2: root -> candidates 0, 1; row 1 expands candidate 1 into 2, 3.
    parent_list = torch.tensor([[-1, 1]])
    sel = torch.tensor([[0, 1, 3]])  # nodes 1, 2 under the root; node 3 under node 2
    mask = torch.ones(16, dtype=torch.bool)
    retrieve = torch.full((3, 1, 4), -1, dtype=torch.int64)
    positions = torch.empty(4, dtype=torch.int64)
    sk.build_tree_kernel_efficient_cpu(
        parent_list, sel, torch.tensor([7]), mask, positions, *retrieve, 2, 2, 4, 1
    )
    assert positions.tolist() == [7, 8, 8, 9]
    assert mask.view(4, 4).int().tolist() == [
        [1, 0, 0, 0],
        [1, 1, 0, 0],
        [1, 0, 1, 0],
        [1, 0, 1, 1],
    ]
    assert retrieve[0].tolist() == [[0, 1, 2, 3]]
    assert retrieve[1].tolist() == [[1, -1, 3, -1]]
    assert retrieve[2].tolist() == [[-1, 2, -1, -1]]


# --------------------------------------------------------------------------
# Greedy tree verification
# --------------------------------------------------------------------------


def ref_verify_greedy(predicts, accept_index, candidates, r_index, r_next, r_sib, target):
    predicts = list(predicts)
    accept_index = [list(r) for r in accept_index]
    counts = []
    flat_target = [t for row in target for t in row]
    for b in range(len(candidates)):
        last = r_index[b][0]
        accept_index[b][0] = last
        accepted, cur = 0, 0
        for _ in range(1, len(accept_index[b])):
            cur = r_next[b][cur]
            while cur != -1:
                if candidates[b][cur] == flat_target[last]:
                    predicts[last] = flat_target[last]
                    accepted += 1
                    accept_index[b][accepted] = r_index[b][cur]
                    last = r_index[b][cur]
                    break
                cur = r_sib[b][cur]
            if cur == -1:
                break
        counts.append(accepted)
        predicts[last] = flat_target[last]
    return predicts, accept_index, counts


@pytest.mark.parametrize("seed", TREE_SEEDS)
def test_verify_tree_greedy(sk, seed):
    rng = random.Random(100 + seed)
    topk, depth = rng.randint(1, 3), rng.randint(1, 4)
    bs = 0 if seed == 0 else rng.randint(1, 4)
    parent_list, sel, n = _tree_case(rng, bs, topk, depth)
    width = 1 + (depth - 1) * topk
    retrieve = torch.full((3, bs, n), -1, dtype=torch.int64)
    sk.build_tree_kernel_efficient_cpu(
        torch.tensor(parent_list, dtype=torch.int64).view(bs, width),
        torch.tensor(sel, dtype=torch.int64).view(bs, n - 1),
        torch.zeros(bs, dtype=torch.int64),
        torch.ones(bs * n * n, dtype=torch.bool),
        torch.empty(bs * n, dtype=torch.int64),
        *retrieve,
        topk,
        depth,
        n,
        1,
    )
    vocab = 3  # small vocabulary: many matches
    candidates = torch.randint(0, vocab, (bs, n), generator=torch.Generator().manual_seed(seed))
    target = torch.randint(0, vocab, (bs, n), generator=torch.Generator().manual_seed(seed + 50))
    num_spec = depth + 1
    predicts = torch.zeros(bs * n, dtype=torch.int32)
    accept_index = torch.full((bs, num_spec), -1, dtype=torch.int32)
    accept_num = torch.empty(bs, dtype=torch.int32)
    exp_pred, exp_acc, exp_num = ref_verify_greedy(
        predicts.tolist(),
        accept_index.tolist(),
        candidates.tolist(),
        retrieve[0].tolist(),
        retrieve[1].tolist(),
        retrieve[2].tolist(),
        target.tolist(),
    )
    sk.verify_tree_greedy_cpu(
        predicts=predicts,
        accept_index=accept_index,
        accept_token_num=accept_num,
        candidates=candidates,
        retrive_index=retrieve[0],
        retrive_next_token=retrieve[1],
        retrive_next_sibling=retrieve[2],
        target_predict=target,
    )
    assert predicts.tolist() == exp_pred
    assert accept_index.tolist() == exp_acc
    assert accept_num.tolist() == exp_num


def test_verify_tree_greedy_chain(sk):
    # One request, chain root -> 1 -> 2 -> 3; drafts match the target up to node 2.
    candidates = torch.tensor([[5, 6, 7, 9]])
    target = torch.tensor([[6, 7, 8, 0]])  # target after node i
    r_index = torch.tensor([[0, 1, 2, 3]])
    r_next = torch.tensor([[1, 2, 3, -1]])
    r_sib = torch.full((1, 4), -1)
    predicts = torch.zeros(4, dtype=torch.int32)
    accept_index = torch.full((1, 4), -1, dtype=torch.int32)
    accept_num = torch.empty(1, dtype=torch.int32)
    sk.verify_tree_greedy_cpu(
        predicts, accept_index, accept_num, candidates, r_index, r_next, r_sib, target
    )
    assert accept_num.tolist() == [2]
    assert accept_index.tolist() == [[0, 1, 2, -1]]
    assert predicts.tolist() == [6, 7, 8, 0]  # two accepted + bonus 8 at node 2


def test_verify_tree_greedy_empty_batch(sk):
    e2 = torch.zeros((0, 4), dtype=torch.int64)
    sk.verify_tree_greedy_cpu(
        torch.zeros(0, dtype=torch.int32),
        torch.zeros((0, 3), dtype=torch.int32),
        torch.zeros(0, dtype=torch.int32),
        e2,
        e2,
        e2,
        e2,
        e2,
    )


# --------------------------------------------------------------------------
# NGRAM: reconstruct_indices_from_tree_mask
# --------------------------------------------------------------------------


def ref_reconstruct(mask, seq_lens, bs, n):
    m = mask.view(-1).tolist()
    pos, ri, nt, ns = [], [], [], []
    for b in range(bs):
        base = b * n * n
        rows_nt, rows_ns, rows_ri = [], [], []
        for t in range(n):
            depth, parent = 0, -1
            for i in range(t - 1, -1, -1):
                if m[base + t * n + i]:
                    depth += 1
                    if parent == -1:
                        parent = i
            pos.append(depth + seq_lens[b])
            rows_ri.append(b * n + t)
            nxt = -1
            for i in range(t + 1, n):
                if m[base + i * n + t]:
                    nxt = i
                    break
            rows_nt.append(nxt)
            sib = -1
            if parent != -1:
                for i in range(t + 1, n):
                    if m[base + i * n + parent] and not any(
                        m[base + i * n + j] for j in range(parent + 1, i)
                    ):
                        sib = i
                        break
            rows_ns.append(sib)
        ri.append(rows_ri)
        nt.append(rows_nt)
        ns.append(rows_ns)
    return pos, ri, nt, ns


def _rand_ngram_mask(rng, bs, n, tree: bool):
    masks = []
    for _ in range(bs):
        m = [[False] * n for _ in range(n)]
        if tree:
            parent = [-1] + [rng.randrange(i) for i in range(1, n)]
            for i in range(n):
                j = i
                while j != -1:
                    m[i][j] = True
                    j = parent[j]
        else:
            m = [[rng.random() < 0.4 for _ in range(n)] for _ in range(n)]
        masks.append(m)
    return torch.tensor(masks, dtype=torch.bool).view(-1)


@pytest.mark.parametrize("seed", TREE_SEEDS)
@pytest.mark.parametrize("tree", [True, False])
def test_reconstruct_indices_from_tree_mask(sk, seed, tree):
    from sgl_kernel.speculative import reconstruct_indices_from_tree_mask

    rng = random.Random(200 + seed)
    bs, n = (0 if seed == 0 else rng.randint(1, 4)), rng.randint(1, 8)
    mask = _rand_ngram_mask(rng, bs, n, tree)
    seq_lens = [rng.randint(0, 20) for _ in range(bs)]
    positions = torch.empty(bs * n, dtype=torch.int64)
    retrieve = torch.full((3, bs, n), -9, dtype=torch.int64)
    reconstruct_indices_from_tree_mask(
        mask, torch.tensor(seq_lens, dtype=torch.int64), positions, *retrieve, bs, n
    )
    exp_pos, exp_ri, exp_nt, exp_ns = ref_reconstruct(mask, seq_lens, bs, n)
    assert positions.tolist() == exp_pos
    if bs:
        assert retrieve[0].tolist() == exp_ri
        assert retrieve[1].tolist() == exp_nt
        assert retrieve[2].tolist() == exp_ns


# --------------------------------------------------------------------------
# murmur_hash32_cpu
# --------------------------------------------------------------------------


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """Textbook MurmurHash3_x86_32."""
    m32 = 0xFFFFFFFF

    def scramble(k: int) -> int:
        k = (k * 0xCC9E2D51) & m32
        k = ((k << 15) | (k >> 17)) & m32
        return (k * 0x1B873593) & m32

    h = seed
    nblocks = len(data) // 4
    for i in range(nblocks):
        h ^= scramble(int.from_bytes(data[4 * i : 4 * i + 4], "little"))
        h = ((h << 13) | (h >> 19)) & m32
        h = (h * 5 + 0xE6546B64) & m32
    tail = data[4 * nblocks :]
    if tail:
        h ^= scramble(int.from_bytes(tail, "little"))
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & m32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & m32
    return h ^ (h >> 16)


def test_murmur_reference_vectors():
    assert murmur3_32(b"", 0) == 0
    assert murmur3_32(b"", 1) == 0x514E28B7
    assert murmur3_32(b"test", 0) == 0xBA6BD213
    assert murmur3_32(b"Hello, world!", 1234) == 0xFAF6CDB3
    assert murmur3_32(b"The quick brown fox jumps over the lazy dog", 0x9747B28C) == 0x2FA826CD


def _ref_murmur(seeds, positions, cols):
    out = []
    for s, p in zip(seeds, positions, strict=True):
        row = []
        for c in cols:
            data = (
                (s & 0xFFFFFFFF).to_bytes(4, "little")
                + ((s >> 32) & 0xFFFFFFFF).to_bytes(4, "little")
                + (p & 0xFFFFFFFF).to_bytes(4, "little")
                + (c & 0xFFFFFFFF).to_bytes(4, "little")
            )
            row.append(murmur3_32(data, 0))
        out.append(row)
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_murmur_hash32_cpu(sk, seed):
    rng = random.Random(300 + seed)
    n, m = rng.randint(0, 4), rng.randint(0, 6)
    seeds = [
        rng.choice([0, 1, 2**32 - 1, 2**63 + 5, 2**64 - 1, rng.getrandbits(64)]) for _ in range(n)
    ]
    positions = [
        rng.choice([0, 7, 2**31, rng.getrandbits(32), rng.getrandbits(40)]) for _ in range(n)
    ]
    col_start = rng.choice([0, 2**32 - 3, 151_000])
    cols = list(range(col_start, col_start + m))
    seed_t = torch.tensor([s - 2**64 if s >= 2**63 else s for s in seeds], dtype=torch.int64).view(
        torch.uint64
    )
    pos_t = torch.tensor(positions, dtype=torch.int64)
    if seed % 2:
        pos_t = pos_t.to(torch.uint64)  # SGLang passes uint64 positions on some paths
    got = torch.ops.sgl_kernel.murmur_hash32_cpu.default(
        seed_t, pos_t, torch.tensor(cols, dtype=torch.int64)
    )
    assert got.dtype == torch.uint32 and got.shape == (n, m)
    assert got.to(torch.int64).tolist() == _ref_murmur(seeds, positions, cols)
    assert torch.equal(sk.murmur_hash32_cpu(seed_t, pos_t, torch.tensor(cols)), got)


def test_murmur_hash32_cpu_fake_tensor(sk):
    # SGLang's multinomial_with_seed is torch.compile'd; the op must trace.
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        seed = torch.empty(3, dtype=torch.uint64)
        out = torch.ops.sgl_kernel.murmur_hash32_cpu.default(
            seed, torch.empty(3, dtype=torch.int64), torch.empty(11, dtype=torch.int64)
        )
    assert out.shape == (3, 11) and out.dtype == torch.uint32
