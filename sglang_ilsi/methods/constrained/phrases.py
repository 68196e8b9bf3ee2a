"""Shared helpers for the lexical methods: phrases as token-id spellings.

A phrase (keyword) is tokenized twice, with and without a leading space, and
both spellings are kept as alternatives. ``prepare`` flattens
phrases → spellings → token ids into one flat int list (so the value survives
SGLang's IPC unchanged), with ``KEYWORD_SEP`` (= -1) between phrases and
``VARIANT_SEP`` (= -2) between the spellings of one phrase; ``apply`` decodes it
back with :func:`decode_keywords`. A phrase occurs in a sequence when some
spelling s = (s_1, …, s_m) satisfies seq[i : i + m] = s for an index i ≥ 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sglang_ilsi.params import IlsiRequestError

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


def contains(seq: Sequence[int], sub: Sequence[int], start: int = 0) -> bool:
    """Whether ``sub`` occurs in ``seq`` at an index ≥ ``start``."""
    sub = tuple(sub)
    m = len(sub)
    for i in range(max(start, 0), len(seq) - m + 1):
        if tuple(seq[i:i + m]) == sub:
            return True
    return False


def update_presence(done: list[bool], phrases: Sequence[Sequence[tuple[int, ...]]],
                    output_ids: Sequence[int], scanned: int) -> int:
    """Mark (in place) the phrases that now occur in ``output_ids``.

    Only the part not scanned before (plus an overlap of the longest spelling
    minus one) is searched; returns the new scan position to store."""
    for k, variants in enumerate(phrases):
        if not done[k]:
            longest = max(len(v) for v in variants)
            start = scanned - longest + 1
            done[k] = any(contains(output_ids, v, start) for v in variants)
    return len(output_ids)


def vocab_size(tokenizer: Any | None) -> int | None:
    """``len(tokenizer)`` where the tokenizer has one, else None."""
    if tokenizer is None:
        return None
    try:
        return len(tokenizer)
    except TypeError:
        return None


def spellings(text: str, tokenizer: Any) -> list[list[int]]:
    """The distinct non-empty token sequences of ``" " + text`` and ``text``."""
    variants: list[list[int]] = []
    for variant in (" " + text, text):
        ids = [int(t) for t in tokenizer.encode(variant, add_special_tokens=False)]
        if ids and ids not in variants:
            variants.append(ids)
    return variants


def tokenize_phrases(texts: Sequence[str], tokenizer: Any, param: str, noun: str = "keyword",
                     max_tokens: int | None = None) -> list[list[list[int]]]:
    """Each text's spellings (see :func:`spellings`), checked; errors name ``param``.

    Refuses empty texts, texts that encode to nothing, ids outside the
    tokenizer's vocabulary and (with ``max_tokens``) spellings longer than that."""
    vocab = vocab_size(tokenizer)
    encoded: list[list[list[int]]] = []
    for i, text in enumerate(texts):
        if not text.strip():
            raise IlsiRequestError(param, f"{noun} {i} is empty")
        variants = spellings(text, tokenizer)
        if not variants:
            raise IlsiRequestError(param, f"{noun} {i} ({text!r}) encodes to no tokens")
        if vocab is not None and any(t < 0 or t >= vocab for v in variants for t in v):
            raise IlsiRequestError(param, f"{noun} {i} ({text!r}) encodes outside "
                                   f"the vocabulary (size {vocab})")
        if max_tokens is not None:
            longest = max(len(v) for v in variants)
            if longest > max_tokens:
                raise IlsiRequestError(param, f"{noun} {i} ({text!r}) is {longest} tokens "
                                       f"long; at most {max_tokens} allowed")
        encoded.append(variants)
    return encoded
