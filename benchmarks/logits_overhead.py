"""Decode throughput of plain SGLang vs each logits-stage method, side by side.

One server (plugin enabled) serves every configuration; for each concurrency
level the methods are measured in interleaved rounds (plain, m1, m2, ...,
plain, m1, ...) so that drift in machine load hits all alike. Prints JSON:
tokens/s per (method, concurrency), the median over rounds, and the ratio to
plain decoding measured in the same rounds.

    python benchmarks/logits_overhead.py [--model-path DIR | --url URL]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from throughput import against_plain, decode_tokens_per_s, interleaved, sampling

from sglang_ilsi import registry

PARAMS: dict[str, dict[str, Any]] = {
    "keyword_boost": {"keywords": ["return", "self"]},
}
PROMPT = "def fibonacci(n):"


def run_round(url: str, method: str | None, concurrency: int, tokens: int) -> float:
    """Decode tokens/s of ``concurrency`` simultaneous requests."""
    extra = {} if method is None else {
        "custom_params": {"ilsi": {"method": method, **PARAMS.get(method, {})}}}
    params = sampling(tokens, **extra)
    return decode_tokens_per_s(
        url, concurrency, lambda i: {"text": f"{PROMPT} # {i}", "sampling_params": params})


def measure(url: str, methods: list[str], levels: list[int], tokens: int, rounds: int) -> dict:
    results: dict[str, Any] = {}
    for c in levels:
        run_round(url, None, c, 8)  # warm-up
        samples = interleaved(["plain", *methods], rounds, lambda m, c=c: run_round(
            url, None if m == "plain" else m, c, tokens))
        results[str(c)] = against_plain(samples)
        print(f"[bench] concurrency {c} done", file=sys.stderr, flush=True)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-path", default=None, help="model folder (default: embedded tiny model)")
    ap.add_argument("--url", default=None, help="use a running server with the plugin")
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--methods", default="all")
    args = ap.parse_args()
    methods = (sorted(registry.logits_methods()) if args.methods == "all"
               else args.methods.split(","))
    levels = [int(x) for x in args.levels.split(",")]

    meta: dict[str, Any] = {"tokens_per_request": args.tokens, "rounds": args.rounds,
                            "sampling": "temperature 0.8, ignore_eos"}
    if args.url:
        results = measure(args.url, methods, levels, args.tokens, args.rounds)
        meta["server"] = args.url
    else:
        from sglang_ilsi_lab.server_process import ServerProcess

        sglang_args: list[str] = []
        model = args.model_path
        if model is None:
            from sglang_ilsi_lab.models import tiny

            model, sglang_args = str(tiny.ensure()), ["--dtype", "float32"]
        meta["model"] = model
        with ServerProcess(model, ["--ilsi"], sglang_args) as server:
            results = measure(server.base_url, methods, levels, args.tokens, args.rounds)
    print(json.dumps({"benchmark": "logits_overhead", **meta, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
