"""PRM beam search: one sglang-ilsi call vs the same search driven from a client.

One server (``lab-target-early`` with the lab's process reward model
co-resident, ``--ilsi-reward-model prm=...``) serves, interleaved per problem
(the order rotates, so drift in machine load hits all alike):

- ``one_call``: ``{"method": "prm_beam_search", "n": N, "beam_width": M}`` — the
  whole search inside the server: each step's N children decode as one batch
  sharing their parents' KV, and are scored in-process by the reward model;
- ``client_batched``: the same search driven step by step from a client
  (``sglang_ilsi_lab.client_search``): per step one ``/generate`` carrying all N
  children and one ``POST /ilsi/reward`` (the reward model over HTTP) — the
  best a client can do;
- ``client_per_node``: the same, one ``/generate`` per node one after another
  (the proxy pattern of its_hub / optillm: N sequential calls per step).

Prints JSON: per mode the wall time and policy tokens summed over the problems,
the medians per problem, and the speed-ups of ``one_call`` (total and median of
the per-problem ratios). The lab model is small, so this measures what the
search loop costs beyond the model's own work: HTTP round trips, request
parsing, tokenisation, scheduling, reward-model calls.

    python benchmarks/search.py [--problems 12] [--n 8] [--beam-width 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import requests


def one_call(url: str, prompt: str, args: argparse.Namespace) -> tuple[float, int]:
    body = {"text": prompt, "sampling_params": {
        "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
        "custom_params": {"ilsi": {"method": "prm_beam_search", "n": args.n,
                                   "beam_width": args.beam_width, "max_steps": args.max_steps,
                                   "reward_model": "prm"}}}}
    start = time.perf_counter()
    r = requests.post(url + "/generate", json=body, timeout=600)
    r.raise_for_status()
    wall = time.perf_counter() - start
    return wall, int(r.json()["meta_info"]["ilsi"]["cost"]["policy_completion_tokens"])


def client_driven(url: str, prompt: str, prompt_ids: list[int], args: argparse.Namespace,
                  per_node: bool) -> tuple[float, int]:
    from sglang_ilsi_lab.client_search import ClientSearch, http_scorer

    search = ClientSearch(url, prompt, http_scorer(url, "prm"), max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, prompt_ids=prompt_ids,
                          per_node=per_node)
    start = time.perf_counter()
    search.beam_search(args.n, args.beam_width, args.max_steps)
    return time.perf_counter() - start, search.completion_tokens


def summarise(runs: dict[str, list[tuple[float, int]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode, values in runs.items():
        walls = [w for w, _ in values]
        out[mode] = {"wall_s_total": round(sum(walls), 3),
                     "wall_s_median": round(statistics.median(walls), 4),
                     "policy_tokens_total": sum(t for _, t in values)}
    base = runs["one_call"]
    for mode in ("client_batched", "client_per_node"):
        ratios = [c[0] / o[0] for c, o in zip(runs[mode], base, strict=True)]
        out[f"speedup_vs_{mode}"] = {
            "total": round(out[mode]["wall_s_total"] / out["one_call"]["wall_s_total"], 2),
            "median_per_problem": round(statistics.median(ratios), 2),
            "tokens_per_second_ratio": round(
                (out["one_call"]["policy_tokens_total"] / out["one_call"]["wall_s_total"])
                / (out[mode]["policy_tokens_total"] / out[mode]["wall_s_total"]), 2)}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", type=int, default=12)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--beam-width", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=6)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--url", default=None, help="a running server (lab-target-early with "
                   "--ilsi-reward-model prm=...) instead of starting one")
    args = p.parse_args()
    from transformers import AutoTokenizer

    from sglang_ilsi_lab.data import synthetic
    from sglang_ilsi_lab.models import lab
    from sglang_ilsi_lab.server_process import ServerProcess

    policy = str(lab.folder("lab-target-early"))
    tokenizer = AutoTokenizer.from_pretrained(policy)
    items = synthetic.arithmetic(args.problems, seed=1, difficulty=3)

    def measure(url: str) -> dict[str, Any]:
        modes = ("one_call", "client_batched", "client_per_node")
        runs: dict[str, list[tuple[float, int]]] = {m: [] for m in modes}
        one_call(url, items[0]["prompt"], args)  # warm-up
        for k, item in enumerate(items):
            ids = tokenizer.encode(item["prompt"])
            order = modes[k % 3:] + modes[:k % 3]
            for mode in order:
                if mode == "one_call":
                    runs[mode].append(one_call(url, item["prompt"], args))
                else:
                    runs[mode].append(client_driven(url, item["prompt"], ids, args,
                                                    mode == "client_per_node"))
        return summarise(runs)

    config = {"policy": "lab-target-early", "reward_model": "lab-prm", "n": args.n,
              "beam_width": args.beam_width, "max_steps": args.max_steps,
              "problems": args.problems, "temperature": args.temperature}
    if args.url:
        result = measure(args.url)
    else:
        prm = str(lab.folder("lab-prm"))
        with ServerProcess(policy, ["--ilsi", "--ilsi-reward-model", f"prm={prm}"],
                           ["--dtype", "float32"]) as server:
            result = measure(server.base_url)
    json.dump({"config": config, **result}, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
