"""Small helpers shared by the built-in truncation methods.

Besides the bookkeeping helpers this module holds the few primitives the fast
paths of the methods are built from. They avoid full-vocabulary sorts, which
cost tens of milliseconds per step on CPU, and make the order of tied values
deterministic (lowest token id first) where ``torch.sort``/``torch.topk`` leave
it unspecified. On CPU tensors the row-wise selection and sorting primitives
use NumPy's SIMD partition/sort (an order of magnitude faster than
``torch.topk``/``torch.sort`` there); elsewhere they use torch. Both give the
same result: sort keys are unique, and callers of :func:`top_indices` never
depend on which tied value is picked at the boundary.

On CPU a step of a method is a handful of passes over ``[rows, vocab]`` floats,
and their cost is dominated by memory traffic: intermediates go to reusable
:func:`scratch` buffers (fresh multi-megabyte tensors fault in page by page),
bool masks are counted without widening (:func:`count_true`), and masked
selects avoid ``torch.where``'s per-entry branches when they would mispredict
(:func:`select`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import numpy as np
import torch

from sglang_ilsi.methods.base import RowContext, on_device

NEG_INF = float("-inf")
# exp(x) of float32 is subnormal below about -87.3 (and slow on x86); see exp_normal.
_EXP_FLOOR = -87.0
# exp(-87) as computed by the scalar and the vectorised kernels (the largest of them).
_EXP_FLOOR_VALUE = max(float(torch.tensor(_EXP_FLOOR).exp()),
                       float(torch.full((64,), _EXP_FLOOR).exp()[0]),
                       float(torch.tensor(np.exp(np.float32(_EXP_FLOOR)))))
_ID_MASK = 0xFFFFFFFF
_scratch = threading.local()
SMALL = 1 << 16  # entries: below this, per-op overhead dominates and plain ops are best
_SCRATCH_MAX_BYTES = 64 << 20  # larger intermediates are not kept between calls


def scratch(key: str, like: torch.Tensor, dtype: torch.dtype | None = None,
            shape: Sequence[int] | None = None) -> torch.Tensor:
    """An uninitialised tensor (``like``'s shape, dtype and device unless given) for an
    intermediate that does not outlive the current ``apply`` call: never returned,
    never stored in a row's state, and not handed to another call that uses the same
    ``key``. On CPU it is a view of a buffer kept per thread and key and reused from
    call to call: a fresh multi-megabyte tensor costs about 1 µs per 4 KiB page there
    (the allocator returns freed memory to the OS, so new pages fault in again), which
    is a large part of a step's cost. Elsewhere (and for small or very large shapes)
    it is simply a new tensor; a thread keeps at most one buffer per key and dtype,
    of at most 64 MiB (the largest shape it has seen)."""
    shape = tuple(like.shape if shape is None else shape)
    dtype = like.dtype if dtype is None else dtype
    n = math.prod(shape)
    if n < SMALL or n * dtype.itemsize > _SCRATCH_MAX_BYTES or like.device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=like.device)
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = {}
    buf = buffers.get((key, dtype))
    if buf is None or buf.numel() < n:
        buf = buffers[(key, dtype)] = torch.empty(max(n, 1), dtype=dtype)
    return buf[:n].view(shape)


def keep_argmax(keep: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``keep`` (bool ``[n, vocab]``) with each row's argmax of ``scores`` forced True."""
    return keep.scatter(-1, scores.argmax(dim=-1, keepdim=True), True)


def count_kept(keep: torch.Tensor, rows: Sequence[RowContext]) -> None:
    """Add each row's number of kept tokens to ``stats["kept_tokens"]`` (one sync per
    call), so the cost report shows the average support size."""
    add_kept(rows, count_true(keep).tolist())


def count_true(mask: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """The number of True entries of each row of the bool ``mask`` (int32), without the
    full int64 copy that ``mask.sum`` makes. Rows of a multiple of 8 entries are
    counted 8 at a time: the 8 bytes (0 or 1) of an int64 word times 0x0101010101010101
    leave their sum in the top byte."""
    if mask.numel() >= SMALL and mask.is_contiguous() and mask.shape[-1] % 8 == 0:
        words = mask.view(torch.int64)
        return ((words * 0x0101010101010101) >> 56).sum(dim=-1, keepdim=keepdim,
                                                          dtype=torch.int32)
    return mask.view(torch.uint8).sum(dim=-1, keepdim=keepdim, dtype=torch.int32)


def add_kept(rows: Sequence[RowContext], counts: Sequence[int]) -> None:
    """Add already-synced per-row kept counts to ``stats["kept_tokens"]``."""
    add_stat(rows, "kept_tokens", counts)


def add_stat(rows: Sequence[RowContext], key: str, values: Sequence[float]) -> None:
    """Add each row's value to its ``stats[key]``."""
    for row, value in zip(rows, values, strict=True):
        row.stats[key] = row.stats.get(key, 0.0) + float(value)


def defer_stat(rows: Sequence[RowContext], key: str, values: torch.Tensor) -> None:
    """Add ``values`` (one per row, a tensor on any device) to the rows' ``stats[key]``
    later, without reading it back now: on an accelerator a read is a host-device
    sync. The engine reads every deferred value of a step in one transfer, with the
    step's sampled tokens (:func:`flush_stats`); on a CPU tensor it is added now."""
    if values.device.type == "cpu":
        add_stat(rows, key, values.reshape(-1).tolist())
        return
    pending = getattr(_scratch, "pending", None)
    if pending is None:
        pending = _scratch.pending = []
    pending.append((rows, key, values.reshape(-1)))


def discard_stats() -> int:
    """Drop this thread's deferred stats (a dry run on the ``meta`` device has no
    values to read); returns how many entries were dropped."""
    pending = getattr(_scratch, "pending", None) or []
    _scratch.pending = []
    return len(pending)


def flush_stats(extra: torch.Tensor | None = None) -> list | None:
    """Add the stats deferred by :func:`defer_stat` (this thread's) to their rows, in
    one transfer; with ``extra`` (a tensor), read it in the same transfer and return
    it as a flat list (its values as Python ints if it has an integer dtype)."""
    pending = getattr(_scratch, "pending", None) or []
    _scratch.pending = []
    if not pending:
        return None if extra is None else extra.reshape(-1).tolist()
    parts = [values.to(torch.float64) for _, _, values in pending]
    if extra is not None:
        parts.append(extra.reshape(-1).to(device=parts[0].device, dtype=torch.float64))
    flat = torch.cat(parts).tolist()
    at = 0
    for rows, key, values in pending:
        add_stat(rows, key, flat[at:at + values.numel()])
        at += values.numel()
    if extra is None:
        return None
    rest = flat[at:]
    return [int(v) for v in rest] if not extra.dtype.is_floating_point else rest


def truncate(logits: torch.Tensor, keep: torch.Tensor, scores: torch.Tensor,
             rows: Sequence[RowContext], counts: list[int] | None = None) -> torch.Tensor:
    """``logits`` with the entries outside ``keep`` set to -inf, each row's argmax of
    ``scores`` kept, and ``stats["kept_tokens"]`` recorded (one sync).

    Same result as ``logits.masked_fill(~keep_argmax(keep, scores), -inf)`` plus
    :func:`count_kept` whenever every row's ``keep`` is an upper set of ``scores``
    (``scores[i] >= scores[j]`` and ``keep[j]`` imply ``keep[i]``), as for
    thresholds on a monotone function of the scores: a non-empty upper set
    already holds the argmax, so only empty rows need it added. ``counts`` (the
    rows' ``keep`` sums, if the caller already synced them) saves the sync.

    Off the CPU (``counts`` not given) nothing is read back: the empty rows get their
    argmax on the device and the counts are deferred (:func:`defer_stat`)."""
    if counts is None and logits.device.type != "cpu":
        return _truncate_on_device(logits, keep, scores, rows)
    if counts is None:
        counts = count_true(keep).tolist()
    counts = list(counts)
    out = select(keep, logits, counts)
    empty = [i for i, c in enumerate(counts) if c == 0]
    if empty:
        r = torch.tensor(empty, device=logits.device)
        top = scores.index_select(0, r).argmax(dim=-1)
        out[r, top] = logits[r, top]
        for i in empty:
            counts[i] = 1
    add_kept(rows, counts)
    return out


def _truncate_on_device(logits: torch.Tensor, keep: torch.Tensor, scores: torch.Tensor,
                        rows: Sequence[RowContext]) -> torch.Tensor:
    """:func:`truncate` without a host-device sync (the same result)."""
    kept = count_true(keep, keepdim=True)
    top = scores.argmax(dim=-1, keepdim=True)
    keep = keep.scatter(-1, top, keep.gather(-1, top) | (kept == 0))  # only empty rows change
    defer_stat(rows, "kept_tokens", kept.clamp(min=1))
    return torch.where(keep, logits, NEG_INF)


def select(keep: torch.Tensor, logits: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """``torch.where(keep, logits, -inf)`` (a new tensor), given each row's number of
    True entries. ``where`` branches per entry on CPU, which costs ~10 ns per entry
    when kept and removed tokens alternate at random (flat rows keeping a large part of
    the vocabulary); such batches use a branch-free min(logits, ±inf) instead."""
    vocab = keep.shape[-1]
    if keep.device.type != "cpu" or sum(min(c, vocab - c) for c in counts) * 10 <= keep.numel():
        return torch.where(keep, logits, NEG_INF)
    bound = scratch("select", logits).copy_(keep)  # 1.0 kept, 0.0 removed
    torch.threshold(bound, 0.5, NEG_INF, out=bound).mul_(float("inf"))  # +inf / -inf
    return torch.minimum(logits, bound)


def exp_normal(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``x.exp()``, except that results up to exp(-87) ≈ 1.6e-38 (just above float32's
    smallest normal number) are returned as 0. Identical to ``x.exp()`` elsewhere, and
    several times faster on CPU when ``x`` holds -inf or very negative entries (x86
    computes subnormal results in microcode)."""
    y = torch.clamp(x, min=_EXP_FLOOR, out=out).exp_()
    return torch.threshold(y, _EXP_FLOOR_VALUE, 0.0, out=y)


def order_keys(values: torch.Tensor, ids: torch.Tensor, descending: bool = False) -> torch.Tensor:
    """int64 sort keys for float32 ``values`` with token ``ids`` (same shape, ids in
    [0, 2^31)): ascending key order is the order of the values (descending if asked),
    ties broken by the lower id. Keys are unique within a row when ids are."""
    bits = (values.float() + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0
    mono = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # monotone in the float value
    if descending:
        mono = ~mono
    return mono.to(torch.int64) * (1 << 32) + ids.to(torch.int64)


def key_ids(keys: torch.Tensor) -> torch.Tensor:
    """The token ids packed into :func:`order_keys` keys."""
    return keys & _ID_MASK


def sort_rows(keys: torch.Tensor) -> torch.Tensor:
    """Each row of the int64 ``keys`` sorted ascending (a new tensor)."""
    if keys.device.type == "cpu" and keys.numel() >= SMALL:
        return torch.from_numpy(np.sort(keys.numpy(), axis=-1))
    return keys.sort(dim=-1).values


def top_indices(x: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices ``[n, k]`` of k largest entries of each row of ``x`` (k ≤ width),
    in no particular order; which of several tied values at the boundary is chosen
    is unspecified."""
    width = x.shape[-1]
    if k >= width:
        return torch.arange(width, device=x.device).expand(x.shape[0], width)
    if x.device.type == "cpu":
        idx = np.argpartition(x.detach().numpy(), width - k, axis=-1)[:, width - k:]
        return torch.from_numpy(np.ascontiguousarray(idx))
    return x.topk(k, dim=-1, sorted=False).indices


def add_sparse(logits: torch.Tensor, rows: list[int], cols: list[int],
               values: list[float]) -> torch.Tensor:
    """A copy of ``logits`` with ``values[k]`` added at ``(rows[k], cols[k])``
    (repeated positions add up); -inf entries stay -inf."""
    out = logits.clone()
    if rows:
        index = (on_device(rows, torch.long, logits.device),
                 on_device(cols, torch.long, logits.device))
        out.index_put_(index, on_device(values, out.dtype, out.device), accumulate=True)
    return out
