"""Self-consistency N=16: one sglang-ilsi call vs the proxy pattern, side by side.

On one server with the plugin, measures in interleaved rounds:
- ``ilsi``: one request ``{"method": "self_consistency", "n": 16}`` (N samples
  forked inside the server, prompt prefilled once, selection in the server);
- ``sequential``: 16 requests one after another and a client-side vote (what
  proxies such as optillm do);
- ``one_n16``: one plain request with ``n=16`` (SGLang's parallel sampling,
  no selection) — the floor our call is compared with.
Then the MBR utility-matrix time for N=16/32/64 (chrF, BLEU, ROUGE-L) on
candidate texts of realistic length. Then DeepConf on the lab arithmetic task
(``lab-target-early``, its own server): online (weak traces stopped inside the
server) vs offline (filtered after all N finished) vs plain self-consistency at
N = 16 and 64, interleaved per prompt: generated tokens (every candidate's) and
wall time, summed over the prompts, with the ratios. Prints JSON.

    python benchmarks/selection.py [--model-path DIR | --url URL] [--deepconf-prompts K]
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


DEEPCONF_ROWS = {
    "self_consistency": {"method": "self_consistency", "extractor": "hash_marker"},
    "deepconf_online": {"method": "deepconf", "mode": "online", "warmup": 4, "window": 8,
                        "extractor": "hash_marker"},
    "deepconf_offline": {"method": "deepconf", "mode": "offline", "window": 8,
                         "extractor": "hash_marker"},
}


def deepconf_call(url: str, prompt: str, ilsi: dict[str, Any]) -> tuple[float, int]:
    """(seconds, tokens generated by every candidate) of one selection call."""
    body = {"text": prompt, "sampling_params": {"max_new_tokens": 64, "temperature": 0.7,
                                                "custom_params": {"ilsi": ilsi}}}
    start = time.perf_counter()
    r = requests.post(url + "/generate", json=body, timeout=1200)
    r.raise_for_status()
    seconds = time.perf_counter() - start
    return seconds, int(r.json()["meta_info"]["ilsi"]["cost"]["candidate_completion_tokens"])


def measure_deepconf(url: str, prompts: list[str], ns: tuple[int, ...] = (16, 64)
                     ) -> dict[str, Any]:
    deepconf_call(url, prompts[0], {**DEEPCONF_ROWS["self_consistency"], "n": 2})  # warm-up
    out: dict[str, Any] = {}
    for n in ns:
        seconds = dict.fromkeys(DEEPCONF_ROWS, 0.0)
        tokens = dict.fromkeys(DEEPCONF_ROWS, 0)
        for prompt in prompts:  # interleaved: each prompt runs every row in turn
            for row, ilsi in DEEPCONF_ROWS.items():
                s, t = deepconf_call(url, prompt, {**ilsi, "n": n})
                seconds[row] += s
                tokens[row] += t
        base_s, base_t = seconds["self_consistency"], tokens["self_consistency"]
        out[str(n)] = {
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "generated_tokens": tokens,
            "tokens_over_self_consistency": {k: round(v / base_t, 3) for k, v in tokens.items()},
            "seconds_over_self_consistency": {k: round(v / base_s, 3)
                                              for k, v in seconds.items()},
        }
    return {"prompts": len(prompts), "rows": DEEPCONF_ROWS, "by_n": out}


def deepconf_section(args: argparse.Namespace) -> dict[str, Any]:
    from sglang_ilsi_lab.data import synthetic
    from sglang_ilsi_lab.models import catalog
    from sglang_ilsi_lab.server_process import ServerProcess

    prompts = [item["prompt"] for item in synthetic.arithmetic(args.deepconf_prompts, seed=11)]
    model = str(catalog.prepare("lab-target-early"))
    with ServerProcess(model, ["--ilsi"], ["--dtype", "float32"]) as server:
        return {"model": "lab-target-early", **measure_deepconf(server.base_url, prompts)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-path", default=None)
    ap.add_argument("--url", default=None)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--deepconf-prompts", type=int, default=8,
                    help="arithmetic prompts of the DeepConf section (0: skip it)")
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
    report = {"benchmark": "selection", **meta, "self_consistency": calls,
              "mbr_utility_matrix": measure_matrices()}
    if args.deepconf_prompts > 0:
        report["deepconf"] = deepconf_section(args)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
