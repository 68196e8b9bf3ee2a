"""Shared pieces of the throughput benchmarks: concurrent decode rounds,
interleaved over configurations, summarised against plain decoding."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests


def sampling(tokens: int, **extra: Any) -> dict[str, Any]:
    """The benchmarks' sampling params: T=0.8, exactly ``tokens`` new tokens."""
    return {"max_new_tokens": tokens, "temperature": 0.8, "ignore_eos": True, **extra}


def decode_tokens_per_s(url: str, concurrency: int, body: Callable[[int], dict],
                        metas: list[dict[str, Any]] | None = None) -> float:
    """Tokens/s of ``concurrency`` simultaneous ``/generate`` calls, ``body(i)`` each;
    each response's ``meta_info`` is appended to ``metas`` when given."""

    def one(i: int) -> int:
        r = requests.post(url + "/generate", json=body(i), timeout=600)
        r.raise_for_status()
        meta = r.json()["meta_info"]
        if metas is not None:
            metas.append(meta)
        return meta["completion_tokens"]

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        produced = sum(pool.map(one, range(concurrency)))
    return produced / (time.perf_counter() - start)


def interleaved(names: Iterable[str], rounds: int,
                run: Callable[[str], float]) -> dict[str, list[float]]:
    """``rounds`` rounds of ``run(name)`` for every name in turn, so that drift in
    machine load hits all configurations alike."""
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in samples:
            samples[name].append(run(name))
    return samples


def against_plain(samples: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Median tokens/s per configuration and its ratio to ``samples["plain"]``.

    ``paired_ratio`` is the median over rounds of each round's ratio to plain in
    the same round: load that drifts between rounds (this 2-core machine varies
    by ±10%) cancels in it, so it is the steadier figure of the two.
    """
    plain = statistics.median(samples["plain"])
    out: dict[str, dict[str, Any]] = {}
    for name, v in samples.items():
        paired = statistics.median(x / p for x, p in zip(v, samples["plain"], strict=True))
        out[name] = {
            "tokens_per_s": round(statistics.median(v), 1),
            "ratio_to_plain": round(statistics.median(v) / plain, 3),
            "overhead_pct": round(100 * (1 - statistics.median(v) / plain), 1),
            "paired_ratio": round(paired, 3),
            "paired_overhead_pct": round(100 * (1 - paired), 1),
            "rounds": [round(x, 1) for x in v],
        }
    return out
