"""``sgl_kernel.speculative`` of the CPU stand-in: the speculative-decoding ops.

SGLang imports ``reconstruct_indices_from_tree_mask`` from here on every
device except CUDA/HIP/XPU; the other names are re-exported for symmetry with
the real package.
"""

from __future__ import annotations

from typing import NoReturn

from ._spec import (
    build_tree_kernel_efficient_cpu,
    reconstruct_indices_from_tree_mask,
    verify_tree_greedy_cpu,
)

__all__ = [
    "build_tree_kernel_efficient_cpu",
    "reconstruct_indices_from_tree_mask",
    "verify_tree_greedy_cpu",
]


def __getattr__(name: str) -> NoReturn:
    """Anything not defined here is missing: raise AttributeError (hasattr-safe)."""
    raise AttributeError(
        f"sgl_kernel.speculative.{name} is not provided by sglang-ilsi's CPU stand-in"
    )
