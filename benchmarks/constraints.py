"""Per-token cost of constrained decoding vs unconstrained, side by side.

For each SGLang grammar backend installed (``xgrammar``, ``outlines``,
``llguidance``), one server (plugin enabled, ``--grammar-backend B``) serves
unconstrained decoding and the same requests under a regex and a JSON schema;
the first server also serves hard lexical constraints
(``lexical_constraints``: one required and one banned phrase). Per concurrency
level the configurations are measured in interleaved rounds (plain, regex,
json, ...), so drift in machine load hits all alike; each request decodes
exactly ``--tokens`` tokens (checked): ``min_new_tokens`` keeps the end of
sequence masked, and the JSON schema's ``minItems`` keeps the array open past
that. (Without both, a grammar request could end after a few tokens, when the
matcher accepts the end of sequence, and the shorter requests' prefill and
stragglers showed up as grammar overhead: the earlier 38.8% for xgrammar's
JSON schema at 8 concurrent came from arrays closed after 7-64 tokens, mean
38.)
Prints JSON: decode tokens/s per configuration (median over rounds), its ratio
to unconstrained decoding on the same server in the same rounds, and the
overhead in percent; ``paired_*`` is the median of the per-round ratios, which
cancels load that drifts between rounds. For lexical constraints,
``stage_ms_per_token`` is the plugin's logits-stage time per request per token
(a step of ``c`` requests spends about ``c`` times that). Grammar requests are
served by SGLang's own grammar path: ``--server-args=--disable-overlap-schedule``
measures them without the overlap scheduler, which on a CPU overlaps nothing
(the forward and the grammar work share the same cores). After each backend's
server stops, ``backend_ms_per_step`` times that backend's own work for a step
of ``c`` requests in-process (``grammar_work.py``) and
``backend_pct_of_plain_step`` sets it against the server's plain step time: a
figure the machine's round-to-round noise does not blur.

    python benchmarks/constraints.py [--model-path DIR] [--levels 1,8] [--tokens 64]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import statistics
import sys
from typing import Any

from grammar_work import backend_work
from throughput import against_plain, decode_tokens_per_s, interleaved, sampling

PROMPT = "def fibonacci(n):"
# Neither can end within --tokens (run_round checks): the regex never has to end, and
# 256 integers with their commas are far more text than the default 64 tokens.
REGEX = r"[a-z0-9_ ,.():=+\-*\n]+"
JSON_SCHEMA = json.dumps({"type": "array", "items": {"type": "integer"}, "minItems": 256})
LEXICAL = {"method": "lexical_constraints", "include": ["return"], "exclude": ["self"],
           "force_after": 1_000_000}
BACKENDS = ("xgrammar", "outlines", "llguidance")


def configurations(lexical: bool) -> dict[str, dict[str, Any]]:
    configs: dict[str, dict[str, Any]] = {
        "plain": {},
        "regex": {"regex": REGEX},
        "json_schema": {"json_schema": JSON_SCHEMA},
    }
    if lexical:
        configs["lexical_constraints"] = {"custom_params": {"ilsi": LEXICAL}}
    return configs


def run_round(url: str, extra: dict[str, Any], concurrency: int, tokens: int,
              stage_ms: list[float] | None = None) -> float:
    """Decode tokens/s of ``concurrency`` simultaneous requests of exactly ``tokens``.

    For requests that name a plugin method, the logits stage's own time per
    token (``meta_info.ilsi.cost.stage_ms``, this request's share) is appended to
    ``stage_ms``: the part of the overhead that is the plugin's code.
    """
    params = sampling(tokens, min_new_tokens=tokens, **extra)
    metas: list[dict[str, Any]] = []
    rate = decode_tokens_per_s(
        url, concurrency, lambda i: {"text": f"{PROMPT} # {i}", "sampling_params": params},
        metas)
    lengths = sorted({m["completion_tokens"] for m in metas})
    if lengths != [tokens]:
        raise RuntimeError(f"requests under {sorted(extra)} decoded {lengths} tokens, not "
                           f"{tokens}: the comparison would not be per token")
    if stage_ms is not None:
        stage_ms += [m["ilsi"]["cost"]["stage_ms"] / tokens for m in metas
                     if "stage_ms" in m.get("ilsi", {}).get("cost", {})]
    return rate


def measure(url: str, configs: dict[str, dict[str, Any]], levels: list[int], tokens: int,
            rounds: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for c in levels:
        for extra in configs.values():  # warm-up, and grammar compilation caches
            run_round(url, {**extra}, c, 4)
        stage: dict[str, list[float]] = {name: [] for name in configs}
        samples = interleaved(configs, rounds, lambda name, c=c, stage=stage: run_round(
            url, configs[name], c, tokens, stage[name]))
        results[str(c)] = against_plain(samples)
        for name, per_token in stage.items():
            if per_token:  # per request; a step serves `c` requests
                results[str(c)][name]["stage_ms_per_token"] = round(
                    statistics.mean(per_token), 3)
        print(f"[bench] concurrency {c} done", file=sys.stderr, flush=True)
    return results


def add_backend_work(results: dict[str, Any], model: str, backend: str, tokens: int) -> None:
    """Beside each grammar's end-to-end figures: the backend's own ms per step of
    ``c`` requests (``grammar_work.py``) and its share of a plain step on the
    server (``c`` tokens at the plain rate)."""
    kinds = {"regex": ("regex", REGEX), "json_schema": ("json", JSON_SCHEMA)}
    for c, row in results.items():
        work = backend_work(model, backend, kinds, rows=int(c), steps=tokens)
        plain_step_ms = 1000.0 * int(c) / row["plain"]["tokens_per_s"]
        for name, ms in work.items():
            row[name]["backend_ms_per_step"] = ms
            row[name]["backend_pct_of_plain_step"] = round(100.0 * ms / plain_step_ms, 2)


def installed_backends() -> list[str]:
    modules = {"xgrammar": "xgrammar", "outlines": "outlines", "llguidance": "llguidance"}
    return [b for b in BACKENDS if importlib.util.find_spec(modules[b]) is not None]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-path", default=None, help="model folder (default: embedded tiny model)")
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--levels", default="1,8")
    ap.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-backend-work", action="store_true",
                    help="skip the in-process timing of each backend's own work per step")
    ap.add_argument("--server-args", default="",
                    help="extra SGLang launch flags, e.g. '--disable-overlap-schedule'")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    wanted = [b for b in args.backends.split(",") if b]
    available = installed_backends()
    from sglang_ilsi_lab.server_process import ServerProcess

    sglang_args: list[str] = shlex.split(args.server_args)
    model = args.model_path
    if model is None:
        from sglang_ilsi_lab.models import tiny

        model, sglang_args = str(tiny.ensure()), [*sglang_args, "--dtype", "float32"]
    out: dict[str, Any] = {
        "benchmark": "constraints", "model": model, "tokens_per_request": args.tokens,
        "rounds": args.rounds, "sampling": "temperature 0.8, ignore_eos, min_new_tokens",
        "regex": REGEX, "json_schema": JSON_SCHEMA, "lexical_constraints": LEXICAL,
        "server_args": sglang_args, "backends": {}, "not_installed": [b for b in wanted if b not in available],
    }
    for i, backend in enumerate(b for b in wanted if b in available):
        configs = configurations(lexical=(i == 0))
        with ServerProcess(model, ["--ilsi"], [*sglang_args, "--grammar-backend", backend]) as s:
            out["backends"][backend] = measure(s.base_url, configs, levels, args.tokens,
                                               args.rounds)
        if not args.no_backend_work:  # after the server is gone: nothing else on the cores
            add_backend_work(out["backends"][backend], model, backend, args.tokens)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
