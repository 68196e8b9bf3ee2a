"""Monitor-guided decoding: at a trigger string, only continuations a monitor allows.

Agrawal, Kanade, Goyal, Lahiri & Rajamani, "Monitor-Guided Decoding of Code
LMs with Static Analysis of Repository Context", NeurIPS 2023
(arXiv:2306.10763). A monitor (:mod:`sglang_ilsi.monitors`) watches the
generated code; at a trigger such as ``json.`` it runs a static analysis and
returns the identifiers that may follow, and decoding is masked to tokens that
start or continue one of them. The small form here: the monitor's answer is
computed once per request on the HTTP side (``prepare``) and travels as token
sequences; the mask is applied in the logits stage.

Notation: h = prompt + generated tokens, T the token spellings of the trigger
(the trigger tokenized with and without a leading space), N the spellings of
the allowed names (each name tokenized after the trigger, and on its own),
P(N) = {proper prefixes of spellings in N}.

    j*   = the end of the latest occurrence of a spelling in T in h
    s    = h[j*:]                                   (tokens written since the trigger)
    A(s) = {n_{|s|+1} : n ∈ N, n[:|s|] = s}          (tokens that continue some name)
    z'(y) = z(y) if y ∈ A(s), −∞ otherwise           when s ∈ P(N) and s ∉ N
    z'    = z                                        otherwise (no trigger, a complete
                                                       name was written, or s left the names)

Tokens that a grammar already masked (z = −∞) stay masked; if no token of A(s)
is finite the row is left as it is and ``conflicts`` counts it. Once a
complete name is written the monitor releases (a longer name that extends it
remains possible, and so does any other token). Stats: ``masked_steps``,
``conflicts``. The trigger and the names are matched on token sequences: a
trigger spelled with an unusual split of tokens is not seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext, on_device
from sglang_ilsi.methods.constrained.phrases import decode_keywords, encode_keywords, vocab_size
from sglang_ilsi.params import IlsiRequestError, Param
from sglang_ilsi.registry import register

NEG_INF = float("-inf")
MAX_NAME_TOKENS = 24


def _encode(tokenizer: Any, text: str) -> list[int]:
    return [int(t) for t in tokenizer.encode(text, add_special_tokens=False)]


def name_spellings(tokenizer: Any, trigger: str, name: str) -> list[list[int]]:
    """The token sequences of ``name`` written right after ``trigger``: as the
    tokenizer splits ``trigger + name`` (when it keeps the trigger's tokens) and
    as ``name`` alone."""
    out: list[list[int]] = []
    trig, both = _encode(tokenizer, trigger), _encode(tokenizer, trigger + name)
    if both[:len(trig)] == trig and len(both) > len(trig):
        out.append(both[len(trig):])
    alone = _encode(tokenizer, name)
    if alone and alone not in out:
        out.append(alone)
    return [s for s in out if len(s) <= MAX_NAME_TOKENS]


@register
class MonitorGuided(LogitsMethod):
    """Monitor-guided decoding: after a trigger, only names the monitor allows."""

    name = "monitor"
    family = "independent/constrained"
    paper = ("Agrawal et al. 2023, Monitor-Guided Decoding of Code LMs with Static Analysis "
             "of Repository Context (NeurIPS), arXiv:2306.10763")
    needs = frozenset({"logits", "tool"})
    example = {"argument": "json"}
    params = (
        Param("monitor", "str", "python_module", "the registered monitor to consult",
              choices=("python_module",)),
        Param("argument", "str", "", "what the monitor inspects (python_module: a module "
              "name from the server's --ilsi-monitor-modules)", max_length=128),
        Param("trigger", "str", "", "the string after which the monitor is consulted "
              "(default: the monitor's, e.g. 'json.' for argument 'json')", max_length=64),
    )

    @classmethod
    def prepare(cls, params: dict[str, Any], tokenizer: Any | None) -> dict[str, Any]:
        from sglang_ilsi.monitors import MONITORS

        monitor = MONITORS[params["monitor"]]
        if not params["argument"]:
            raise IlsiRequestError("argument", "required (e.g. a module name)")
        if tokenizer is None:
            raise IlsiRequestError("monitor", "needs the server's tokenizer")
        names = monitor.continuations(params["argument"])
        trigger = params["trigger"] or monitor.default_trigger(params["argument"])
        triggers = [t for t in ([_encode(tokenizer, trigger)] + [_encode(tokenizer, " " + trigger)])
                    if t]
        if not triggers:
            raise IlsiRequestError("trigger", "encodes to no tokens")
        spellings = [name_spellings(tokenizer, trigger, n) for n in names]
        vocab = vocab_size(tokenizer)
        if vocab is not None and any(t >= vocab for s in spellings for v in s for t in v):
            raise IlsiRequestError("argument", "a name encodes outside the vocabulary")
        out = dict(params)
        out["trigger"] = trigger
        out["trigger_token_ids"] = encode_keywords([triggers])
        out["name_token_ids"] = encode_keywords([s for s in spellings if s])
        out["names"] = len(names)
        return out

    @staticmethod
    def _state(row: RowContext) -> dict[str, Any]:
        st = row.state
        if "children" not in st:
            triggers = [t for spellings in decode_keywords(row.params["trigger_token_ids"])
                        for t in spellings]
            children: dict[tuple[int, ...], set[int]] = {}
            complete: set[tuple[int, ...]] = set()
            for spellings in decode_keywords(row.params["name_token_ids"]):
                for s in spellings:
                    complete.add(tuple(s))
                    for k in range(len(s)):
                        children.setdefault(tuple(s[:k]), set()).add(s[k])
            st["triggers"] = [tuple(t) for t in triggers]
            st["children"] = children
            st["complete"] = complete
            longest = max((len(s) for s in complete), default=0)
            st["window"] = longest + max(len(t) for t in triggers)
            for key in ("masked_steps", "conflicts"):
                row.stats[key] = 0.0
        return st

    @classmethod
    def allowed(cls, row: RowContext) -> set[int] | None:
        """A(s) for this row now, or None when the monitor does not constrain."""
        st = cls._state(row)
        window = st["window"]
        out_ids = row.output_ids
        if len(out_ids) >= window:
            h = list(out_ids[-window:])
        else:
            h = list(row.prompt_ids[-(window - len(out_ids)):]) + list(out_ids)
        best = -1
        for t in st["triggers"]:
            n = len(t)
            for j in range(len(h), n - 1, -1):
                if tuple(h[j - n:j]) == t:
                    best = max(best, j)
                    break
        if best < 0:
            return None
        s = tuple(h[best:])
        if s in st["complete"] or s not in st["children"]:
            return None
        return st["children"][s]

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        vocab = logits.shape[-1]
        plans = [(i, cls.allowed(row)) for i, row in enumerate(rows)]
        plans = [(i, sorted(t for t in a if 0 <= t < vocab)) for i, a in plans if a is not None]
        if not plans:
            return logits
        device = logits.device
        r = on_device([k for k, (_, a) in enumerate(plans) for _ in a], torch.long, device)
        c = on_device([t for _, a in plans for t in a], torch.long, device)
        index = on_device([i for i, _ in plans], torch.long, device)
        keep = torch.zeros((len(plans), vocab), dtype=torch.bool, device=device)
        keep[r, c] = True
        candidate = logits.index_select(0, index).masked_fill(~keep, NEG_INF)
        # one sync: rows where the grammar left none of A(s) finite stay as they are
        empty = torch.isneginf(candidate.amax(dim=-1)).tolist()
        ok = [k for k, e in enumerate(empty) if not e]
        for k, (i, _) in enumerate(plans):
            rows[i].stats["conflicts" if empty[k] else "masked_steps"] += 1.0
        out = logits.clone()
        if ok:
            pick = on_device(ok, torch.long, device)
            out.index_copy_(0, index.index_select(0, pick), candidate.index_select(0, pick))
        return out
