"""PG-TD (Zhang et al. 2023) written apart from the server's loop.

The search is driven by three oracles: ``top_k(prefix)`` (the k most likely
next tokens with log-probabilities, best first), ``greedy(prefix)`` (the whole
greedy completion of a prefix) and ``passed(ids)`` (which tests the program in
a completion passes). In the end-to-end test they are transformers and a plain
subprocess; in the unit test a toy language model.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence

Ids = tuple[int, ...]


def pg_td(top_k: Callable[[Ids], list[tuple[int, float]]], greedy: Callable[[Ids], Ids],
          passed: Callable[[Ids], list[bool]], iterations: int, exploration: float,
          budget: int, eos: set[int], stop_when_solved: bool = True
          ) -> tuple[list[tuple[Ids, float]], int]:
    """The programs evaluated, in order, with their rewards, and the index of the
    answer (the best reward, the first found on ties)."""
    visits: dict[Ids, int] = {(): 0}
    best_below: dict[Ids, float] = {(): 0.0}
    prior: dict[Ids, float] = {(): 1.0}
    children: dict[Ids, list[Ids]] = {}
    known: list[tuple[Ids, Ids]] = []  # (where the greedy completion started, its ids)
    programs: list[tuple[Ids, float]] = []

    def terminal(ids: Ids) -> bool:
        return len(ids) >= budget or (len(ids) > 0 and ids[-1] in eos)

    for _ in range(iterations):
        here, path = (), [()]
        while children.get(here):
            n_parent = visits[here]
            scores = [best_below[c] + exploration * prior[c] * math.sqrt(n_parent)
                      / (1 + visits[c]) for c in children[here]]
            top = max(scores)
            # ties: the more likely token; the children are listed best first
            winners = [c for c, s in zip(children[here], scores, strict=True) if s == top]
            here = max(winners, key=lambda c: prior[c])
            path.append(here)
        if here not in children and not terminal(here):
            children[here] = []
            for token, logprob in top_k(here):
                child = here + (token,)
                children[here].append(child)
                visits[child], best_below[child], prior[child] = 0, 0.0, math.exp(logprob)
        completion = next((full for start, full in known
                           if len(start) <= len(here) <= len(full)
                           and full[:len(here)] == here), None)
        if completion is None:
            completion = here if terminal(here) else greedy(here)
            known.append((here, completion))
            result = passed(completion)
            programs.append((completion, sum(result) / len(result)))
        reward = dict(programs)[completion]
        for node in path:
            visits[node] += 1
            best_below[node] = max(best_below[node], reward)
        if stop_when_solved and reward >= 1.0:
            break
    rewards = [r for _, r in programs]
    return programs, rewards.index(max(rewards))


def first_program(text: str) -> str:
    """The first fenced block of ``text`` (to the end if unclosed), else all of it."""
    start = text.find("```")
    if start < 0:
        return text
    body_start = text.find("\n", start)
    if body_start < 0:
        return text
    end = text.find("```", body_start + 1)
    return text[body_start + 1:] if end < 0 else text[body_start + 1:end]


def run_program(code: str, tests: Sequence[tuple[str, str]]) -> list[bool]:
    """Each test: the program run by this interpreter on its input, compared with
    the expected output line by line up to trailing blanks."""
    def norm(s: str) -> list[str]:
        return [re.sub(r"\s+$", "", line) for line in s.strip().split("\n")] if s.strip() \
            else []
    out = []
    with tempfile.TemporaryDirectory() as folder:
        for stdin, expected in tests:
            try:
                done = subprocess.run([sys.executable, "-I", "-c", code], input=stdin,
                                      capture_output=True, text=True, timeout=10, cwd=folder)
            except subprocess.TimeoutExpired:
                out.append(False)
                continue
            out.append(done.returncode == 0 and norm(done.stdout) == norm(expected))
    return out
