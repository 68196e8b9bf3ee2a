"""Per-step CPU cost of each logits-stage method, without a server or a model.

Calls each method's ``apply`` (plus ``on_token`` for every row, as the engine
does after sampling) on synthetic float32 logits shaped like a language model's:
Zipf-like rows (logit = -a·ln(rank) + noise, a per row between 1 and 3, a random
token order), every fourth row with 30% of the vocabulary masked to -inf as a
grammar would, temperatures cycling through 0.7, 1.0, 0 (greedy) and 1.3. Half
of the rows at each step revisit an earlier step's distribution (plus a little
noise), so that look-back's repetition detector fires too. Every method runs
with its default parameters (keyword_boost: two keywords and two ids, with
``until_present``), and requests carry a 50-token prompt and a 100-token output
that grows by one sampled token per step. Stateful methods are warmed up first
(look-back: a full history window).

Prints JSON: the median milliseconds per step over ``--steps`` measured steps,
per method and per "vocab x rows" shape.

    python benchmarks/methods_micro.py [--threads 1] [--steps 9] [--methods a,b]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from typing import Any

import torch

from sglang_ilsi import registry
from sglang_ilsi.methods.base import RowContext
from sglang_ilsi.params import validate_params

SHAPES = ((512, 1), (512, 32), (49152, 1), (49152, 32))
TEMPS = (0.7, 1.0, 0.0, 1.3)
PARAMS: dict[str, dict[str, Any]] = {
    "keyword_boost": {"keywords": ["return", "self"], "token_ids": [11, 42],
                      "until_present": True},
}


class ChunkTokenizer:
    """Two characters per token, ids from 100 upward (enough for keyword_boost)."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def __len__(self) -> int:
        return 512

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self.vocab.setdefault(text[i:i + 2], 100 + len(self.vocab))
                for i in range(0, len(text), 2)]


class LogitsSource:
    """Per-step logits ``[rows, vocab]``; half of the rows revisit an earlier step."""

    def __init__(self, vocab: int, n_rows: int, seed: int = 0) -> None:
        self.vocab, self.n_rows = vocab, n_rows
        self.gen = torch.Generator().manual_seed(seed)
        self.rnd = random.Random(seed)
        self.slopes = torch.linspace(1.0, 3.0, n_rows) if n_rows > 1 else torch.tensor([1.5])
        self.log_rank = torch.log(torch.arange(1, vocab + 1, dtype=torch.float32))
        self.pool: list[list[torch.Tensor]] = [[] for _ in range(n_rows)]

    def fresh(self, i: int) -> torch.Tensor:
        z = -self.slopes[i] * self.log_rank + 0.3 * torch.randn(self.vocab, generator=self.gen)
        z = z[torch.randperm(self.vocab, generator=self.gen)] + 5.0
        if i % 4 == 0:
            z = z.masked_fill(torch.rand(self.vocab, generator=self.gen) < 0.3, float("-inf"))
            z[int(z.argmax())] = 5.0  # keep a finite maximum
        return z

    def step(self) -> torch.Tensor:
        rows = []
        for i in range(self.n_rows):
            if self.pool[i] and self.rnd.random() < 0.5:
                base = self.rnd.choice(self.pool[i])
                z = base + 0.05 * torch.randn(self.vocab, generator=self.gen)
            else:
                z = self.fresh(i)
                self.pool[i] = (self.pool[i] + [z])[-16:]
            rows.append(z)
        return torch.stack(rows)


def make_rows(cls: Any, n_rows: int, vocab: int, seed: int) -> list[RowContext]:
    params = validate_params(cls.params, PARAMS.get(cls.name, {}))
    params = cls.prepare(params, ChunkTokenizer())
    rnd = random.Random(seed)
    return [RowContext(params=dict(params), prompt_ids=[rnd.randrange(vocab) for _ in range(50)],
                       output_ids=[rnd.randrange(vocab) for _ in range(100)],
                       temperature=TEMPS[i % len(TEMPS)], eos_token_ids=[0])
            for i in range(n_rows)]


def run_step(cls: Any, source: LogitsSource, rows: list[RowContext]) -> float:
    logits = source.step()
    start = time.perf_counter()
    out = cls.apply(logits, rows)
    t_apply = time.perf_counter() - start
    tokens = out.argmax(dim=-1).tolist()  # stands in for the engine's sampler (untimed)
    start = time.perf_counter()
    for row, tok in zip(rows, tokens, strict=True):
        cls.on_token(row, tok)
    t_on_token = time.perf_counter() - start
    for row, tok in zip(rows, tokens, strict=True):
        row.output_ids.append(tok)
    return 1e3 * (t_apply + t_on_token)


def bench(name: str, vocab: int, n_rows: int, steps: int) -> float:
    cls = registry.get(name)
    source = LogitsSource(vocab, n_rows, seed=vocab + n_rows)
    rows = make_rows(cls, n_rows, vocab, seed=n_rows)
    warmup = 3
    if name == "look_back":  # fill the history window (its cost grows with it)
        warmup = max(int(rows[0].params["window"]), 3)
    for _ in range(warmup):
        run_step(cls, source, rows)
    return statistics.median(run_step(cls, source, rows) for _ in range(steps))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--steps", type=int, default=9, help="measured steps per shape (median)")
    ap.add_argument("--methods", default="all", help="comma-separated names (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = (sorted(registry.logits_methods()) if args.methods == "all"
             else args.methods.split(","))
    results: dict[str, dict[str, float]] = {}
    for name in names:
        results[name] = {}
        for vocab, n_rows in SHAPES:
            results[name][f"{vocab}x{n_rows}"] = round(bench(name, vocab, n_rows, args.steps), 3)
        print(f"[methods_micro] {name}: {results[name]}", file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "methods_micro", "unit": "ms per step (apply + on_token)",
                      "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "steps": args.steps, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
