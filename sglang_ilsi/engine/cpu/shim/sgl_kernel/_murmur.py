"""``murmur_hash32_cpu``: the hash behind SGLang's seeded (Gumbel-max) sampling.

SGLang calls it as ``torch.ops.sgl_kernel.murmur_hash32_cpu.default`` from
``sglang.kernels.ops.sampling.murmur_hash`` when the tensors live on the CPU,
and the caller may be inside ``torch.compile``, so it is registered as a real
torch custom op with a fake (shape-only) implementation.

All arithmetic runs in int64 on values kept in ``[0, 2**32)``; products are
split into 16-bit halves so no intermediate exceeds 2**49 (no overflow).
"""

from __future__ import annotations

import torch

__all__ = ["murmur_hash32", "register"]

_MASK32 = 0xFFFFFFFF
_C1 = 0xCC9E2D51
_C2 = 0x1B873593
_N = 0xE6546B64


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for ``0 <= x < 2**32`` without int64 overflow."""
    lo = c & 0xFFFF
    hi = c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _MASK32


def _rotl32(x: torch.Tensor, r: int) -> torch.Tensor:
    return ((x << r) | (x >> (32 - r))) & _MASK32


def _mix(h: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """One MurmurHash3 (x86, 32-bit) body round: scramble block ``k`` into ``h``."""
    k = _mul32(k, _C1)
    k = _rotl32(k, 15)
    k = _mul32(k, _C2)
    h = h ^ k
    h = _rotl32(h, 13)
    return (h * 5 + _N) & _MASK32


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def _as_int64_bits(t: torch.Tensor) -> torch.Tensor:
    """Integer tensor as int64 with the same low 64 bits (uint64 reinterpreted)."""
    if t.dtype == torch.int64:
        return t
    if t.dtype == torch.uint64:
        return t.contiguous().view(torch.int64)
    return t.to(torch.int64)


def murmur_hash32(
    seed: torch.Tensor, positions: torch.Tensor, col_indices: torch.Tensor
) -> torch.Tensor:
    """Per-(row, column) 32-bit hashes, shape ``[n, m]``, dtype uint32.

    ``seed`` ``[n]`` (uint64, or any integer type), ``positions`` ``[n]`` and
    ``col_indices`` ``[m]`` (low 32 bits used). Element ``(i, j)`` is
    MurmurHash3_x86_32 with hash seed 0 over the 16 bytes
    ``seed[i]`` (low word, high word), ``positions[i]``, ``col_indices[j]``
    (little-endian 32-bit blocks), i.e. four body rounds, ``h ^= 16`` and the
    ``fmix32`` finaliser.
    """
    if seed.dim() != 1 or positions.dim() != 1 or col_indices.dim() != 1:
        raise ValueError("murmur_hash32_cpu expects 1-D seed, positions and col_indices")
    if seed.shape != positions.shape:
        raise ValueError("seed and positions must have the same shape (n,)")
    s = _as_int64_bits(seed)
    h = torch.zeros_like(s)
    h = _mix(h, s & _MASK32)
    h = _mix(h, (s >> 32) & _MASK32)
    h = _mix(h, _as_int64_bits(positions) & _MASK32)
    cols = _as_int64_bits(col_indices) & _MASK32
    h = _mix(h[:, None], cols[None, :])
    h = h ^ 16
    return _fmix32(h).to(torch.uint32)


def register() -> None:
    """Register ``torch.ops.sgl_kernel.murmur_hash32_cpu`` once per process.

    Safe to call repeatedly (e.g. when the package is imported again after
    being dropped from ``sys.modules``), and a no-op when some other library
    already defined the op.
    """
    try:
        torch.ops.sgl_kernel.murmur_hash32_cpu  # noqa: B018
        return
    except (AttributeError, RuntimeError):
        pass

    @torch.library.custom_op("sgl_kernel::murmur_hash32_cpu", mutates_args=(), device_types="cpu")
    def _murmur_hash32_cpu(
        seed: torch.Tensor, positions: torch.Tensor, col_indices: torch.Tensor
    ) -> torch.Tensor:
        return murmur_hash32(seed, positions, col_indices)

    @_murmur_hash32_cpu.register_fake
    def _(seed: torch.Tensor, positions: torch.Tensor, col_indices: torch.Tensor) -> torch.Tensor:
        return seed.new_empty((seed.shape[0], col_indices.shape[0]), dtype=torch.uint32)
