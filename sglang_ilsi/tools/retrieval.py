"""Retrieval over a local text folder named by the operator (``--ilsi-tool-retrieval-dir``).

The folder's ``.txt`` and ``.md`` files (recursively; symlinks that leave the
folder are skipped) are split into passages at blank lines (long paragraphs
are cut at ``MAX_PASSAGE_CHARS``), tokenized as lower-cased word characters,
and ranked with Okapi BM25 (Robertson & Zaragoza 2009) from the ``rank_bm25``
package, k1 = 1.5, b = 0.75:

    score(D, Q) = Σ_{q ∈ Q} IDF(q) · f(q, D) · (k1 + 1) / (f(q, D) + k1 · (1 − b + b · |D| / avgdl))

A query returns the ``k`` best-scoring passages among those that contain a
query word (none when no query word occurs in the folder; Okapi's IDF can be
negative for very common words, so the score alone does not decide a hit).
The index is built once, on first use.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

SUFFIXES = (".txt", ".md")
MAX_FILES = 10_000
MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_PASSAGE_CHARS = 1200
MAX_QUERY_CHARS = 512
_WORD = re.compile(r"\w+", re.UNICODE)


def tokenize(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


@dataclass(frozen=True)
class Passage:
    source: str  # path relative to the folder
    text: str


def load_passages(folder: str | Path) -> list[Passage]:
    """Every passage of the folder's text files, in path order."""
    root = Path(folder).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"retrieval folder not found: {folder}")
    passages: list[Passage] = []
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES)
    for path in files[:MAX_FILES]:
        real = path.resolve()
        if not real.is_file() or not real.is_relative_to(root):
            continue
        if real.stat().st_size > MAX_FILE_BYTES:
            continue
        text = real.read_text(encoding="utf-8", errors="replace")
        for para in re.split(r"\n\s*\n", text):
            para = " ".join(para.split())
            for i in range(0, len(para), MAX_PASSAGE_CHARS):
                piece = para[i:i + MAX_PASSAGE_CHARS]
                if piece:
                    passages.append(Passage(str(path.relative_to(root)), piece))
    return passages


class Retriever:
    """BM25 over one folder; thread-safe lazy index."""

    def __init__(self, folder: str | Path):
        self.folder = str(folder)
        self._lock = threading.Lock()
        self._index = None
        self._passages: list[Passage] = []
        self._terms: list[set[str]] = []

    def _ensure(self) -> None:
        with self._lock:
            if self._index is not None:
                return
            from rank_bm25 import BM25Okapi

            self._passages = load_passages(self.folder)
            corpus = [tokenize(p.text) for p in self._passages]
            self._terms = [set(words) for words in corpus]
            self._index = BM25Okapi(corpus or [[]])

    def search(self, query: str, k: int = 3) -> list[tuple[Passage, float]]:
        """The ``k`` best passages for ``query`` with a positive BM25 score."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError("query must be a non-empty string")
        if len(query) > MAX_QUERY_CHARS:
            raise ValueError(f"query longer than {MAX_QUERY_CHARS} characters")
        self._ensure()
        words = tokenize(query)
        if not words or not self._passages:
            return []
        scores = self._index.get_scores(words)
        query = set(words)
        # Okapi's IDF is negative for words in most passages (and in a one-passage
        # folder), so a hit is a passage sharing a word with the query, ranked by score.
        hits = [i for i, terms in enumerate(self._terms) if terms & query]
        hits.sort(key=lambda i: (-scores[i], i))
        return [(self._passages[i], float(scores[i])) for i in hits[:k]]
