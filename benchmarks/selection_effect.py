"""Effect of the selection methods on a checkable task, with bootstrap CIs.

Serves the lab pair's early checkpoint (``lab-target-early``, greedy accuracy
about 0.6 on held-out arithmetic) with the plugin and measures, on the same
held-out items: greedy decoding, one sample at temperature T, and
self-consistency / early-stopping self-consistency (one call each, N samples
inside the server). Prints JSON: accuracy with a 95% bootstrap interval, mean
samples per item and wall time per method.

    python benchmarks/selection_effect.py [--items 100] [--n 8]

(`sglang-ilsi bench --tasks arithmetic` runs the same comparison, and more, resumably.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from sglang_ilsi_lab.bench.stats import mean_ci
from sglang_ilsi_lab.data import synthetic
from sglang_ilsi_lab.models import catalog


def run(url: str, items: list[dict], ilsi: dict | None, temperature: float) -> dict[str, Any]:
    def one(item: dict) -> tuple[int, int]:
        params: dict[str, Any] = {"max_new_tokens": 48, "temperature": temperature}
        if ilsi is not None:
            params["custom_params"] = {"ilsi": ilsi}
        out = requests.post(url + "/generate", json={"text": item["prompt"],
                                                     "sampling_params": params}, timeout=600)
        out.raise_for_status()
        body = out.json()
        samples = body["meta_info"].get("ilsi", {}).get("cost", {}).get("samples", 1)
        return int(synthetic.check("arithmetic", body["text"], item)), samples

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, items))
    correct = [c for c, _ in results]
    ci = mean_ci(correct)
    low, high = ci["ci_low"], ci["ci_high"]
    return {"accuracy": round(sum(correct) / len(correct), 4), "ci95": [round(low, 4), round(high, 4)],
            "mean_samples": round(sum(s for _, s in results) / len(results), 2),
            "seconds": round(time.perf_counter() - start, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.7)
    args = ap.parse_args()
    from sglang_ilsi_lab.server_process import ServerProcess

    items = synthetic.arithmetic(args.items, seed=1)
    model = str(catalog.prepare("lab-target-early"))
    configs = {
        "greedy": (None, 0.0),
        "single_sample": (None, args.temperature),
        "self_consistency": ({"method": "self_consistency", "n": args.n,
                              "extractor": "hash_marker"}, args.temperature),
        "esc": ({"method": "esc", "n": args.n, "window": 4, "extractor": "hash_marker"},
                args.temperature),
    }
    with ServerProcess(model, ["--ilsi"], ["--dtype", "float32"]) as server:
        results = {name: run(server.base_url, items, ilsi, t)
                   for name, (ilsi, t) in configs.items()}
    print(json.dumps({"benchmark": "selection_effect", "model": "lab-target-early",
                      "task": "arithmetic (held-out, seed 1)", "items": args.items,
                      "n": args.n, "temperature": args.temperature, "results": results},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
