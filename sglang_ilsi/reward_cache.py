"""A co-resident reward model's own KV cache: prefixes it has read, kept for the next read.

RAD (Deng & Raffel 2023) scores the k candidate next tokens of every step with a
*unidirectional* reward model, so that the prefix it has read stays cached and
each step costs only the new tokens. ARGS, controlled decoding and the step
searches read growing prefixes the same way. Each local reward model
(:class:`sglang_ilsi.reward.RewardModel`) keeps a :class:`PrefixCache`: its
entries are token sequences it has read, each with every layer's keys and
values and the per-position score. A read looks up the longest entry that
starts its input and runs only the rest on top of that entry's KV.

What is kept: after each request's read (one scoring job), the longest prefix
shared by all of that job's inputs (for RAD: the prompt and the text chosen so
far). An entry that the new one extends is dropped, so a request's cache moves
forward with it instead of keeping a copy per step. The cache holds at most
``capacity_tokens`` tokens (``--ilsi-reward-cache-tokens``, 0: off) and
evicts the least recently used entries; its memory is that many tokens times
:func:`kv_bytes_per_token`, reported by ``GET /ilsi/reward``. These KV slots are
the reward model's own, in the process that runs it (the HTTP process), not in
SGLang's pool. An evicted or missing prefix is read again in full: the cache
changes what is computed, not the scores (equal to a full read up to float
rounding).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CAPACITY_TOKENS = 16384


@dataclass
class CachedPrefix:
    """Token ids a reward model has read, with each layer's keys and values
    (``[1, kv_heads, len, head_dim]``) and the score at every position."""

    ids: tuple[int, ...]
    keys: list[Any]
    values: list[Any]
    probs: Any  # 1-D tensor, one score per position

    def __len__(self) -> int:
        return len(self.ids)


def kv_bytes_per_token(config: Any, element_size: int) -> int:
    """Bytes of keys and values one token takes in a decoder of this HF config."""
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return 2 * int(config.num_hidden_layers) * kv_heads * head_dim * element_size


@dataclass
class PrefixCache:
    """Least-recently-used prefixes, at most ``capacity_tokens`` tokens in all."""

    capacity_tokens: int
    bytes_per_token: int
    _entries: OrderedDict[tuple[int, ...], CachedPrefix] = field(default_factory=OrderedDict)
    tokens_in_use: int = 0
    hits: int = 0
    lookups: int = 0
    tokens_reused: int = 0
    evictions: int = 0

    def longest(self, ids: Sequence[int]) -> CachedPrefix | None:
        """The longest entry that ``ids`` starts with (marked recently used)."""
        self.lookups += 1
        best: CachedPrefix | None = None
        for entry in self._entries.values():
            n = len(entry)
            if n <= len(ids) and (best is None or n > len(best)) and (
                    ids[n - 1] == entry.ids[-1] and tuple(ids[:n]) == entry.ids):
                best = entry
        if best is not None:
            self._entries.move_to_end(best.ids)
            self.hits += 1
            self.tokens_reused += len(best)
        return best

    def put(self, entry: CachedPrefix, extends: CachedPrefix | None = None) -> None:
        """Keep ``entry``; drop ``extends`` (a prefix of it); evict to fit."""
        if extends is not None and self._entries.pop(extends.ids, None) is not None:
            self.tokens_in_use -= len(extends)
        if len(entry) == 0 or len(entry) > self.capacity_tokens:
            return
        old = self._entries.pop(entry.ids, None)
        if old is not None:
            self.tokens_in_use -= len(old)
        self._entries[entry.ids] = entry
        self.tokens_in_use += len(entry)
        while self.tokens_in_use > self.capacity_tokens:
            _, evicted = self._entries.popitem(last=False)
            self.tokens_in_use -= len(evicted)
            self.evictions += 1

    def describe(self) -> dict[str, Any]:
        """The cache's size and use, for ``GET /ilsi/reward``."""
        return {"capacity_tokens": self.capacity_tokens,
                "bytes_per_token": self.bytes_per_token,
                "capacity_bytes": self.capacity_tokens * self.bytes_per_token,
                "entries": len(self._entries), "tokens_in_use": self.tokens_in_use,
                "bytes_in_use": self.tokens_in_use * self.bytes_per_token,
                "lookups": self.lookups, "hits": self.hits,
                "tokens_reused": self.tokens_reused, "evictions": self.evictions}


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all ``rows`` share."""
    if not rows:
        return 0
    first = rows[0]
    n = min(len(r) for r in rows)
    for i in range(n):
        token = first[i]
        if any(r[i] != token for r in rows):
            return i
    return n
