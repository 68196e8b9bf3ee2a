"""Keyword decay: soft lexical constraints whose push fades as the output grows.

A soft constraint in the sense of the survey's constrained-decoding family
(Dong, Teleki & Caverlee 2024): the keywords are encouraged, never forced. The
shift follows the guide-word idea of Pascual, Egressy, Meister, Cotterell &
Wattenhofer, "A Plug-and-Play Method for Controlled Text Generation" (K2T),
Findings of EMNLP 2021 (arXiv:2109.09707), which adds a guide-word bonus to the
next-token logits, with a weight that decays with the number of generated tokens
t = |y| (the prompt does not count):

    w_t   = λ · γ^t                      (λ = ``strength``, γ = ``decay``, 0^0 = 1)
    z'(y) = z(y) + w_t · 1[y ∈ B_t],     B_t = {s_1 : s a spelling of a pending keyword}

so the push is strongest at the start of the answer, where a keyword fits most
easily, and fades instead of dragging the text toward the keyword forever
(γ = 1 is keyword_boost's constant shift, γ = 0 boosts only the first token).
The decay runs on the global step t, the same for every keyword, so the row's
weight is one number and needs no per-keyword clock. A keyword is tokenized
with and without a leading space; both spellings' first tokens are boosted, each
token once per step (-inf stays -inf). With ``until_present`` a keyword stops
being pending once one of its spellings occurs contiguously in the output;
otherwise every keyword stays pending. A negative λ is a fading soft ban.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext
from sglang_ilsi.methods.common import add_sparse
from sglang_ilsi.methods.constrained.phrases import (
    decode_keywords,
    encode_keywords,
    tokenize_phrases,
    update_presence,
)
from sglang_ilsi.params import IlsiRequestError, Param
from sglang_ilsi.registry import register


def decayed_weight(strength: float, decay: float, t: int) -> float:
    """w_t = λ · γ^t (Python's 0.0 ** 0 == 1.0)."""
    return strength * decay ** t


@register
class KeywordDecay(LogitsMethod):
    """Boost keyword tokens by a weight that decays with the output length."""

    name = "keyword_decay"
    family = "independent/constrained"
    paper = ("Pascual et al. 2021, A Plug-and-Play Method for Controlled Text Generation "
             "(Findings of EMNLP), arXiv:2109.09707")
    argmax_invariant = False
    params = (
        Param("keywords", "str_list", [], "keywords whose first token is boosted (tokenized "
              "with and without a leading space)", max_items=64, max_length=128),
        Param("strength", "float", 4.0, "λ: the boost at the first generated token "
              "(negative: a fading soft ban)", minimum=-20.0, maximum=20.0),
        Param("decay", "float", 0.9, "γ: the boost after t generated tokens is λ·γ^t",
              minimum=0.0, maximum=1.0),
        Param("until_present", "bool", True,
              "stop boosting a keyword once its token sequence appears in the output"),
    )

    @classmethod
    def prepare(cls, params: dict[str, Any], tokenizer: Any | None) -> dict[str, Any]:
        out = dict(params)
        keywords = list(params.get("keywords", []))
        if keywords and tokenizer is None:
            raise IlsiRequestError("keywords", "keywords need the server's tokenizer")
        out["keyword_token_ids"] = encode_keywords(
            tokenize_phrases(keywords, tokenizer, "keywords", noun="keyword"))
        return out

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        vocab = logits.shape[-1]
        r_idx: list[int] = []
        c_idx: list[int] = []
        values: list[float] = []
        for i, row in enumerate(rows):
            st = row.state
            if "keywords" not in st:
                st["keywords"] = decode_keywords(row.params.get("keyword_token_ids", []))
                st["done"] = [False] * len(st["keywords"])
                st["scanned"] = 0
            kws, done = st["keywords"], st["done"]
            if row.params["until_present"]:
                st["scanned"] = update_presence(done, kws, row.output_ids, st["scanned"])
            w = decayed_weight(float(row.params["strength"]), float(row.params["decay"]),
                               len(row.output_ids))
            row.stats["keywords_pending"] = float(done.count(False))
            row.stats["weight"] = w
            if w == 0.0:
                continue
            toks = {v[0] for k, variants in enumerate(kws) if not done[k] for v in variants}
            for t in sorted(t for t in toks if 0 <= t < vocab):
                r_idx.append(i)
                c_idx.append(t)
                values.append(w)
        return add_sparse(logits, r_idx, c_idx, values)
