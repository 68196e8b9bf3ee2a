"""Plain reference implementations of the logits methods, for the unit tests.

Written independently of ``sglang_ilsi.methods``: one row at a time, float64
numpy / Python math, sorting with ``sorted`` and quantities computed from their
textbook definitions rather than the closed forms the batched code uses. Each
function takes one row of raw logits (a 1-D array, ``-inf`` for masked entries)
and returns the transformed row, like ``apply`` does for that row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

NEG_INF = float("-inf")


# -- helpers ------------------------------------------------------------------------


def temp(t: float) -> float:
    """SGLang's convention: a temperature of (about) 0 means greedy, scale by 1."""
    return t if t > 1e-6 else 1.0


def probs(row: np.ndarray, t: float = 1.0) -> np.ndarray:
    """softmax(row / t) in float64; masked entries get probability 0."""
    x = np.asarray(row, dtype=np.float64) / temp(t)
    finite = np.isfinite(x)
    top = x[finite].max()
    e = np.zeros_like(x)
    e[finite] = np.exp(x[finite] - top)
    return e / e.sum()


def entropy(p: np.ndarray) -> float:
    """Shannon entropy in nats, 0·ln 0 = 0."""
    return -math.fsum(float(q) * math.log(q) for q in p if q > 0)


def mask_except(row: np.ndarray, keep: set[int]) -> np.ndarray:
    """The raw row with every index outside ``keep`` set to -inf."""
    out = np.full(len(row), NEG_INF)
    for i in keep:
        out[i] = row[i]
    return out


def argmax(row: np.ndarray) -> int:
    return int(np.argmax(np.asarray(row, dtype=np.float64)))


def ctrl(z: float, theta: float) -> float:
    """CTRL repetition penalty of one logit."""
    return z / theta if z > 0 else z * theta


# -- truncation samplers ------------------------------------------------------------


def typical(row, t, mass, min_tokens_to_keep):
    p = probs(row, t)
    h = entropy(p)
    dev = [abs(-math.log(q) - h) if q > 0 else math.inf for q in p]
    order = sorted(range(len(p)), key=lambda i: dev[i])
    keep, before = set(), 0.0
    for rank, i in enumerate(order):
        if before < mass or rank < min_tokens_to_keep:
            keep.add(i)
        before += p[i]
    return mask_except(row, keep)


def epsilon(row, t, eps):
    p = probs(row, t)
    keep = {i for i, q in enumerate(p) if q > eps} | {argmax(row)}
    return mask_except(row, keep)


def eta(row, t, eps):
    p = probs(row, t)
    threshold = min(eps, math.sqrt(eps) * math.exp(-entropy(p)))
    keep = {i for i, q in enumerate(p) if q > threshold} | {argmax(row)}
    return mask_except(row, keep)


def top_n_sigma(row, t, n):
    scaled = [float(z) / temp(t) for z in row]
    finite = [z for z in scaled if math.isfinite(z)]
    top = max(finite)
    if len(finite) > 1:
        mean = math.fsum(finite) / len(finite)
        sigma = math.sqrt(math.fsum((z - mean) ** 2 for z in finite) / (len(finite) - 1))
    else:
        sigma = 0.0
    keep = {i for i, z in enumerate(scaled) if z >= top - n * sigma} | {argmax(row)}
    return mask_except(row, keep)


def mirostat_step(row, t, mu):
    """One Mirostat-2 truncation with threshold ``mu``; returns the masked row and the
    log2-probabilities of the renormalised truncated distribution (-inf outside)."""
    p = probs(row, t)
    keep = {i for i, q in enumerate(p) if q > 0 and -math.log2(q) <= mu} | {argmax(row)}
    z = math.fsum(p[i] for i in keep)
    log2q = np.full(len(p), NEG_INF)
    for i in keep:
        if p[i] > 0:
            log2q[i] = math.log2(p[i] / z)
    return mask_except(row, keep), log2q


def mirostat_update(mu, tau, eta_lr, log2q, token):
    """μ after sampling ``token`` (unchanged if it had probability 0 under q)."""
    if not 0 <= token < len(log2q) or not math.isfinite(log2q[token]):
        return mu
    surprise = -log2q[token]
    return mu - eta_lr * (surprise - tau)


def adaptive(row, t, eps):
    """Adaptive decoding from the definitions: entropy of 'top k exact, rest uniform'."""
    p = probs(row, t)
    # V counts finite logits (a finite logit may still underflow to probability 0).
    v = sum(1 for z in row if math.isfinite(z))
    support = sorted(p[[i for i, z in enumerate(row) if math.isfinite(z)]].tolist(), reverse=True)
    order = sorted((i for i, z in enumerate(row) if math.isfinite(z)), key=lambda i: -p[i])
    if v <= 1:
        return mask_except(row, {argmax(row)})
    suffix = [0.0] * (v + 1)  # suffix[k] = Σ_{i>k} p_i, 1-based ranks
    for k in range(v - 1, -1, -1):
        suffix[k] = suffix[k + 1] + support[k]

    def h(k: int) -> float:
        head = -math.fsum(q * math.log(q) for q in support[:k] if q > 0)
        rest = suffix[k]
        tail = -rest * math.log(rest / (v - k)) if rest > 0 and v - k > 0 else 0.0
        return head + tail

    log_v = math.log(v)
    kept = 1
    prev = h(0)
    assert abs(prev - log_v) < 1e-9
    for k in range(1, v + 1):
        cur = h(k)
        if (prev - cur) / log_v < eps:
            break
        kept = k
        prev = cur
    return mask_except(row, set(order[: max(kept, 1)]) | {argmax(row)})


# -- penalties ----------------------------------------------------------------------


def penalty_decoding(row, prompt_ids, output_ids, eos_ids, penalty, window, length_penalty,
                     min_length, include_prompt):
    history = list(prompt_ids) + list(output_ids) if include_prompt else list(output_ids)
    recent = set(history[len(history) - window:]) if len(history) > window else set(history)
    out = np.array(row, dtype=np.float64)
    for tok in recent:
        if 0 <= tok < len(out):
            out[tok] = ctrl(out[tok], penalty)
    if len(output_ids) < min_length:
        for tok in set(eos_ids):
            if 0 <= tok < len(out):
                out[tok] = ctrl(out[tok], length_penalty)
    return out


def keyword_boost(row, output_ids, keywords, token_ids, strength, until_present):
    """``keywords``: per keyword, its token-id spellings (lists)."""

    def occurs(seq, sub):
        return any(list(seq[i:i + len(sub)]) == list(sub) for i in range(len(seq) - len(sub) + 1))

    boosted = set()
    for spellings in keywords:
        if until_present and any(occurs(output_ids, s) for s in spellings):
            continue
        boosted |= {s[0] for s in spellings}
    for tok in token_ids:
        if until_present and tok in output_ids:
            continue
        boosted.add(tok)
    out = np.array(row, dtype=np.float64)
    for tok in boosted:
        if 0 <= tok < len(out):
            out[tok] += strength
    return out


# -- look-back ----------------------------------------------------------------------

HISTORY_TOKENS = 256
LOG_FLOOR = math.log(1e-30)


class LookBack:
    """Reference look-back decoder for one request; call :meth:`step` once per step."""

    def __init__(self, alpha: float, top_k: int, window: int):
        self.alpha, self.top_k, self.window = alpha, top_k, window
        self.history: list[tuple[int, dict[int, float], float]] = []  # (pos, top log-probs, rest)
        self.triggers = 0

    @staticmethod
    def _summary(p: np.ndarray) -> tuple[dict[int, float], float]:
        n_finite = int((p > 0).sum())
        order = sorted(range(len(p)), key=lambda i: -p[i])[:HISTORY_TOKENS]
        top = {i: max(math.log(p[i]) if p[i] > 0 else LOG_FLOOR, LOG_FLOOR) for i in order}
        if n_finite <= len(order):
            rest = LOG_FLOOR
        else:
            mass = max(1.0 - math.fsum(p[i] for i in order), 1e-30)
            rest = max(math.log(mass / (n_finite - len(order))), LOG_FLOOR)
        return top, rest

    @staticmethod
    def kl(p: np.ndarray, top: dict[int, float], rest: float) -> float:
        """KL(p ‖ q) with q given by the stored top log-probs and the residual."""
        return math.fsum(q * (math.log(q) - top.get(i, rest)) for i, q in enumerate(p) if q > 0)

    def step(self, row: np.ndarray, output_ids: Sequence[int]) -> np.ndarray:
        p = probs(row, 1.0)
        matched = [pos for pos, top, rest in self.history if self.kl(p, top, rest) < self.alpha]
        out = np.array(row, dtype=np.float64)
        if matched:
            self.triggers += 1
            finite = [i for i, z in enumerate(row) if math.isfinite(z)]
            cand = sorted(finite, key=lambda i: -row[i])[: max(1, min(self.top_k, len(finite)))]
            repeats = {output_ids[pos] for pos in matched}
            kept = [i for i in cand if i not in repeats] or cand
            out = mask_except(row, set(kept))
        top, rest = self._summary(p)
        self.history = (self.history + [(len(output_ids), top, rest)])[-self.window:]
        return out


# -- lexical constraints ------------------------------------------------------------


def _occurs(seq, sub) -> bool:
    """Whether ``sub`` is a contiguous part of ``seq`` (by brute force)."""
    seq, sub = list(seq), list(sub)
    return any(seq[i:i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def _ends_with(seq, prefix) -> bool:
    seq, prefix = list(seq), list(prefix)
    return len(prefix) <= len(seq) and seq[len(seq) - len(prefix):] == prefix


class LexicalConstraints:
    """Reference lexical constraints for one request; call :meth:`step` once per step.

    ``include``/``exclude``: per phrase, its token-id spellings (lists). Everything
    is recomputed from the history by brute force except the count of fresh forced
    starts per include phrase, which depends on this object's own decisions."""

    def __init__(self, include, exclude, eos_ids, force_after, boost):
        self.include = [[list(s) for s in p] for p in include]
        self.exclude = [list(s) for p in exclude for s in p]
        self.eos_ids, self.force_after, self.boost = list(eos_ids), force_after, boost
        self.starts = [0] * len(include)

    def step(self, row, output_ids):
        """The transformed row and what happened: ``satisfied``, ``forced`` (0/1),
        ``banned_hits``, ``unsatisfiable``, ``conflict`` (0/1)."""
        v = len(row)
        row = np.asarray(row, dtype=np.float64)
        out_ids = list(output_ids)
        unsat = [p for p, spellings in enumerate(self.include)
                 if not any(_occurs(out_ids, s) for s in spellings)]
        banned = {s[-1] for s in self.exclude if _ends_with(out_ids, s[:-1])}  # L = 1: always
        banned = {t for t in banned if 0 <= t < v}
        blocked = banned | ({t for t in self.eos_ids if 0 <= t < v} if unsat else set())

        def admissible(t):
            return 0 <= t < v and t not in blocked and math.isfinite(row[t])

        progress = []  # (-k, phrase, spelling, next token) for each spelling's longest prefix
        for p in unsat:
            for j, s in enumerate(self.include[p]):
                for k in range(len(s) - 1, 0, -1):
                    if _ends_with(out_ids, s[:k]):
                        progress.append((-k, p, j, s[k]))
                        break
        progress.sort()
        starts = [(p, s[0]) for p in unsat for s in self.include[p]]
        info = {"satisfied": len(self.include) - len(unsat), "forced": 0, "banned_hits": 0,
                "unsatisfiable": 0, "conflict": 0}
        banned_finite = sum(1 for t in banned if math.isfinite(row[t]))
        if unsat and len(out_ids) >= self.force_after:
            limit = len(self.include) + 2
            given_up = {p for p in unsat if self.starts[p] >= limit}
            cands = [(p, t, False) for _, p, _, t in progress]
            cands += [(p, t, True) for p, t in starts if p not in given_up]
            ok = [(p, t, fresh) for p, t, fresh in cands if admissible(t)]
            info["unsatisfiable"] = sum(
                1 for p in unsat if p in given_up or not any(q == p for q, _, _ in ok))
            if ok:
                p, forced, fresh = ok[0]
                self.starts[p] += fresh
                info["forced"] = 1
                info["banned_hits"] = banned_finite
                return mask_except(row, {forced}), info
        boosted = ({t for _, _, _, t in progress} | {t for _, t in starts}) if self.boost else set()

        def transform(mask):
            out = row.copy()
            for t in boosted:
                if 0 <= t < v:
                    out[t] += self.boost
            for t in mask:
                out[t] = NEG_INF
            return out

        out = transform(blocked)
        if blocked and not np.isfinite(out).any():
            info["conflict"] = 1
            out = transform(banned)  # drop the EOS block, keep the bans
            if not np.isfinite(out).any():
                return row.copy(), info  # untouched
        info["banned_hits"] = banned_finite
        return out, info


def keyword_decay(row, output_ids, keywords, strength, decay, until_present):
    """``keywords``: per keyword, its token-id spellings; boost λ·γ^t the first tokens."""
    weight = strength * decay ** len(output_ids)
    boosted = set()
    for spellings in keywords:
        if until_present and any(_occurs(output_ids, s) for s in spellings):
            continue
        boosted |= {s[0] for s in spellings}
    out = np.array(row, dtype=np.float64)
    for tok in boosted:
        if 0 <= tok < len(out):
            out[tok] += weight
    return out


def length_target(row, output_ids, eos_ids, target, strength, tolerance):
    n = len(output_ids)
    shift = strength * math.tanh((n - target) / max(1, tolerance))
    out = np.array(row, dtype=np.float64)
    for tok in set(eos_ids):
        if 0 <= tok < len(out):
            out[tok] += shift
    return out
