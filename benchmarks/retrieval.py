"""kNN-LM serving cost: datastore build throughput, then decode tokens/s of plain
vs kNN-LM requests on one server, side by side.

1. **Build.** A corpus of CPython standard-library sources (copied from this
   interpreter's own ``stdlib``, no download) is turned into stores of
   ``--entries`` entries by ``sglang_ilsi.datastore.build`` — one exact
   (``flat``) and one approximate (``ivf``, its recall recorded by the
   builder) — timed as entries (tokens keyed) per second of the whole build
   (tokenise, forward with 50% window overlap, faiss training and adding).
2. **Decode.** One server loads both stores (``--ilsi-datastore``). For each
   concurrency (1 and 16 by default) rounds of ``plain``, ``knn_ivf`` and
   ``knn_flat`` requests alternate, the order rotating per round so that drift in
   machine load hits all alike; each request decodes ``--tokens`` tokens with
   ``ignore_eos``. Reported: completion tokens/s per mode and the ratio to plain.

The model defaults to the tiny test model (64-d keys), whose own decode step is
short: the ratio then shows the search's cost at its most visible. Prints JSON.

    python benchmarks/retrieval.py [--model PATH] [--entries 1000000] [--rounds 3]
        [--indexes flat,ivf] [--window 512 --stride 256] [--keep DIR]
        [--variants ivf8=ivf:8,sq8=ivfsq8:32]

``--variants`` adds stores made from the first store's keys by ``datastore reindex``
(another index kind or probe count, no forward pass), so index settings are compared
on one server with the same keys.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from sglang_ilsi import datastore


def stdlib_corpus(out: Path, chars: int) -> int:
    """Copy standard-library ``.py`` files (not site-packages) into ``out`` until
    ``chars`` characters; return the count."""
    root = Path(sysconfig.get_paths()["stdlib"])
    total = 0
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in ("site-packages", "dist-packages", "test", "idlelib"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        total += len(text)
        if total >= chars:
            break
    return total


def build_stores(model: str, root: Path, entries: int, kinds: list[str], window: int = 512,
                 stride: int = 256) -> dict[str, Any]:
    """Build the stores of ``kinds`` under ``root``; a store already there (``--keep``)
    is checked and reused, reported with ``reused`` and its own build's figures."""
    corpus = root / "corpus"
    results: dict[str, Any] = {"window": window, "stride": stride}
    for kind in kinds:
        if (root / kind / datastore.META).is_file():
            meta = datastore.verify(str(root / kind), model)
            results[kind] = {"entries": meta["entries"], "index": meta["index"],
                             "reused": True, "built_at": meta["built_at"]}
            continue
        if not corpus.is_dir():
            corpus.mkdir(parents=True)
            # ample: the build stops at `entries`
            results["corpus_chars"] = stdlib_corpus(corpus, chars=entries * 6)
        options = datastore.BuildOptions(index=kind, max_entries=entries, window=window,
                                         stride=stride, batch_windows=16)
        start = time.perf_counter()
        meta = datastore.build(str(corpus), model, str(root / kind), options, quiet=True)
        wall = time.perf_counter() - start
        results[kind] = {"entries": meta["entries"], "build_s": round(wall, 2),
                         "build_entries_per_s": round(meta["entries"] / wall, 1),
                         "index": meta["index"]}
    return results


def reindexed_stores(root: Path, source: str, variants: list[str]) -> dict[str, Any]:
    """Stores ``NAME=KIND:NPROBE`` made from ``source``'s keys by ``datastore.reindex``
    (no forward pass), timed; one already there is reused."""
    results: dict[str, Any] = {}
    for variant in variants:
        name, _, spec = variant.partition("=")
        kind, _, nprobe = spec.partition(":")
        out = root / name
        if (out / datastore.META).is_file():
            meta = datastore.verify(str(out))
            results[name] = {"index": meta["index"], "reused": True}
            continue
        start = time.perf_counter()
        meta = datastore.reindex(str(root / source), str(out), datastore.BuildOptions(
            index=kind, nprobe=int(nprobe or 32)))
        results[name] = {"index": meta["index"], "from": source,
                         "reindex_s": round(time.perf_counter() - start, 2)}
    return results


def decode_round(url: str, prompts: list[str], ilsi: dict | None, tokens: int
                 ) -> tuple[float, int, list[dict]]:
    """One round of concurrent requests: wall seconds, completion tokens, and each
    request's cost report (for the per-step search and stage times)."""
    def one(prompt: str) -> tuple[int, dict]:
        params: dict[str, Any] = {"max_new_tokens": tokens, "temperature": 0,
                                  "ignore_eos": True}
        if ilsi:
            params["custom_params"] = {"ilsi": ilsi}
        r = requests.post(url + "/generate", json={"text": prompt, "sampling_params": params},
                          timeout=600)
        r.raise_for_status()
        meta = r.json()["meta_info"]
        return int(meta["completion_tokens"]), (meta.get("ilsi") or {}).get("cost", {})

    start = time.perf_counter()
    with ThreadPoolExecutor(len(prompts)) as pool:
        outs = list(pool.map(one, prompts))
    return time.perf_counter() - start, sum(n for n, _ in outs), [c for _, c in outs]


def per_step_ms(costs: list[dict]) -> dict[str, float]:
    """Mean per request and step: the companion stage's time (the store search and the
    hand-over) and the logits stage's (the mixing)."""
    steps = sum(c.get("steps", 0) for c in costs) or 1
    return {"search_ms": round(sum(c.get("extra_distributions_ms", 0.0) for c in costs) / steps, 3),
            "mix_ms": round(sum(c.get("stage_ms", 0.0) for c in costs) / steps, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the tiny model)")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--indexes", default="flat,ivf",
                        help="the stores to build and compare (flat, ivf, ivfsq8, ivfpq)")
    parser.add_argument("--variants", default="",
                        help="more stores made from the first store's keys without a forward "
                        "pass (datastore reindex), NAME=KIND:NPROBE,... e.g. "
                        "ivf8=ivf:8,sq8=ivfsq8:32")
    parser.add_argument("--keep", default=None,
                        help="build the stores in this folder and keep them; stores already "
                        "there are reused (default: a temporary folder, removed)")
    parser.add_argument("--window", type=int, default=512, help="build: tokens per forward")
    parser.add_argument("--stride", type=int, default=256,
                        help="build: new keys per later window (window - stride - 1 of context)")
    args = parser.parse_args()
    kinds = args.indexes.split(",")
    variants = [v for v in args.variants.split(",") if v]

    from sglang_ilsi_lab.models import tiny
    from sglang_ilsi_lab.server_process import ServerProcess

    model = args.model or str(tiny.ensure())
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ilsi-retrieval-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        report: dict[str, Any] = {"model": model, "k": args.k, "tokens": args.tokens,
                                  "build": build_stores(model, root, args.entries, kinds,
                                                        args.window, args.stride)}
        if variants:
            report["reindexed"] = reindexed_stores(root, kinds[0], variants)
        stores = kinds + [v.partition("=")[0] for v in variants]
        knn = {"method": "knn_lm", "k": args.k, "knn_temperature": 10.0, "lambda": 0.25}
        modes: dict[str, dict | None] = {"plain": None}
        modes.update({f"knn_{name}": {**knn, "datastore": name} for name in stores})
        flags = ["--ilsi", *(a for name in stores
                             for a in ("--ilsi-datastore", f"{name}={root / name}"))]
        prompts = ["def main(argv):", "import os\nclass Path:", "for key, value in items:",
                   "    raise ValueError(", "# Copyright 2001", "return self._data["]
        with ServerProcess(model, flags, ["--dtype", "float32"]) as server:
            decode_round(server.base_url, prompts[:2], modes[f"knn_{kinds[0]}"], 4)  # warm up
            for concurrency in args.concurrency:
                batch = [prompts[i % len(prompts)] for i in range(concurrency)]
                walls: dict[str, list[float]] = {m: [] for m in modes}
                counts: dict[str, int] = {m: 0 for m in modes}
                costs: dict[str, list[dict]] = {m: [] for m in modes}
                names = list(modes)
                for r in range(args.rounds):
                    for name in names[r % len(names):] + names[:r % len(names)]:
                        wall, done, cost = decode_round(server.base_url, batch, modes[name],
                                                        args.tokens)
                        walls[name].append(wall)
                        counts[name] += done
                        costs[name] += cost
                rate = {m: counts[m] / sum(walls[m]) for m in modes}
                report[f"concurrency_{concurrency}"] = {
                    "tokens_per_s": {m: round(v, 1) for m, v in rate.items()},
                    "median_round_s": {m: round(statistics.median(w), 3)
                                       for m, w in walls.items()},
                    "ratio_to_plain": {m: round(rate[m] / rate["plain"], 3)
                                       for m in modes if m != "plain"},
                    "per_request_step": {m: per_step_ms(costs[m]) for m in modes if m != "plain"},
                }
        print(json.dumps(report, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
