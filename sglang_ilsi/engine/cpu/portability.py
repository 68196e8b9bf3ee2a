"""Make SGLang serve on a machine without CUDA.

SGLang 0.5.23's CPU engine imports a few ``sgl_kernel`` ops at module import
time, but the ``sglang-kernel`` wheel on PyPI is CUDA-only, so stock SGLang
dies before serving (see ``shared/research/sglang-on-cpu.md``). When the plugin
is enabled and no CUDA device exists, :func:`activate` puts our pure-PyTorch
stand-in package ``sgl_kernel`` (``engine/cpu/shim``) first on ``sys.path`` and
on ``PYTHONPATH`` (inherited by SGLang's spawned processes), and sets
``SGLANG_USE_CPU_ENGINE=1``, which SGLang's ``is_cpu()`` requires. On a CUDA
machine nothing here activates.

With several ranks (``--tp-size``/``--dp-size`` above 1), SGLang's CPU engine
binds each rank's OpenMP threads to one NUMA node unless
``SGLANG_CPU_OMP_THREADS_BIND`` says otherwise, and refuses more ranks than
nodes. :func:`bind_threads` then splits this process's cores among the ranks
(``"0|1"`` for two ranks on two cores), unless the operator set it.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

SHIM_DIR = str(Path(__file__).resolve().parent / "shim")


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def needed() -> bool:
    """True when SGLang would need the stand-in: no usable CUDA device."""
    return not cuda_available()


def activate() -> bool:
    """Install the stand-in for this process and its children. Idempotent.

    Returns True if the stand-in is (now) active.
    """
    if not needed():
        return False
    loaded = sys.modules.get("sgl_kernel")
    if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(SHIM_DIR):
        # The real package imported successfully (e.g. a CPU build of
        # sgl-kernel): leave it alone.
        return False
    if SHIM_DIR not in sys.path:
        sys.path.insert(0, SHIM_DIR)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if SHIM_DIR not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([SHIM_DIR, *parts])
    os.environ.setdefault("SGLANG_USE_CPU_ENGINE", "1")
    logger.info("sglang-ilsi: no CUDA device; using the pure-PyTorch sgl_kernel stand-in")
    return True


def is_active() -> bool:
    module = sys.modules.get("sgl_kernel")
    return module is not None and str(getattr(module, "__file__", "")).startswith(SHIM_DIR)


THREADS_BIND_ENV = "SGLANG_CPU_OMP_THREADS_BIND"


def thread_binding(cores: list[int], ranks: int) -> str:
    """SGLang's bind string giving ``ranks`` ranks contiguous, near-equal shares
    of ``cores``; with fewer cores than ranks, ranks share cores round-robin."""
    cores = sorted(cores)
    if ranks <= len(cores):
        base, extra = divmod(len(cores), ranks)
        groups, start = [], 0
        for rank in range(ranks):
            size = base + (1 if rank < extra else 0)
            groups.append(cores[start:start + size])
            start += size
    else:
        groups = [[cores[rank % len(cores)]] for rank in range(ranks)]
    return "|".join(",".join(str(c) for c in group) for group in groups)


def bind_threads(ranks: int) -> str | None:
    """Set ``SGLANG_CPU_OMP_THREADS_BIND`` for ``ranks`` ranks when SGLang would
    need it (no CUDA, more than one rank) and the operator did not; returns
    the value set, or None."""
    if ranks <= 1 or not needed() or os.environ.get(THREADS_BIND_ENV):
        return None
    value = thread_binding(sorted(os.sched_getaffinity(0)), ranks)
    os.environ[THREADS_BIND_ENV] = value
    logger.info("sglang-ilsi: %d ranks on CPU: %s=%s", ranks, THREADS_BIND_ENV, value)
    return value
