"""Decode throughput of plain SGLang vs each logits-stage method, side by side.

One server (plugin enabled) serves every configuration; for each concurrency
level the methods are measured in interleaved rounds (plain, m1, m2, ...,
plain, m1, ...) so that drift in machine load hits all alike. Prints JSON:
tokens/s per (method, concurrency), the median over rounds, and the ratio to
plain decoding measured in the same rounds.

    python benchmarks/logits_overhead.py [--model-path DIR | --url URL]

``--stage`` measures the logits stage alone, without a server or a model: its host
time per step (``apply_methods`` on synthetic logits, vocabulary 128k by default)
against the batch size, for every logits method and for a probe that reads its
parameters and returns the logits (the stage's own bookkeeping: the figure the
issue's target, 150 µs + 2 µs per row, is about). Each figure is measured side by
side with the stage as it was before its layouts and parameter tensors were kept
(``rebuilt``: everything built from Python lists at every step), in interleaved
rounds. On CUDA the device is synchronized outside the timed host region; on a
CPU the host time includes the methods' tensor math, so the methods' figures
there are compute figures and only the probe's is the stage's overhead. For the
accelerator path each method also gets, from a dry run on PyTorch's ``meta`` device,
the operators one step dispatches at each batch size (about one kernel launch each)
and what it reads back from the device (a host-device sync), if anything.

    python benchmarks/logits_overhead.py --stage [--device cuda] [--batches 1,32,256]
"""

from __future__ import annotations

import argparse
import json
import statistics
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


def _timed_pair(st: Any, method: Any, batch: int, vocab: int, device: str, steps: int,
                rounds: int, budget_s: float) -> dict[str, Any]:
    """Host µs per step, kept layouts vs rebuilt each step, in interleaved rounds."""
    kept = st.make_batch(method, batch, vocab, device)
    rebuilt = st.make_batch(method, batch, vocab, device)
    first = st.time_stage(kept, steps=1, warmup=1, record=True)["median_us"]
    n = max(2, min(steps, int(budget_s * 1e6 / max(first, 1.0) / (2 * rounds))))
    times: dict[str, list[float]] = {"kept": [], "rebuilt": []}
    for _ in range(rounds):
        times["kept"].append(st.time_stage(kept, steps=n, warmup=0, record=True)["median_us"])
        times["rebuilt"].append(st.time_stage(rebuilt, steps=n, warmup=0, record=True,
                                              apply=st.apply_rebuilt)["median_us"])
    out: dict[str, Any] = {k: round(statistics.median(v), 1) for k, v in times.items()}
    out["ratio"] = round(out["kept"] / out["rebuilt"], 3) if out["rebuilt"] else None
    out["steps"] = n * rounds
    return out


def stage_only(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--stage`` figures (see the module docstring)."""
    import torch

    from sglang_ilsi.engine.scheduler import stage_timing as st

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    batches = [int(x) for x in args.batches.split(",")]
    method_batches = ([int(x) for x in args.method_batches.split(",")] if args.method_batches
                      else (batches if device != "cpu" else [b for b in batches if b <= 32]))
    methods = (st.logits_method_names() if args.methods == "all" else args.methods.split(","))
    probe: dict[str, Any] = {}
    for b in batches:
        figure = _timed_pair(st, st.StageProbe, b, args.vocab, device, args.steps * 10,
                             args.rounds, args.budget)
        figure["target_us"] = 150 + 2 * b
        figure["within_target"] = figure["kept"] <= figure["target_us"]
        probe[str(b)] = figure
        print(f"[stage] probe batch {b}: {figure}", file=sys.stderr, flush=True)
    per_method: dict[str, Any] = {}
    for name in methods:
        # The accelerator path without an accelerator (meta tensors): the operators a
        # step dispatches (≈ kernel launches) by batch size, and any read back.
        per_method[name] = {"device_ops": {str(b): st.device_ops(name, b) for b in batches},
                            "device_read": st.device_read(name)}
        for b in method_batches:
            try:
                figure = _timed_pair(st, name, b, args.vocab, device, args.steps,
                                     args.rounds, args.budget)
            except Exception as e:  # a method this harness cannot feed: say so, go on
                figure = {"skipped": f"{type(e).__name__}: {e}"[:200]}
            per_method[name][str(b)] = figure
            print(f"[stage] {name} batch {b}: {figure}", file=sys.stderr, flush=True)
    return {"benchmark": "logits_stage", "device": device, "vocab": args.vocab,
            "unit": "host µs per step (median)", "torch": torch.__version__,
            "probe": probe, "methods": per_method}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stage", action="store_true",
                    help="time the logits stage alone on synthetic logits (no server)")
    ap.add_argument("--vocab", type=int, default=131072, help="--stage: vocabulary size")
    ap.add_argument("--batches", default="1,32,256", help="--stage: batch sizes")
    ap.add_argument("--method-batches", default=None,
                    help="--stage: batch sizes for the methods (default: --batches; "
                         "on a CPU those up to 32)")
    ap.add_argument("--device", default="auto", help="--stage: cpu, cuda or auto")
    ap.add_argument("--steps", type=int, default=10, help="--stage: most steps per round")
    ap.add_argument("--budget", type=float, default=1.0,
                    help="--stage: seconds per figure (fewer steps for slow ones)")
    ap.add_argument("--model-path", default=None, help="model folder (default: embedded tiny model)")
    ap.add_argument("--url", default=None, help="use a running server with the plugin")
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--methods", default="all")
    args = ap.parse_args()
    if args.stage:
        print(json.dumps(stage_only(args), indent=2))
        return 0
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
