"""RAD with the reward model's KV cache vs the same server re-reading every prefix.

Two servers, identical but for ``--ilsi-reward-cache-tokens`` (the default, and
0: off), serve the same RAD requests (``{"method": "rad", "k": K}``, τ = 0, so
both choose the same tokens), interleaved per problem with the order rotating,
so drift in machine load hits both alike. Prints JSON: per server the wall time,
the reward-model tokens read and computed, summed over the problems; the ratios
(cache off / cache on); and whether the two answered token for token alike.

    python benchmarks/reward_cache.py [--pair lab|smollm2] [--problems 8] [--k 8]

``lab``: ``lab-target-early`` with the lab's process reward model, on the lab
arithmetic task. ``smollm2``: SmolLM2-135M-Instruct with its JSON outcome reward
model (SmolLM2's own body), on the JSON-extraction prompts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import requests


def rad(url: str, prompt: str, args: argparse.Namespace) -> dict[str, Any]:
    body = {"text": prompt, "sampling_params": {
        "max_new_tokens": args.max_new_tokens, "temperature": 0.0,
        "custom_params": {"ilsi": {"method": "rad", "k": args.k, "tau": 0.0,
                                   "beta": args.beta}}}}
    start = time.perf_counter()
    r = requests.post(url + "/generate", json=body, timeout=1800)
    r.raise_for_status()
    out = r.json()
    cost = out["meta_info"]["ilsi"]["cost"]
    return {"wall_s": time.perf_counter() - start, "output_ids": out["output_ids"],
            "read": cost["reward_model_tokens"],
            "computed": cost["reward_model_tokens"] - cost["reward_model_cached_tokens"]}


def pair(name: str, problems: int) -> tuple[str, str, list[str]]:
    """(policy folder, reward-model folder, prompts)."""
    if name == "lab":
        from sglang_ilsi_lab.data import synthetic
        from sglang_ilsi_lab.models import lab

        return (str(lab.folder("lab-target-early")), str(lab.folder("lab-prm")),
                [it["prompt"] for it in synthetic.arithmetic(problems, seed=1, difficulty=3)])
    from transformers import AutoTokenizer

    from sglang_ilsi_lab.models import catalog, json_orm

    policy = str(catalog.prepare("smollm2-135m-instruct"))
    tokenizer = AutoTokenizer.from_pretrained(policy)
    return (policy, str(catalog.prepare("smollm2-json-orm")),
            [json_orm.chat_prompt(tokenizer, it) for it in json_orm.heldout_problems(problems)])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pair", choices=("lab", "smollm2"), default="lab")
    p.add_argument("--problems", type=int, default=8)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--beta", type=float, default=10.0)
    p.add_argument("--max-new-tokens", type=int, default=32)
    args = p.parse_args()
    from sglang_ilsi_lab.server_process import ServerProcess

    policy, reward, prompts = pair(args.pair, args.problems)
    flags = ["--ilsi", "--ilsi-reward-model", f"rm={reward}"]
    modes = {"cache_on": [], "cache_off": ["--ilsi-reward-cache-tokens", "0"]}
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    with ServerProcess(policy, flags, ["--dtype", "float32"]) as on, \
            ServerProcess(policy, flags + modes["cache_off"], ["--dtype", "float32"]) as off:
        urls = {"cache_on": on.base_url, "cache_off": off.base_url}
        for url in urls.values():
            rad(url, prompts[0], args)  # warm-up
        for n, prompt in enumerate(prompts):
            for mode in (list(modes) if n % 2 == 0 else list(modes)[::-1]):
                runs[mode].append(rad(urls[mode], prompt, args))
    summary: dict[str, Any] = {}
    for mode, values in runs.items():
        summary[mode] = {"wall_s_total": round(sum(v["wall_s"] for v in values), 3),
                         "reward_tokens_read": sum(v["read"] for v in values),
                         "reward_tokens_computed": sum(v["computed"] for v in values)}
    on_, off_ = summary["cache_on"], summary["cache_off"]
    result = {
        "benchmark": "reward_cache", "pair": args.pair, "k": args.k,
        "max_new_tokens": args.max_new_tokens, "problems": len(prompts), **summary,
        "computed_ratio_off_over_on": round(off_["reward_tokens_computed"]
                                            / max(on_["reward_tokens_computed"], 1), 2),
        "wall_ratio_off_over_on": round(off_["wall_s_total"] / on_["wall_s_total"], 2),
        "same_tokens": all(a["output_ids"] == b["output_ids"]
                           for a, b in zip(runs["cache_on"], runs["cache_off"], strict=True)),
    }
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
