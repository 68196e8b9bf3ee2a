"""The on-disk cache of things sglang-ilsi derives (models built or converted,
self-speculative drafts): where it lives, and how a folder is built atomically."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_root() -> Path:
    base = os.environ.get("SGLANG_ILSI_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "sglang-ilsi"
    )
    return Path(base)


@contextmanager
def building(final: Path) -> Iterator[Path]:
    """A temporary folder beside ``final`` to build into; renamed to ``final``
    when the block succeeds, removed when it fails, so a cache never holds a
    half-written folder (if a concurrent build won, its folder is kept)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(tmp)
    else:
        tmp.rename(final)
