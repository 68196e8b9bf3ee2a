"""Self-consistency N=16: one sglang-ilsi call vs the proxy pattern, side by side.

On one server with the plugin, measures in interleaved rounds:
- ``ilsi``: one request ``{"method": "self_consistency", "n": 16}`` (N samples
  forked inside the server, prompt prefilled once, selection in the server);
- ``sequential``: 16 requests one after another and a client-side vote (what
  proxies such as optillm do);
- ``one_n16``: one plain request with ``n=16`` (SGLang's parallel sampling,
  no selection) — the floor our call is compared with.
Then the MBR utility-matrix time for N=16/32/64 (chrF, BLEU, ROUGE-L) on
candidate texts of realistic length. Prints JSON with the ratios.

    python benchmarks/selection.py [--model-path DIR | --url URL]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from typing import Any

import requests

from sglang_ilsi.registry import get_rule
from sglang_ilsi.selection import Candidate, utility_matrix

PROMPT = "Question: what is 12 + 30? Think, then answer after ####.\n"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ilsi_call(url: str, n: int, tokens: int) -> None:
    body = {"text": PROMPT, "sampling_params": {
        "max_new_tokens": tokens, "temperature": 0.8, "ignore_eos": True,
        "custom_params": {"ilsi": {"method": "self_consistency", "n": n}}}}
    r = requests.post(url + "/generate", json=body, timeout=600)
    r.raise_for_status()


def sequential_calls(url: str, n: int, tokens: int) -> None:
    texts = []
    for _ in range(n):
        body = {"text": PROMPT, "sampling_params": {
            "max_new_tokens": tokens, "temperature": 0.8, "ignore_eos": True}}
        r = requests.post(url + "/generate", json=body, timeout=600)
        r.raise_for_status()
        texts.append(r.json()["text"])
    rule = get_rule("self_consistency")
    rule.select([Candidate(i, t) for i, t in enumerate(texts)], rule.validate({"n": n}))


def one_n_call(url: str, n: int, tokens: int) -> None:
    body = {"text": PROMPT, "sampling_params": {
        "max_new_tokens": tokens, "temperature": 0.8, "ignore_eos": True, "n": n}}
    r = requests.post(url + "/generate", json=body, timeout=600)
    r.raise_for_status()


def measure_calls(url: str, n: int, tokens: int, rounds: int) -> dict[str, Any]:
    ilsi_call(url, 2, 4)  # warm-up
    times: dict[str, list[float]] = {"ilsi": [], "sequential": [], "one_n16": []}
    for _ in range(rounds):
        times["ilsi"].append(timed(lambda: ilsi_call(url, n, tokens)))
        times["sequential"].append(timed(lambda: sequential_calls(url, n, tokens)))
        times["one_n16"].append(timed(lambda: one_n_call(url, n, tokens)))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "seconds_median": {k: round(v, 4) for k, v in med.items()},
        "seconds_rounds": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "ilsi_over_one_n16": round(med["ilsi"] / med["one_n16"], 3),
        "sequential_over_ilsi": round(med["sequential"] / med["ilsi"], 3),
    }


def measure_matrices(repeats: int = 5) -> dict[str, Any]:
    rng = random.Random(0)
    words = ("the a of to and in is it that for on was with as be at by this had not are "
             "but from or have an they which one you were her all she there would their we "
             "him been has when who will more no if out so said what up its about into than "
             "them can only other new some could time these two may then do first any my now "
             "such like our over man me even most made after also did many before must").split()
    out: dict[str, Any] = {}
    for n in (16, 32, 64):
        texts = [" ".join(rng.choice(words) for _ in range(rng.randint(50, 90))) for _ in range(n)]
        out[str(n)] = {}
        for utility in ("chrf", "bleu", "rouge_l"):
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                utility_matrix(utility, texts)
                samples.append((time.perf_counter() - start) * 1000)
            out[str(n)][utility] = round(statistics.median(samples), 2)
    return {"ms_median": out, "chars_per_candidate": "about 300-550"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-path", default=None)
    ap.add_argument("--url", default=None)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    meta: dict[str, Any] = {"n": args.n, "tokens_per_candidate": args.tokens,
                            "rounds": args.rounds}
    if args.url:
        calls = measure_calls(args.url, args.n, args.tokens, args.rounds)
    else:
        from sglang_ilsi_lab.server_process import ServerProcess

        model, sglang_args = args.model_path, []
        if model is None:
            from sglang_ilsi_lab.models import tiny

            model, sglang_args = str(tiny.ensure()), ["--dtype", "float32"]
        meta["model"] = model
        with ServerProcess(model, ["--ilsi"], sglang_args) as server:
            calls = measure_calls(server.base_url, args.n, args.tokens, args.rounds)
    print(json.dumps({"benchmark": "selection", **meta, "self_consistency": calls,
                      "mbr_utility_matrix": measure_matrices()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
