"""Speculative decoding on the CPU, side by side in one run.

Starts one SGLang server per configuration on the same target model (plain,
STANDALONE with the pair's draft model, NGRAM, SELF_SPECULATIVE, LOOKAHEAD, REST with a
datastore built from ``--rest-corpus``), all at once (idle
servers sleep), then measures greedy decode tokens/s in interleaved rounds on
the same prompts, so drift in machine load hits every configuration alike.
Also reports the mean accepted length (tokens per target forward, from
``meta_info.spec_accept_length``) and checks that every lossless configuration
produced the same greedy tokens as plain decoding.

Contrastive decoding is compared the same way: ``contrastive`` is the plain
server with the draft loaded as an auxiliary amateur and every request asking
for ``contrastive_decoding_beta``; ``speculative_contrastive`` is
SPECULATIVE_CONTRASTIVE, the draft doubling as the amateur. Its greedy tokens
must equal ``contrastive``'s (``greedy_identical_to_contrastive``), and its
ratio to ``contrastive`` is its speed-up over contrastive decoding.

    python benchmarks/speculative.py [--pair lab|smollm2|code] [--levels 1,4] [--rounds 3]
        [--configs plain,ngram,lookahead] [--lookahead 4,3] [--lookahead-draft-tokens 16]
        [--scd 0.1,1.0]

Prints JSON: per pair and concurrency, tokens/s, ratio to plain, accepted
length and acceptance rate per configuration.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import requests
from throughput import against_plain, decode_tokens_per_s, interleaved

from sglang_ilsi import datastore
from sglang_ilsi_lab.models import catalog
from sglang_ilsi_lab.server_process import ServerProcess

# pair -> (target, draft, prompts, chat): SmolLM2's amateur was distilled on chat-formatted
# prompts, so its prompts go through the chat template.
PAIRS = {
    "lab": ("lab-target", "lab-draft", [
        "Q: 23+45-12=?\nA:", "Q: 7*8+1=?\nA:", "Q: 90-41+3=?\nA:", "Q: 15+27=?\nA:"], False),
    # code completion in a codebase the REST datastore holds (the stdlib's json package)
    "code": ("smollm2-135m-instruct", "smollm2-amateur", [
        "def py_encode_basestring(s):\n", "class JSONDecodeError(ValueError):\n",
        "def _decode_uXXXX(s, pos):\n", "def py_make_scanner(context):\n"], False),
    # code completion in files a large REST store holds (the stdlib's first 6M characters,
    # benchmarks/retrieval.py's 1M-entry store): pass it with --rest-store
    "stdlib": ("smollm2-135m-instruct", "smollm2-amateur", [
        "    def _format_action_invocation(self, action):\n", "def leapdays(y1, y2):\n",
        "def fix_missing_locations(node):\n", "def increment_lineno(node, n=1):\n"], False),
    "smollm2": ("smollm2-135m-instruct", "smollm2-amateur", [
        "What is the capital of France?", "Write a Python function for Fibonacci numbers.",
        "Tell me a short story about a cat.", "Explain photosynthesis in two sentences."], True),
}


def chat_prompts(model_dir: str, prompts: list[str]) -> list[str]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True) for p in prompts]


CONTRASTIVE = ("contrastive", "speculative_contrastive")


def configurations(draft: str, steps: int, draft_tokens: int, self_skip: str | None,
                   window: str, window_draft_tokens: int,
                   contrast: tuple[float, float], rest_store: str) -> dict[str, list[str]]:
    """SGLang flags (and ours) per configuration."""
    shape = ["--speculative-num-steps", str(steps), "--speculative-eagle-topk", "1",
             "--speculative-num-draft-tokens", str(steps + 1)]
    return {
        "plain": [],
        "standalone": [
            "--speculative-algorithm", "STANDALONE", "--speculative-draft-model-path", draft,
            *shape,
        ],
        "ngram": ["--speculative-algorithm", "NGRAM",
                  "--speculative-num-draft-tokens", str(draft_tokens)],
        "self_speculative": ["--speculative-algorithm", "SELF_SPECULATIVE", *shape,
                             *(["--ilsi-self-spec-skip", self_skip] if self_skip else [])],
        "lookahead": ["--speculative-algorithm", "LOOKAHEAD", "--ilsi-lookahead", window,
                      "--speculative-num-draft-tokens", str(window_draft_tokens)],
        # the ablation: LOOKAHEAD's whole verify budget given to NGRAM's pool
        "ngram_lookahead_budget": ["--speculative-algorithm", "NGRAM",
                                   "--speculative-num-draft-tokens", str(window_draft_tokens)],
        # REST: NGRAM's draft budget, all but one token retrieved from the datastore's text
        "rest": ["--speculative-algorithm", "REST", "--ilsi-rest-datastore", rest_store,
                 "--speculative-num-draft-tokens", str(draft_tokens)],
        "contrastive": ["--ilsi-aux-model", f"amateur={draft}"],
        "speculative_contrastive": [
            "--speculative-algorithm", "SPECULATIVE_CONTRASTIVE",
            "--speculative-draft-model-path", draft, *shape,
            "--ilsi-scd-alpha", str(contrast[0]), "--ilsi-scd-beta", str(contrast[1])],
    }


def request_params(name: str, contrast: tuple[float, float]) -> dict[str, Any]:
    """Extra sampling params of a configuration's requests."""
    if name != "contrastive":
        return {}
    return {"custom_params": {"ilsi": {"method": "contrastive_decoding_beta", "amateur": "amateur",
                                       "alpha": contrast[0], "beta": contrast[1]}}}


def run_round(url: str, prompts: list[str], concurrency: int, tokens: int,
              accepted: list[tuple[float, float]], extra: dict[str, Any] | None = None) -> float:
    """Greedy tokens/s of ``concurrency`` simultaneous requests; appends each
    request's (accepted length, acceptance rate)."""
    metas: list[dict[str, Any]] = []
    rate = decode_tokens_per_s(url, concurrency, lambda i: {
        "text": prompts[i % len(prompts)],
        "sampling_params": {"max_new_tokens": tokens, "temperature": 0, "ignore_eos": True,
                            **(extra or {})},
    }, metas)
    accepted.extend((m["spec_accept_length"], m.get("spec_accept_rate", float("nan")))
                    for m in metas if "spec_accept_length" in m)
    return rate


def greedy_outputs(url: str, prompts: list[str], tokens: int,
                   extra: dict[str, Any] | None = None) -> tuple[list[list[int]], float]:
    """Greedy outputs of the prompts' first pass and its mean accepted length
    (the n-gram pools hold only the prompts then; NaN without speculation)."""
    r = requests.post(url + "/generate", json={"text": prompts, "sampling_params": {
        "max_new_tokens": tokens, "temperature": 0, **(extra or {})}}, timeout=600)
    r.raise_for_status()
    out = r.json()
    accepted = [o["meta_info"]["spec_accept_length"] for o in out
                if "spec_accept_length" in o["meta_info"]]
    return [o["output_ids"] for o in out], (
        round(statistics.mean(accepted), 3) if accepted else float("nan"))


def bench_pair(pair: str, levels: list[int], rounds: int, tokens: int,
               configs: dict[str, list[str]],
               contrast: tuple[float, float] = (0.1, 1.0)) -> dict[str, Any]:
    target_name, draft_name, prompts, chat = PAIRS[pair]
    target = str(catalog.prepare(target_name))
    if chat:
        prompts = chat_prompts(target, prompts)
    servers = {name: ServerProcess(target, ["--ilsi"], ["--dtype", "float32", *args])
               for name, args in configs.items()}
    try:
        for name, server in servers.items():
            print(f"[bench] starting {name}", file=sys.stderr, flush=True)
            server.start()
        urls = {name: s.base_url for name, s in servers.items()}
        extra = {name: request_params(name, contrast) for name in urls}
        first = {name: greedy_outputs(url, prompts, tokens, extra[name])
                 for name, url in urls.items()}
        identical = {name: ids == first["plain"][0] for name, (ids, _) in first.items()
                     if name not in CONTRASTIVE}
        result: dict[str, Any] = {
            "target": target_name, "draft": draft_name, "greedy_identical_to_plain": identical,
            "first_pass_accept_length": {name: acc for name, (_, acc) in first.items()
                                         if name != "plain"},
            "levels": {}}
        if all(name in first for name in CONTRASTIVE):
            result["contrast"] = {"alpha": contrast[0], "beta": contrast[1]}
            result["greedy_identical_to_contrastive"] = (
                first["speculative_contrastive"][0] == first["contrastive"][0])
        for c in levels:
            for name, url in urls.items():  # warm-up
                run_round(url, prompts, c, 4, [], extra[name])
            accepted: dict[str, list[tuple[float, float]]] = {name: [] for name in urls}
            samples = interleaved(urls, rounds, lambda name, c=c, acc=accepted: run_round(
                urls[name], prompts, c, tokens, acc[name], extra[name]))
            summary = against_plain(samples)
            if all(name in summary for name in CONTRASTIVE):
                summary["speculative_contrastive"]["ratio_to_contrastive"] = round(
                    summary["speculative_contrastive"]["tokens_per_s"]
                    / summary["contrastive"]["tokens_per_s"], 3)
            for name, row in summary.items():
                if accepted[name]:
                    row["mean_accept_length"] = round(
                        statistics.mean(a for a, _ in accepted[name]), 3)
                    row["acceptance_rate"] = round(
                        statistics.mean(r for _, r in accepted[name]), 3)
            result["levels"][c] = summary
            print(f"[bench] {pair} concurrency {c}: {json.dumps(summary)}",
                  file=sys.stderr, flush=True)
        return result
    finally:
        for server in servers.values():
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", action="append", choices=sorted(PAIRS),
                        help="target/draft pair (repeatable; default: lab)")
    parser.add_argument("--levels", default="1,4", help="concurrency levels")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="STANDALONE draft steps")
    parser.add_argument("--ngram-draft-tokens", type=int, default=4)
    parser.add_argument("--self-spec-skip", default=None,
                        help="layers SELF_SPECULATIVE skips (default: the plugin's rule)")
    parser.add_argument("--lookahead", default="4,3", help="LOOKAHEAD window W,N")
    parser.add_argument("--lookahead-draft-tokens", type=int, default=16,
                        help="LOOKAHEAD's verified tokens per step (window + n-gram pool)")
    parser.add_argument("--scd", default="0.1,1.0",
                        help="alpha,beta of contrastive and speculative_contrastive")
    parser.add_argument("--configs", default="plain,standalone,ngram,self_speculative,lookahead,"
                        "ngram_lookahead_budget,contrastive,speculative_contrastive",
                        help="configurations to run (plain is always run)")
    parser.add_argument("--rest-corpus", default=str(Path(json.__file__).parent),
                        help="folder REST's datastore is built from (default: the stdlib's "
                        "json package, which the 'code' pair's prompts come from)")
    parser.add_argument("--rest-store", default=None,
                        help="an existing store whose text REST drafts from (instead of one "
                        "built from --rest-corpus), e.g. the 1M-entry store "
                        "benchmarks/retrieval.py --keep leaves")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    chosen = {"plain", *args.configs.split(",")}
    out = {}
    stores = Path(tempfile.mkdtemp(prefix="ilsi-bench-rest-"))
    for pair in args.pair or ["lab"]:
        draft = str(catalog.prepare(PAIRS[pair][1]))
        alpha, beta = (float(x) for x in args.scd.split(","))
        rest_store = Path(args.rest_store) if args.rest_store else stores / pair
        if "rest" in chosen and not rest_store.exists():
            datastore.build(args.rest_corpus, str(catalog.prepare(PAIRS[pair][0])),
                            str(rest_store), quiet=True)
        every = configurations(draft, args.steps, args.ngram_draft_tokens, args.self_spec_skip,
                               args.lookahead, args.lookahead_draft_tokens, (alpha, beta),
                               str(rest_store))
        unknown = chosen - set(every)
        if unknown:
            parser.error(f"--configs: unknown {sorted(unknown)}; known: {sorted(every)}")
        configs = {name: flags for name, flags in every.items() if name in chosen}
        out[pair] = bench_pair(pair, levels, args.rounds, args.tokens, configs, (alpha, beta))
    shutil.rmtree(stores, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
