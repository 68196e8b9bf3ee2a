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

from sglang_ilsi.methods.base import LogitsMethod, RowContext, column, on_device
from sglang_ilsi.methods.constrained.phrases import (
    decode_keywords,
    encode_keywords,
    tokenize_phrases,
    update_presence,
    vocab_size,
)
from sglang_ilsi.params import IlsiRequestError, Param
from sglang_ilsi.registry import register


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
        vocab = vocab_size(tokenizer)
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
        encoded = tokenize_phrases(keywords, tokenizer, "keywords", noun="keyword")
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
        out = logits.clone()
        if c_idx:  # only the boosted entries change (each at most once per row)
            r = on_device(r_idx, torch.long, logits.device)
            c = on_device(c_idx, torch.long, logits.device)
            strength = column(rows, "strength", logits).squeeze(1).index_select(0, r)
            out[r, c] = out[r, c] + strength
        return out

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
            st["scanned"] = update_presence(done, kws, row.output_ids, st["scanned"])
            row.stats["keywords_pending"] = float(done.count(False))
        return {v[0] for k, variants in enumerate(kws) if not done[k] for v in variants}

