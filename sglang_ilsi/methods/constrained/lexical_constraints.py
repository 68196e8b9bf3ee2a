"""Hard lexical constraints: required and banned phrases, with a forcing budget.

A serving-friendly form of NeuroLogic decoding: Lu, West, Zellers, Le Bras,
Bhagavatula & Choi, "NeuroLogic Decoding: (Un)supervised Neural Text Generation
with Predicate Logic Constraints", NAACL 2021 (arXiv:2010.12884), and Lu et al.,
"NeuroLogic A*esque Decoding: Constrained Text Generation with Lookahead
Heuristics", NAACL 2022 (arXiv:2112.08726). NeuroLogic keeps a beam and scores
hypotheses by how many positive/negative clauses they satisfy; A*esque adds
lookahead estimates of future satisfaction. One sampled sequence per request has
no beam to select from, so here the constraint state is tracked per request and
enforced on the next-token logits: banned continuations are masked, EOS waits
for the required phrases, and once a token budget is spent the missing phrases
are forced token by token (the budget plays the role of the lookahead: it
guarantees the clause is met instead of estimating whether it will be).

Notation: y = the generated tokens so far (t = |y|; the prompt does not count),
z the raw logits, S(p) the spellings of include phrase p (the phrase tokenized
with and without a leading space, minus any spelling that contains an excluded
spelling: it could never be written), E the spellings of all exclude phrases.

    sat(p)  ⇔  some s ∈ S(p) occurs contiguously in y          (once true, stays true)
    U       =  [p : not sat(p)]                                (include order)
    B       =  {e_L : e ∈ E, (e_1, …, e_{L−1}) = (y_{t−L+2}, …, y_t)}   (L = 1: e_1 always)
    X       =  B ∪ (EOS ids if U ≠ ∅)                          blocked tokens
    k(s)    =  max{k : 1 ≤ k < |s|, (s_1, …, s_k) = last k tokens of y}   (0 if none)
    C       =  [s_{k(s)+1} : p ∈ U, s ∈ S(p), k(s) ≥ 1, sorted by (−k(s), p, spelling)]
               ++ [s_1 : p ∈ U, a(p) < R, s ∈ S(p)]            forcing candidates, in order
    f       =  the first c ∈ C with c ∉ X and z(c) > −∞, when t ≥ ``force_after``

    z'(y) = z(y) if y = f, −∞ otherwise                                 (a forcing step)
    z'(y) = −∞ if y ∈ X, z(y) + β · 1[y ∈ A] otherwise                  (no forced token)
    A     = {s_1 : s ∈ S(p), p ∈ U} ∪ {s_{k(s)+1} : k(s) ≥ 1}            (β = ``boost``)

So a phrase that is "in progress" (a proper prefix of a spelling ends y) is
continued first, the longest prefix first; otherwise the first missing phrase is
started with its first spelling. a(p) counts the forcing steps at which f
started phrase p afresh (f taken from the second part of C), and R = n + 2 for
n include phrases. Because the longest prefix k grows by one on every forcing
step, a forced phrase completes within |s| ≤ 32 steps unless a blocked token
stops it, so when nothing blocks all n phrases are written within about n · 32
tokens after ``force_after`` (set ``max_new_tokens`` accordingly: a request that
runs out of tokens first ends without them). Before the budget is spent, β > 0
gently favours starting or continuing the missing phrases.

Conflicts. A ban always wins over forcing: a candidate in X (banned, or an EOS
id) or masked by a grammar (z = −∞) is skipped and the next candidate is tried;
if none is admissible the step is not forced. A phrase whose continuation stays
blocked would otherwise be restarted forever, so after R fresh starts it is
given up: it is no longer started (an attempt in progress may still finish),
the ``unsatisfiable`` stat counts it, and EOS stays blocked (the request then
ends at ``max_new_tokens``). ``unsatisfiable`` is a gauge: at each forcing step,
the missing phrases that are given up or have no admissible candidate (a ban
across the phrase boundary is often transient). ``prepare`` refuses an include
phrase equal to an exclude phrase, one whose every spelling contains an
excluded spelling, and one that encodes to a special token (EOS). Every row
keeps at least one finite logit: if X would remove every finite logit (a
grammar that allows only EOS and banned tokens), the EOS block is dropped for
that step (the ban still holds); if nothing finite is left even then, the row
is returned untouched. Both count in ``conflicts``. A forced token is
admissible by construction, so a forcing step never empties a row.

Stats per request: ``satisfied`` (include phrases present), ``forced_tokens``
(forcing steps), ``banned_hits`` (finite logits removed by a ban, summed over
steps), ``unsatisfiable`` and ``conflicts``. The constraints are on token
sequences: text that spells a banned word with other tokens (other casing, a
split the tokenizer would not produce) is not caught.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext, on_device
from sglang_ilsi.methods.constrained.phrases import (
    contains,
    decode_keywords,
    encode_keywords,
    tokenize_phrases,
)
from sglang_ilsi.params import IlsiRequestError, Param
from sglang_ilsi.registry import register

MAX_PHRASE_TOKENS = 32
NEG_INF = float("-inf")


def prefix_function(ids: Sequence[int]) -> list[int]:
    """Knuth–Morris–Pratt: pi[i] = length of the longest proper prefix of
    ids[: i + 1] that is also its suffix."""
    pi = [0] * len(ids)
    k = 0
    for i in range(1, len(ids)):
        while k and ids[i] != ids[k]:
            k = pi[k - 1]
        if ids[i] == ids[k]:
            k += 1
        pi[i] = k
    return pi


class Matcher:
    """Incremental matcher of one spelling against the growing output.

    ``q`` is the length of the longest proper prefix of the spelling that is a
    suffix of the tokens fed so far (k(s) in the module docstring)."""

    __slots__ = ("ids", "pi", "q")

    def __init__(self, ids: Sequence[int]):
        self.ids = tuple(int(t) for t in ids)
        self.pi = prefix_function(self.ids)
        self.q = 0

    def feed(self, token: int) -> bool:
        """Advance by one token; True when the whole spelling has just occurred."""
        ids, q = self.ids, self.q
        while q and ids[q] != token:
            q = self.pi[q - 1]
        if ids[q] == token:
            q += 1
        if q == len(ids):
            self.q = self.pi[q - 1]
            return True
        self.q = q
        return False


STAT_KEYS = ("satisfied", "forced_tokens", "banned_hits", "unsatisfiable", "conflicts")


@register
class LexicalConstraints(LogitsMethod):
    """Hard lexical constraints: banned phrases, required phrases forced after a budget."""

    name = "lexical_constraints"
    family = "independent/constrained"
    paper = ("Lu et al. 2021, NeuroLogic Decoding: (Un)supervised Neural Text Generation with "
             "Predicate Logic Constraints (NAACL), arXiv:2010.12884; Lu et al. 2022, NeuroLogic "
             "A*esque Decoding (NAACL), arXiv:2112.08726")
    argmax_invariant = False
    params = (
        Param("include", "str_list", [], "phrases that must appear in the output (any order); "
              "EOS is blocked until all have appeared", max_items=16, max_length=64),
        Param("exclude", "str_list", [], "phrases that must not appear: the token completing "
              "one is masked", max_items=64, max_length=64),
        Param("force_after", "int", 64, "after this many generated tokens the missing include "
              "phrases are forced, token by token, in order", minimum=0, maximum=1_000_000),
        Param("boost", "float", 0.0, "β: added before forcing to the logits of tokens that "
              "start or continue a missing include phrase", minimum=0.0, maximum=20.0),
    )

    @classmethod
    def prepare(cls, params: dict[str, Any], tokenizer: Any | None) -> dict[str, Any]:
        out = dict(params)
        include = list(params.get("include", []))
        exclude = list(params.get("exclude", []))
        for name, texts in (("include", include), ("exclude", exclude)):
            if texts and tokenizer is None:
                raise IlsiRequestError(name, "phrases need the server's tokenizer")
        inc = tokenize_phrases(include, tokenizer, "include", noun="phrase",
                               max_tokens=MAX_PHRASE_TOKENS)
        exc = tokenize_phrases(exclude, tokenizer, "exclude", noun="phrase",
                               max_tokens=MAX_PHRASE_TOKENS)
        normal = [" ".join(t.split()) for t in exclude]
        banned = [s for spellings in exc for s in spellings]
        special = set(getattr(tokenizer, "all_special_ids", None) or ())
        for i, text in enumerate(include):
            if " ".join(text.split()) in normal:
                j = normal.index(" ".join(text.split()))
                raise IlsiRequestError("include", f"phrase {i} ({text!r}) is also excluded "
                                       f"(exclude phrase {j})")
            if any(t in special for s in inc[i] for t in s):
                raise IlsiRequestError("include", f"phrase {i} ({text!r}) encodes to a "
                                       "special token, which cannot be required")
            # A spelling that contains an excluded spelling can never be written.
            inc[i] = [s for s in inc[i] if not any(contains(s, e) for e in banned)]
            if not inc[i]:
                raise IlsiRequestError("include", f"phrase {i} ({text!r}) contains an excluded "
                                       "phrase in every spelling, so it could never be written")
        out["include_token_ids"] = encode_keywords(inc)
        out["exclude_token_ids"] = encode_keywords(exc)
        return out

    # -- per-row state ------------------------------------------------------------------

    @staticmethod
    def _state(row: RowContext) -> dict[str, Any]:
        st = row.state
        if "include" not in st:
            include = decode_keywords(row.params.get("include_token_ids", []))
            st["include"] = [[Matcher(s) for s in spellings] for spellings in include]
            st["exclude"] = [Matcher(s) for spellings in
                             decode_keywords(row.params.get("exclude_token_ids", []))
                             for s in spellings]
            st["sat"] = [False] * len(include)
            st["starts"] = [0] * len(include)  # a(p): fresh forced starts
            st["scanned"] = 0
            for key in STAT_KEYS:
                row.stats[key] = 0.0
        out = row.output_ids
        for token in out[st["scanned"]:]:
            token = int(token)
            for m in st["exclude"]:
                m.feed(token)
            for p, matchers in enumerate(st["include"]):
                if not st["sat"][p]:
                    hits = [m.feed(token) for m in matchers]  # feed every spelling
                    st["sat"][p] = any(hits)
        st["scanned"] = len(out)
        return st

    @classmethod
    def _plan(cls, row: RowContext, vocab: int) -> dict[str, Any]:
        """The row's blocked tokens, forcing candidates and boosted tokens."""
        st = cls._state(row)
        unsat = [p for p, ok in enumerate(st["sat"]) if not ok]
        banned = {m.ids[-1] for m in st["exclude"] if m.q == len(m.ids) - 1}
        banned = {t for t in banned if 0 <= t < vocab}
        eos = {int(t) for t in row.eos_token_ids if 0 <= t < vocab} if unsat else set()
        progress = sorted(
            (-m.q, p, j, m.ids[m.q])
            for p in unsat for j, m in enumerate(st["include"][p]) if m.q >= 1
        )
        starts = [(p, m.ids[0]) for p in unsat for m in st["include"][p]]
        forcing = bool(unsat) and len(row.output_ids) >= int(row.params["force_after"])
        cands: list[tuple[int, int, bool]] = []  # (phrase, token, is a fresh start)
        given_up: set[int] = set()
        if forcing:
            limit = len(st["include"]) + 2  # R
            given_up = {p for p in unsat if st["starts"][p] >= limit}
            cands = [(p, t, False) for _, p, _, t in progress]
            cands += [(p, t, True) for p, t in starts if p not in given_up]
            cands = [c for c in cands if 0 <= c[1] < vocab]
        boosted: set[int] = set()
        if float(row.params["boost"]) != 0.0:
            boosted = {t for _, _, _, t in progress} | {t for _, t in starts}
            boosted = {t for t in boosted if 0 <= t < vocab}
        row.stats["satisfied"] = float(len(st["sat"]) - len(unsat))
        return {"unsat": unsat, "banned": banned, "blocked": banned | eos, "cands": cands,
                "forcing": forcing, "boosted": boosted, "given_up": given_up}

    # -- the transform ------------------------------------------------------------------

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        vocab = logits.shape[-1]
        device = logits.device
        plans = [cls._plan(row, vocab) for row in rows]
        out = logits.clone()
        block_r = [i for i, pl in enumerate(plans) for _ in pl["blocked"]]
        if block_r:
            block_c = [t for pl in plans for t in sorted(pl["blocked"])]
            out[_index(block_r, block_c, device)] = NEG_INF

        # One device sync: the finiteness of every candidate and banned token, and
        # whether the bans and the EOS block left a row without a finite logit.
        q_rows = [i for i, pl in enumerate(plans) for _ in _queried(pl)]
        q_cols = [t for pl in plans for t in _queried(pl)]
        parts = []
        if q_rows:
            parts.append(torch.isfinite(logits[_index(q_rows, q_cols, device)]).long())
        if block_r:
            parts.append(torch.isneginf(out.amax(dim=-1)).long())
        values = torch.cat(parts).tolist() if parts else []
        finite: list[dict[int, bool]] = [{} for _ in rows]
        for i, t, ok in zip(q_rows, q_cols, values):
            finite[i][t] = bool(ok)
        emptied = values[len(q_rows):] if block_r else [0] * len(rows)

        force_r: list[int] = []
        force_c: list[int] = []
        boost_rows: list[int] = []
        fallback: list[int] = []  # rows the bans and the EOS block emptied
        for i, (row, pl) in enumerate(zip(rows, plans)):
            fin = finite[i]
            forced = None
            if pl["forcing"]:
                ok = [c for c in pl["cands"] if c[1] not in pl["blocked"] and fin[c[1]]]
                if ok:
                    p, forced, fresh = ok[0]
                    row.state["starts"][p] += fresh
                served = {c[0] for c in ok}
                row.stats["unsatisfiable"] = float(sum(
                    1 for q in pl["unsat"] if q in pl["given_up"] or q not in served))
            else:
                row.stats["unsatisfiable"] = 0.0
            banned_finite = float(sum(fin[t] for t in pl["banned"]))
            if forced is not None:
                force_r.append(i)
                force_c.append(forced)
                row.stats["forced_tokens"] += 1.0
                row.stats["banned_hits"] += banned_finite
            elif emptied[i]:
                row.stats["conflicts"] += 1.0
                fallback.append(i)
            else:
                row.stats["banned_hits"] += banned_finite
                boost_rows.append(i)

        if fallback:  # rare: retry with the bans only, else leave the row untouched
            index = on_device(fallback, torch.long, device)
            retry = logits.index_select(0, index)
            r = [k for k, i in enumerate(fallback) for _ in plans[i]["banned"]]
            if r:
                c = [t for i in fallback for t in sorted(plans[i]["banned"])]
                retry[_index(r, c, device)] = NEG_INF
            still_empty = torch.isneginf(retry.amax(dim=-1))
            out.index_copy_(0, index, torch.where(still_empty.unsqueeze(1),
                                                  logits.index_select(0, index), retry))
            for i, empty in zip(fallback, still_empty.tolist()):
                if not empty:
                    rows[i].stats["banned_hits"] += float(
                        sum(finite[i][t] for t in plans[i]["banned"]))
                    boost_rows.append(i)

        boost_r = [i for i in boost_rows for _ in plans[i]["boosted"]]
        if boost_r:
            boost_c = [t for i in boost_rows for t in sorted(plans[i]["boosted"])]
            boost_v = [float(rows[i].params["boost"]) for i in boost_rows
                       for _ in plans[i]["boosted"]]
            out.index_put_(_index(boost_r, boost_c, device),
                           on_device(boost_v, out.dtype, device), accumulate=True)
        if force_r:
            idx = _index(force_r, force_c, device)
            out.index_fill_(0, idx[0], NEG_INF)
            out[idx] = logits[idx]
        return out


def _queried(plan: dict[str, Any]) -> list[int]:
    """The tokens whose finiteness a row's decision needs."""
    return sorted(plan["banned"] | {c[1] for c in plan["cands"]})


def _index(rows: list[int], cols: list[int], device: torch.device) -> tuple[torch.Tensor, ...]:
    return (on_device(rows, torch.long, device),
            on_device(cols, torch.long, device))
