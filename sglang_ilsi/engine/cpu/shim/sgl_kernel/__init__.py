"""sglang-ilsi's pure-PyTorch stand-in for ``sgl_kernel`` on machines without CUDA.

SGLang's CPU engine imports a handful of ``sgl_kernel`` ops at module import
time, but the ``sglang-kernel`` wheel is CUDA-only. ``sglang_ilsi`` puts this
package first on ``sys.path`` only when its plugin is enabled and no CUDA
device exists (see ``sglang_ilsi/engine/cpu/portability.py``).

What it provides: the bookkeeping ops of SGLang's CPU path (request-to-token
table writes, KV slot copies, speculative-decoding trees) and the
``torch.ops.sgl_kernel.murmur_hash32_cpu`` op used by seeded sampling. What it
deliberately does not provide: any AMX compute kernel, and in particular
``convert_weight_packed``, whose presence SGLang takes as "AMX kernels exist".
Any other attribute raises ``AttributeError`` so that SGLang's ``hasattr``
probes fall back to its portable code paths.

Only ``torch`` (and the standard library) is imported.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import NoReturn

import torch

from . import _murmur
from ._spec import (
    build_tree_kernel_efficient_cpu,
    reconstruct_indices_from_tree_mask,
    verify_tree_greedy_cpu,
)

__version__ = "0.0.0+sglang-ilsi-cpu"

__all__ = [
    "__version__",
    "assign_draft_cache_locs_contiguous_cpu",
    "assign_extend_cache_locs_cpu",
    "assign_req_to_token_pool_cpu",
    "build_draft_decode_metadata_cpu",
    "build_tree_kernel_efficient_cpu",
    "copy_all_layer_kv_cache_cpu",
    "fill_accept_out_cache_loc_cpu",
    "fill_bonus_tokens_cpu",
    "murmur_hash32_cpu",
    "reconstruct_indices_from_tree_mask",
    "rotate_input_ids_cpu",
    "speculative",
    "verify_tree_greedy_cpu",
]

_murmur.register()


def _i64(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).to(torch.int64)


def _segments(lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """For per-request lengths (negatives count as 0): the request of every
    flat token, the token's offset inside its request, and the total."""
    lengths = lengths.clamp(min=0)
    total = int(lengths.sum()) if lengths.numel() else 0
    req = torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    offset = torch.arange(total, device=lengths.device) - starts[req]
    return req, offset, total


def _table_index(
    table: torch.Tensor, pool_len: int, rows: torch.Tensor, cols: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Index a ``[rows, pool_len]`` token table: a 2-D index when the table
    has that shape, else a flat index ``row * pool_len + col`` (contiguous
    tables only), as the native kernels address it."""
    if table.dim() == 2 and table.shape[1] == pool_len:
        return table, (rows, cols)
    return table.view(-1), (rows * pool_len + cols,)


def assign_req_to_token_pool_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    start_offset: torch.Tensor,
    end_offset: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
) -> None:
    """Write KV slots into the request-to-token table (in place).

    For request ``i`` (in order), the next ``end_offset[i] - start_offset[i]``
    entries of the flat ``out_cache_loc`` go to
    ``req_to_token[req_pool_indices[i], start_offset[i]:end_offset[i]]``; the
    flat array is consumed request after request.
    """
    start = _i64(start_offset)
    req, offset, total = _segments(_i64(end_offset) - start)
    if total == 0:
        return
    rows = _i64(req_pool_indices)[req]
    cols = start[req] + offset
    target, index = _table_index(req_to_token, pool_len, rows, cols)
    target[index] = out_cache_loc.reshape(-1)[:total].to(target.dtype)


def assign_extend_cache_locs_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    start_offset: torch.Tensor,
    end_offset: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
) -> None:
    """Gather KV slots from the request-to-token table (``out_cache_loc`` in place).

    The inverse of :func:`assign_req_to_token_pool_cpu`: the slots
    ``req_to_token[req_pool_indices[i], start_offset[i]:end_offset[i]]`` of
    every request, concatenated in request order, are written to the front of
    the flat ``out_cache_loc``.
    """
    start = _i64(start_offset)
    req, offset, total = _segments(_i64(end_offset) - start)
    if total == 0:
        return
    rows = _i64(req_pool_indices)[req]
    cols = start[req] + offset
    source, index = _table_index(req_to_token, pool_len, rows, cols)
    out_cache_loc.view(-1)[:total] = source[index].to(out_cache_loc.dtype)


def assign_draft_cache_locs_contiguous_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    seq_lens: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
    topk: int,
    num_steps: int,
) -> None:
    """Copy each request's draft KV slots into a contiguous block (in place).

    With ``c = topk * num_steps``: ``out_cache_loc[i * c + k] =
    req_to_token[req_pool_indices[i], seq_lens[i] + k]`` for ``k < c``.
    """
    count = int(topk) * int(num_steps)
    bs = seq_lens.numel()
    if bs == 0 or count <= 0:
        return
    k = torch.arange(count, device=seq_lens.device)
    rows = _i64(req_pool_indices)[:, None].expand(bs, count)
    cols = _i64(seq_lens)[:, None] + k[None, :]
    source, index = _table_index(req_to_token, pool_len, rows.reshape(-1), cols.reshape(-1))
    out_cache_loc.view(-1)[: bs * count] = source[index].to(out_cache_loc.dtype)


def build_draft_decode_metadata_cpu(
    req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor,
    seq_lens: torch.Tensor,
    topk: int,
    num_steps: int,
    pool_len: int,
) -> torch.Tensor:
    """Per-branch token tables for multi-step draft decoding (returns a new tensor).

    Returns ``[bs * topk, pool_len]`` (dtype of ``req_to_token``). Row
    ``i * topk + t`` holds the prefix slots ``req_to_token[r, :seq_len]``
    (``r = req_pool_indices[i]``), then branch ``t``'s ``num_steps`` draft
    slots ``req_to_token[r, seq_len + t * num_steps : seq_len + (t + 1) * num_steps]``;
    the rest of the row is 0. (Only used by the intel_amx attention backend.)
    """
    topk = int(topk)
    num_steps = int(num_steps)
    bs = seq_lens.numel()
    out = torch.zeros((bs * topk, pool_len), dtype=req_to_token.dtype, device=req_to_token.device)
    if bs == 0 or topk == 0:
        return out
    seq = _i64(seq_lens)[:, None, None]
    col = torch.arange(pool_len, device=out.device)[None, None, :]
    branch = torch.arange(topk, device=out.device)[None, :, None]
    src_col = torch.where(col < seq, col, col + branch * num_steps)
    valid = col < seq + num_steps
    src_col = torch.where(valid, src_col, 0).expand(bs, topk, pool_len)
    rows = _i64(req_pool_indices)[:, None, None].expand(bs, topk, pool_len)
    source, index = _table_index(req_to_token, pool_len, rows.reshape(-1), src_col.reshape(-1))
    values = source[index].view(bs, topk, pool_len)
    values = torch.where(valid, values, torch.zeros((), dtype=values.dtype))
    out.copy_(values.reshape(bs * topk, pool_len))
    return out


def fill_accept_out_cache_loc_cpu(
    accept_index: torch.Tensor,
    out_cache_loc: torch.Tensor,
    accept_out_cache_loc: torch.Tensor,
) -> None:
    """Compact the KV slots of accepted tokens (in place).

    Walking ``accept_index`` in row-major order, every entry ``> -1`` selects
    ``out_cache_loc[entry]``; the selected slots are written, in order, to the
    front of ``accept_out_cache_loc`` (the rest is left untouched).
    """
    flat = _i64(accept_index)
    chosen = flat[flat > -1]
    if chosen.numel() == 0:
        return
    values = out_cache_loc.reshape(-1)[chosen]
    accept_out_cache_loc.view(-1)[: chosen.numel()] = values.to(accept_out_cache_loc.dtype)


def fill_bonus_tokens_cpu(
    accept_tokens: torch.Tensor,
    accept_lens: torch.Tensor,
    bonus_tokens: torch.Tensor,
    accept_stride: int,
) -> None:
    """Pick each request's last accepted token (``bonus_tokens`` in place).

    ``bonus_tokens[i] = accept_tokens.flat[i * accept_stride + accept_lens[i] - 1]``
    (``accept_lens`` counts the bonus token, so it is at least 1).
    """
    lens = _i64(accept_lens)
    bs = lens.numel()
    if bs == 0:
        return
    index = torch.arange(bs, device=lens.device) * int(accept_stride) + lens - 1
    values = accept_tokens.reshape(-1)[index]
    bonus_tokens.view(-1)[:bs] = values.to(bonus_tokens.dtype)


def rotate_input_ids_cpu(
    input_ids: torch.Tensor,
    extend_start_loc: torch.Tensor,
    extend_seq_lens: torch.Tensor,
    topk_index: torch.Tensor,
    select_index: torch.Tensor | None = None,
) -> None:
    """Advance each request's draft input window by one token (in place).

    For request ``i`` with segment ``s = extend_start_loc[i]``,
    ``L = extend_seq_lens[i]``: ``input_ids[s : s + L - 1]`` takes the old
    values of ``input_ids[s + 1 : s + L]`` (shift left by one), then, if
    ``L > 0``, the new token ``topk_index[i]`` is stored at ``s + L - 1`` or,
    when ``select_index`` is given, at ``select_index[i]`` (a flat index into
    ``input_ids``). All shifts happen before any new token is stored.
    """
    lens = _i64(extend_seq_lens)
    bs = lens.numel()
    if bs == 0:
        return
    start = _i64(extend_start_loc)
    flat = input_ids.view(-1)
    req, offset, total = _segments(lens - 1)
    if total:
        dst = start[req] + offset
        flat[dst] = flat[dst + 1].clone()
    has_tokens = lens > 0
    if not bool(has_tokens.any()):
        return
    if select_index is not None:
        where = _i64(select_index)[:bs]
    else:
        where = start + lens - 1
    new_tokens = topk_index.reshape(-1)[:bs]
    flat[where[has_tokens]] = new_tokens[has_tokens].to(flat.dtype)


def _view_bytes(address: int, nbytes: int) -> torch.Tensor:
    """A writable uint8 tensor aliasing ``nbytes`` of raw memory at ``address``."""
    to_memory = ctypes.pythonapi.PyMemoryView_FromMemory
    to_memory.restype = ctypes.py_object
    to_memory.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int)
    view = to_memory(ctypes.c_void_p(address), nbytes, 0x200)  # PyBUF_WRITE
    return torch.frombuffer(view, dtype=torch.uint8)


def copy_all_layer_kv_cache_cpu(
    data_ptrs: torch.Tensor,
    strides: torch.Tensor,
    tgt_loc: torch.Tensor,
    src_loc: torch.Tensor,
) -> None:
    """Copy KV rows ``src_loc[j] -> tgt_loc[j]`` in every buffer (in place).

    ``data_ptrs`` (uint64 ``[num_buffers]``) holds the base address of each
    CPU buffer (e.g. every layer's K and V cache) and ``strides`` the size in
    bytes of one row (one token slot) of that buffer; row ``r`` starts at
    ``base + r * stride``. Per buffer, all source rows are read before any
    target row is written, so overlapping source/target sets are safe. The
    caller guarantees that every referenced row lies inside its buffer.
    """
    count = tgt_loc.numel()
    if count == 0:
        return
    if src_loc.numel() != count:
        raise ValueError("tgt_loc and src_loc must have the same length")
    src = _i64(src_loc)
    tgt = _i64(tgt_loc)
    if bool((src < 0).any()) or bool((tgt < 0).any()):
        raise ValueError("KV cache locations must be non-negative")
    num_rows = int(torch.maximum(src.max(), tgt.max())) + 1
    ptrs = data_ptrs.reshape(-1)
    if ptrs.dtype == torch.uint64:
        ptrs = ptrs.contiguous().view(torch.int64)
    addresses = [p & 0xFFFFFFFFFFFFFFFF for p in ptrs.to(torch.int64).tolist()]
    row_bytes = [int(s) for s in strides.reshape(-1).tolist()]
    if len(row_bytes) != len(addresses):
        raise ValueError("data_ptrs and strides must have the same length")
    for address, stride in zip(addresses, row_bytes, strict=True):
        if stride <= 0:
            continue
        rows = _view_bytes(address, num_rows * stride).view(num_rows, stride)
        rows[tgt] = rows[src]  # the gather copies first: overlap-safe


def murmur_hash32_cpu(
    seed: torch.Tensor, positions: torch.Tensor, col_indices: torch.Tensor
) -> torch.Tensor:
    """Python-level alias of ``torch.ops.sgl_kernel.murmur_hash32_cpu``.

    Returns uint32 ``[n, m]``: MurmurHash3_x86_32 (hash seed 0) of the four
    32-bit blocks ``seed[i]`` low/high, ``positions[i]``, ``col_indices[j]``.
    """
    return _murmur.murmur_hash32(seed, positions, col_indices)


from . import speculative  # noqa: E402  (submodule; needs the names above)

_LOG_MISSING = os.environ.get("SGLANG_ILSI_SHIM_LOG", "0") not in ("", "0")
_reported: set[str] = set()


def __getattr__(name: str) -> NoReturn:
    """Anything not defined above is missing: raise AttributeError (hasattr-safe)."""
    if _LOG_MISSING and not name.startswith("__") and name not in _reported:
        _reported.add(name)
        print(f"[sglang-ilsi sgl_kernel stand-in] missing attribute: {name}", file=sys.stderr)
    raise AttributeError(
        f"sgl_kernel.{name} is not provided by sglang-ilsi's CPU stand-in "
        f"(pure-PyTorch sgl_kernel {__version__}); only the bookkeeping ops of "
        "SGLang's CPU path are implemented"
    )
