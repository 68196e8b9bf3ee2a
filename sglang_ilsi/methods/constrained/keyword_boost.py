"""Keyword boost: a soft lexical constraint by additive logit shifts.

In the spirit of Pascual, Egressy, Meister, Cotterell & Wattenhofer, "A
Plug-and-Play Method for Controlled Text Generation" (K2T), Findings of EMNLP
2021 (arXiv:2109.09707), which steers generation toward guide words by shifting
the logits of the next token toward them.

For every keyword w with token sequence (w_1, …, w_m) and every explicit token id
v, the raw logits z are shifted by a constant λ (``strength``):

    z'(y) = z(y) + λ · 1[y ∈ B_t],    B_t = {w_1 : w pending} ∪ {v : v pending},

each token at most once per step (-inf stays -inf). A keyword is encoded twice,
with and without a leading space (both variants' first tokens are boosted). With
``until_present`` a keyword stops being pending once any of its variants occurs
as a contiguous token sequence in the output (an explicit id once it occurs);
otherwise everything stays pending. K2T shifts by the cosine similarity of each
vocabulary token's embedding to the guide word; here the shift is the constant λ
on the keyword's own first tokens (no embedding model is needed), and a negative
λ turns the method into a soft ban.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext, column
from sglang_ilsi.params import IlsiRequestError, Param
from sglang_ilsi.registry import register

KEYWORD_SEP = -1  # between keywords in the flat ``keyword_token_ids`` list
VARIANT_SEP = -2  # between the spellings (with/without leading space) of one keyword


def encode_keywords(keywords: Sequence[Sequence[Sequence[int]]]) -> list[int]:
    """Flatten keywords → variants → token ids into one int list."""
    flat: list[int] = []
    for k, variants in enumerate(keywords):
        if k:
            flat.append(KEYWORD_SEP)
        for v, ids in enumerate(variants):
            if v:
                flat.append(VARIANT_SEP)
            flat.extend(int(t) for t in ids)
    return flat


def decode_keywords(flat: Sequence[int]) -> list[list[tuple[int, ...]]]:
    """Inverse of :func:`encode_keywords` (empty variants are dropped)."""
    keywords: list[list[tuple[int, ...]]] = [[]]
    current: list[int] = []
    for t in list(flat) + [KEYWORD_SEP]:
        if t in (KEYWORD_SEP, VARIANT_SEP):
            if current:
                keywords[-1].append(tuple(current))
            current = []
            if t == KEYWORD_SEP:
                keywords.append([])
        else:
            current.append(int(t))
    return [k for k in keywords if k]


def _contains(seq: Sequence[int], sub: tuple[int, ...], start: int) -> bool:
    """Whether ``sub`` occurs in ``seq`` at an index ≥ ``start``."""
    m = len(sub)
    for i in range(max(start, 0), len(seq) - m + 1):
        if tuple(seq[i:i + m]) == sub:
            return True
    return False


@register
class KeywordBoost(LogitsMethod):
    """Add a constant to the logits of keyword tokens (soft lexical constraint)."""

    name = "keyword_boost"
    family = "independent/constrained"
    paper = ("Pascual et al. 2021, A Plug-and-Play Method for Controlled Text Generation "
             "(Findings of EMNLP), arXiv:2109.09707")
    argmax_invariant = False
    params = (
        Param("token_ids", "int_list", [], "explicit token ids to boost", minimum=0, max_items=256),
        Param("keywords", "str_list", [], "keywords whose first token is boosted (tokenized "
              "with and without a leading space)", max_items=64, max_length=128),
        Param("strength", "float", 2.0, "λ: added to the boosted logits (negative: soft ban)",
              minimum=-20.0, maximum=20.0),
        Param("until_present", "bool", False,
              "stop boosting a keyword once its token sequence appears in the output"),
    )

    @classmethod
    def prepare(cls, params: dict[str, Any], tokenizer: Any | None) -> dict[str, Any]:
        out = dict(params)
        vocab = _vocab_size(tokenizer)
        token_ids = list(params.get("token_ids", []))
        if vocab is not None:
            for i, t in enumerate(token_ids):
                if t >= vocab:
                    raise IlsiRequestError(f"token_ids[{i}]",
                                           f"token id {t} is outside the vocabulary (size {vocab})")
        keywords = list(params.get("keywords", []))
        if keywords and tokenizer is None:
            raise IlsiRequestError("keywords", "keywords need the server's tokenizer; "
                                   "pass token_ids instead")
        encoded: list[list[list[int]]] = []
        for i, kw in enumerate(keywords):
            if not kw.strip():
                raise IlsiRequestError("keywords", f"keyword {i} is empty")
            variants: list[list[int]] = []
            for text in (" " + kw, kw):
                ids = [int(t) for t in tokenizer.encode(text, add_special_tokens=False)]
                if ids and ids not in variants:
                    variants.append(ids)
            if not variants:
                raise IlsiRequestError("keywords", f"keyword {i} ({kw!r}) encodes to no tokens")
            if vocab is not None and any(t < 0 or t >= vocab for v in variants for t in v):
                raise IlsiRequestError("keywords", f"keyword {i} ({kw!r}) encodes outside "
                                       f"the vocabulary (size {vocab})")
            encoded.append(variants)
        out["keyword_token_ids"] = encode_keywords(encoded)
        return out

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        vocab = logits.shape[-1]
        r_idx: list[int] = []
        c_idx: list[int] = []
        for i, row in enumerate(rows):
            toks = cls.boosted_tokens(row)
            toks = sorted(t for t in toks if 0 <= t < vocab)
            r_idx += [i] * len(toks)
            c_idx += toks
        if not c_idx:
            return logits.clone()
        mask = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
        mask[torch.tensor(r_idx, device=logits.device), torch.tensor(c_idx, device=logits.device)] = True
        return logits + mask.to(logits.dtype) * column(rows, "strength", logits)

    @classmethod
    def boosted_tokens(cls, row: RowContext) -> set[int]:
        """The token ids boosted for this row at this step (updates the presence state)."""
        st = row.state
        if "keywords" not in st:
            kws = decode_keywords(row.params.get("keyword_token_ids", []))
            kws += [[(int(t),)] for t in row.params.get("token_ids", [])]
            st["keywords"] = kws
            st["done"] = [False] * len(kws)
            st["scanned"] = 0
        kws, done = st["keywords"], st["done"]
        if row.params.get("until_present"):
            out = row.output_ids
            for k, variants in enumerate(kws):
                if not done[k]:
                    longest = max(len(v) for v in variants)
                    start = st["scanned"] - longest + 1
                    done[k] = any(_contains(out, v, start) for v in variants)
            st["scanned"] = len(out)
            row.stats["keywords_pending"] = float(done.count(False))
        return {v[0] for k, variants in enumerate(kws) if not done[k] for v in variants}


def _vocab_size(tokenizer: Any | None) -> int | None:
    if tokenizer is None:
        return None
    try:
        return len(tokenizer)
    except TypeError:
        return None
