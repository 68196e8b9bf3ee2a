"""Reward models scored with plain transformers, written from the folder format
(sglang_ilsi/reward.py's docstring), independent of ``sglang_ilsi.reward``: the
model's own forward (``.logits``; a sequence classifier pools the last token
itself), each step tokenised alone, the score read at each step's last token. A
folder declaring ``"reads": "likelihood"`` is a causal LM: a step's score is the
lowest probability it gives to any solution token up to the step's end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch


class RewardReference:
    def __init__(self, path: str):
        from transformers import (
            AutoModelForCausalLM,
            AutoModelForSequenceClassification,
            AutoModelForTokenClassification,
            AutoTokenizer,
        )

        declared = json.loads((Path(path) / "sglang_ilsi_reward.json").read_text())
        self.kind = declared["kind"]
        self.delimiter = declared.get("step_delimiter", "\n")
        self.likelihood = declared.get("reads") == "likelihood"
        loader = (AutoModelForCausalLM if self.likelihood else AutoModelForTokenClassification
                  if self.kind == "process" else AutoModelForSequenceClassification)
        self.model = loader.from_pretrained(path).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)

    def steps(self, text: str) -> list[str]:
        pieces = text.split(self.delimiter)
        steps = [p + self.delimiter for p in pieces[:-1]]
        return steps + ([pieces[-1]] if pieces[-1] else [])

    @torch.no_grad()
    def step_scores(self, prompt: str, steps: list[str]) -> tuple[float, ...]:
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        first = len(ids)
        ends = []
        for step in steps:
            ids = ids + self.tokenizer.encode(step, add_special_tokens=False)
            ends.append(len(ids) - 1)
        if not ends or not ids:
            return ()
        logits = self.model(torch.tensor([ids])).logits
        if self.likelihood:
            probs = torch.softmax(logits[0].double(), -1)
            written = [float(probs[t - 1, ids[t]]) for t in range(first, len(ids))]
            read = ends if self.kind == "process" else ends[-1:]
            return tuple(min(written[:t - first + 1]) for t in read)
        if self.kind == "outcome":
            return (float(torch.sigmoid(logits[0, 0])),)
        return tuple(float(torch.sigmoid(logits[0, t, 0])) for t in ends)

    def reward(self, prompt: str, steps: list[str], aggregate: str = "last") -> float:
        scores = self.step_scores(prompt, steps)
        if not scores:
            return math.nan
        return {"last": lambda s: s[-1], "min": min, "prod": math.prod,
                "mean": lambda s: sum(s) / len(s)}[aggregate](scores)

    def scorer(self, aggregate: str = "last"):
        """A ``client_search.Scorer``."""
        def score(prompt: str, solutions: list[list[str]]):
            return [(self.reward(prompt, s, aggregate), self.step_scores(prompt, s))
                    for s in solutions]
        return score
