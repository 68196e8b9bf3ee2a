"""Throughput of the multi-distribution methods on our server vs plain decoding
and vs an in-process transformers loop, side by side in one run.

One server serves the target with the auxiliary model loaded
(``--ilsi-aux-model amateur=...``); for each concurrency level plain decoding,
Contrastive Decoding (aux model), CAD (second context) and DoLa (early layers)
are measured in interleaved rounds. A second server serves the auxiliary model
alone, to get the ideal aux-method throughput
T_target / (T_target + T_aux) = tps_aux / (tps_aux + tps_target) relative to
plain. The transformers baseline is the usual research loop: one request at a
time, with a KV cache for each model / context, the same method math.

    python benchmarks/multi_distribution.py [--target DIR --aux DIR] [--levels 1,16]

Prints JSON with tokens/s, ratios to plain, CD's share of its ideal, and the
speed-up over the transformers loop.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import torch
from throughput import decode_tokens_per_s, interleaved, sampling

PROMPT = "Q: 23+45-12=?\nA:"
CONTEXT = "23+"
METHODS: dict[str, dict[str, Any] | None] = {
    "plain": None,
    "contrastive_decoding": {"method": "contrastive_decoding", "alpha": 0.1},
    "cad": {"method": "cad", "alpha": 0.5, "remove": [CONTEXT]},
    "dola": {"method": "dola"},
}


def run_round(url: str, ilsi: dict | None, concurrency: int, tokens: int) -> float:
    params = sampling(tokens, **({} if ilsi is None else {"custom_params": {"ilsi": ilsi}}))
    return decode_tokens_per_s(url, concurrency, lambda i: {
        "text": f"{PROMPT}{' ' * (i % 3)}", "sampling_params": params})


def measure_server(url: str, methods: dict[str, dict | None], levels: list[int], tokens: int,
                   rounds: int) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for c in levels:
        run_round(url, None, c, 4)
        samples = interleaved(methods, rounds,
                              lambda name, c=c: run_round(url, methods[name], c, tokens))
        out[c] = {m: statistics.median(v) for m, v in samples.items()}
        print(f"[bench] {url} concurrency {c}: {out[c]}", file=sys.stderr, flush=True)
    return out


# -- the transformers loop ----------------------------------------------------------------

class HFLoop:
    """One request at a time, KV-cached, float32, greedy over the method scores."""

    def __init__(self, target: str, aux: str):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(target)
        self.t = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
        self.a = AutoModelForCausalLM.from_pretrained(aux, dtype=torch.float32).eval()
        n = self.t.config.num_hidden_layers
        self.layers = list(range(0, max(n // 2, 1), 2))

    @torch.no_grad()
    def generate(self, method: str, tokens: int) -> int:
        ids = torch.tensor([self.tok(PROMPT)["input_ids"]])
        second = torch.tensor([self.tok(PROMPT.replace(CONTEXT, "", 1))["input_ids"]])
        cache_t = cache_2 = None
        x, x2 = ids, (ids if method == "contrastive_decoding" else second)
        for _ in range(tokens):
            out = self.t(x, past_key_values=cache_t, use_cache=True,
                         output_hidden_states=method == "dola")
            cache_t, z = out.past_key_values, out.logits[0, -1]
            if method == "contrastive_decoding":
                o2 = self.a(x2, past_key_values=cache_2, use_cache=True)
                cache_2 = o2.past_key_values
                lp, la = z.log_softmax(-1), o2.logits[0, -1].log_softmax(-1)
                score = torch.where(lp >= lp.max() + torch.tensor(0.1).log(), lp - la, -torch.inf)
            elif method == "cad":
                o2 = self.t(x2, past_key_values=cache_2, use_cache=True)
                cache_2 = o2.past_key_values
                score = 1.5 * z - 0.5 * o2.logits[0, -1]
            elif method == "dola":
                lp = z.log_softmax(-1)
                early = torch.stack([self.t.lm_head(self.t.model.norm(out.hidden_states[j][0, -1]))
                                     for j in self.layers]).log_softmax(-1)
                m = (lp.exp() + early.exp()) / 2
                jsd = ((lp.exp() * (lp - m.log())).sum(-1) +
                       (early.exp() * (early - m.log())).sum(-1)) / 2
                score = lp - early[int(jsd.argmax())]
            else:
                score = z
            nxt = score.argmax().view(1, 1)
            x = x2 = nxt
        return tokens

    def tokens_per_s(self, method: str, requests_n: int, tokens: int) -> float:
        start = time.perf_counter()
        produced = sum(self.generate(method, tokens) for _ in range(requests_n))
        return produced / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--target", default=None, help="target model folder (default: lab-target)")
    ap.add_argument("--aux", default=None, help="amateur model folder (default: lab-draft)")
    ap.add_argument("--levels", default="1,16")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from sglang_ilsi_lab.models import catalog
    from sglang_ilsi_lab.server_process import ServerProcess

    torch.set_num_threads(2)
    target = args.target or str(catalog.prepare("lab-target"))
    aux = args.aux or str(catalog.prepare("lab-draft"))
    levels = [int(x) for x in args.levels.split(",")]
    sglang_args = ["--dtype", "float32"]

    with ServerProcess(target, ["--ilsi", "--ilsi-aux-model", f"amateur={aux}"],
                       sglang_args) as server:
        ours = measure_server(server.base_url, METHODS, levels, args.tokens, args.rounds)
    with ServerProcess(aux, ["--ilsi"], sglang_args) as server:  # plain requests only
        aux_alone = measure_server(server.base_url, {"plain": None}, levels, args.tokens,
                                   args.rounds)
    hf = HFLoop(target, aux)
    hf.generate("plain", 2)
    results: dict[str, Any] = {}
    for c in levels:
        plain = ours[c]["plain"]
        ideal = aux_alone[c]["plain"] / (aux_alone[c]["plain"] + plain)
        level: dict[str, Any] = {"aux_model_alone_tokens_per_s": round(aux_alone[c]["plain"], 1),
                                 "ideal_aux_ratio_to_plain": round(ideal, 3)}
        for name in METHODS:
            hf_tps = hf.tokens_per_s(name, c, args.tokens)
            entry = {
                "tokens_per_s": round(ours[c][name], 1),
                "ratio_to_plain": round(ours[c][name] / plain, 3),
                "hf_loop_tokens_per_s": round(hf_tps, 1),
                "speedup_vs_hf_loop": round(ours[c][name] / hf_tps, 2),
            }
            if name == "contrastive_decoding":
                entry["share_of_ideal"] = round(ours[c][name] / plain / ideal, 3)
            level[name] = entry
        results[str(c)] = level
        print(f"[bench] transformers loop, {c} requests done", file=sys.stderr, flush=True)
    print(json.dumps({
        "benchmark": "multi_distribution", "target": target, "aux": aux,
        "tokens_per_request": args.tokens, "rounds": args.rounds,
        "sampling": "server: temperature 0.8, ignore_eos; transformers loop: greedy, "
                    "one request at a time with KV caches",
        "targets": {"aux_share_of_ideal": 0.9, "cad_ratio_to_plain": 0.45,
                    "speedup_vs_hf_loop_at_16": 5.0},
        "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
