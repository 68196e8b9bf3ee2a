"""Reward-guided search driven step by step from a client, over HTTP.

This is how test-time search is run against a plain server today (its_hub,
HF search-and-learn with a second engine): the client sends one ``/generate``
per step for the open nodes, scores them with a reward model, and decides
which to grow. It serves two purposes:

- the **oracle** of the server-side searches (``prm_beam_search``, ``dvts``):
  written apart from the server's code, it *replays* a tree the server reports
  (``replay``: each child's step text and reward are taken from the report
  instead of a new generation and scoring; SGLang samples freely unless a
  server runs deterministic inference) and decides itself which nodes to grow,
  so a test can require the one-call search to have grown the same nodes from
  the same parents and answered the same (the test checks the reported rewards
  against transformers separately: decisions on near-equal rewards must not
  hang on the last bits of two different forward passes);
- the **baseline** of ``benchmarks/search.py`` (the same search as N calls).

``score(prompt, solutions) -> [(reward, step_scores), ...]`` is supplied by
the caller: transformers in tests, the server's ``POST /ilsi/reward`` in the
benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from sglang_ilsi.methods.search.base import node_seed

Scorer = Callable[[str, list[list[str]]], list[tuple[float, tuple[float, ...]]]]


@dataclass
class ClientNode:
    id: int
    parent: int | None
    steps: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    finished: bool = False
    reward: float = math.nan
    step_scores: tuple[float, ...] = ()

    def key(self) -> float:
        return -math.inf if math.isnan(self.reward) else self.reward


@dataclass
class ClientSearch:
    """One search for one prompt against ``base_url``."""

    base_url: str
    prompt: str
    score: Scorer
    delimiter: str = "\n"
    max_new_tokens: int = 64
    step_max_tokens: int = 64
    temperature: float = 1.0
    seed: int | None = None
    prompt_ids: list[int] | None = None  # the server's tokens of ``prompt``
    replay: list[dict[str, Any]] | None = None  # a server's reported nodes (ids 1, 2, ...)
    per_node: bool = False  # one /generate per node, one after another (the proxy pattern)
    nodes: list[ClientNode] = field(default_factory=list)
    calls: int = 0
    completion_tokens: int = 0

    def __post_init__(self) -> None:
        self.nodes = [ClientNode(0, None)]
        self.http = requests.Session()

    def expand(self, parents: Sequence[ClientNode], width: int) -> list[ClientNode]:
        first = len(self.nodes)
        pairs = [(p, first + k * width + j) for k, p in enumerate(parents) for j in range(width)]
        if not pairs:
            return []
        if self.replay is not None:
            children = self._replayed(pairs)
        else:
            children = self._generated(pairs)
            for child, (reward, steps) in zip(
                    children, self.score(self.prompt, [c.steps for c in children]), strict=True):
                child.reward, child.step_scores = reward, steps
        self.nodes += children
        return children

    def _replayed(self, pairs: list[tuple[ClientNode, int]]) -> list[ClientNode]:
        assert self.replay is not None
        children = []
        for parent, node_id in pairs:
            if node_id > len(self.replay):
                raise AssertionError(f"the reference grows node {node_id}; the server grew "
                                     f"{len(self.replay)} nodes")
            node = self.replay[node_id - 1]
            if node["id"] != node_id or node["parent"] != parent.id:
                raise AssertionError(f"the reference grows node {node_id} from node "
                                     f"{parent.id}; the server grew it from {node['parent']}")
            reward = node["reward"]
            children.append(ClientNode(node_id, parent.id, parent.steps + [node["step"]], [],
                                       bool(node["finished"]),
                                       math.nan if reward is None else float(reward)))
        return children

    def _generated(self, pairs: list[tuple[ClientNode, int]]) -> list[ClientNode]:
        inputs, sampling = [], []
        for parent, node_id in pairs:
            inputs.append(list(self.prompt_ids or []) + parent.ids)
            params: dict[str, Any] = {
                "temperature": self.temperature, "stop": [self.delimiter], "no_stop_trim": True,
                "max_new_tokens": min(self.step_max_tokens, self.max_new_tokens - len(parent.ids))}
            if self.seed is not None:
                params["sampling_seed"] = node_seed(self.seed, node_id)
            sampling.append(params)
        if self.per_node:
            outputs = [self._generate(i, s) for i, s in zip(inputs, sampling, strict=True)]
        else:
            outputs = self._generate(inputs, sampling)
        children = []
        for (parent, node_id), out in zip(pairs, outputs, strict=True):
            meta = out["meta_info"]
            self.completion_tokens += int(meta["completion_tokens"])
            ids = parent.ids + list(out["output_ids"])
            reason = meta["finish_reason"] or {}
            if reason.get("type") == "stop":
                finished = reason.get("matched") != self.delimiter
            else:
                finished = len(ids) >= self.max_new_tokens
            children.append(ClientNode(node_id, parent.id, parent.steps + [out["text"]], ids,
                                       finished))
        return children

    def _generate(self, inputs: Any, sampling: Any) -> Any:
        r = self.http.post(self.base_url + "/generate",
                           json={"input_ids": inputs, "sampling_params": sampling}, timeout=600)
        r.raise_for_status()
        self.calls += 1
        return r.json()

    # -- the two searches, written from their papers -------------------------------

    def beam_search(self, n: int, width: int, max_steps: int) -> ClientNode:
        """PRM beam search (Snell et al. 2024): N nodes a step, N/M kept, M children each."""
        current = self.expand([self.nodes[0]], n)
        done: list[ClientNode] = []
        for step in range(1, max_steps + 1):
            done += [c for c in current if c.finished]
            current = [c for c in current if not c.finished]
            if not current or len(done) >= n or step == max_steps:
                break
            ranked = sorted(range(len(current)), key=lambda i: (-current[i].key(), i))
            current = self.expand([current[i] for i in ranked[:n // width]], width)
        pool = done or current
        return max(pool, key=lambda c: (c.key(), -pool.index(c)))

    def dvts(self, n: int, width: int, max_steps: int) -> ClientNode:
        """DVTS (Beeching et al. 2024): N/M subtrees, each keeps its best of M children."""
        heads = [self.nodes[0]] * (n // width)
        for _ in range(max_steps):
            growing = [k for k, h in enumerate(heads) if not h.finished]
            if not growing:
                break
            children = self.expand([heads[k] for k in growing], width)
            for slot, k in enumerate(growing):
                group = children[slot * width:(slot + 1) * width]
                heads[k] = max(group, key=lambda c: (c.key(), -group.index(c)))
        return max(heads, key=lambda c: (c.key(), -heads.index(c)))


def _value(node: ClientNode) -> float:
    return 0.0 if math.isnan(node.reward) else node.reward


def mcts(search: ClientSearch, iterations: int, width: int, exploration: float,
         max_steps: int) -> ClientNode:
    """MCTS over steps (RAP, Hao et al. 2023; UCT): select by mean value plus
    exploration, expand one node into ``width`` steps valued by the reward model,
    back up the best new value; answer with the best finished node."""
    root = search.nodes[0]
    depth = {0: 0}
    kids: dict[int, list[ClientNode]] = {}
    n = {0: 0}
    w = {0: 0.0}
    grown_all: list[ClientNode] = []
    for _ in range(iterations):
        node, path = root, [root]
        while kids.get(node.id):
            options = kids[node.id]
            scores = [w[c.id] / n[c.id] + exploration * math.sqrt(
                math.log(max(n[node.id], 1)) / n[c.id]) for c in options]
            node = options[scores.index(max(scores))]
            path.append(node)
        if node.finished or depth[node.id] >= max_steps:
            v = _value(node)
        else:
            grown = search.expand([node], width)
            kids[node.id] = grown
            grown_all += grown
            for c in grown:
                depth[c.id], n[c.id], w[c.id] = depth[node.id] + 1, 1, _value(c)
            v = max(_value(c) for c in grown)
        for x in path:
            n[x.id] += 1
            w[x.id] += v
    pool = [c for c in grown_all if c.finished] or grown_all
    return max(pool, key=lambda c: (c.key(), -pool.index(c)))


def http_scorer(base_url: str, reward_model: str, aggregate: str = "last") -> Scorer:
    """Score with a server's ``POST /ilsi/reward`` (the reward model over HTTP)."""
    session = requests.Session()

    def score(prompt: str, solutions: list[list[str]]) -> list[tuple[float, tuple[float, ...]]]:
        r = session.post(base_url + "/ilsi/reward", json={
            "reward_model": reward_model, "prompts": [prompt] * len(solutions),
            "solutions": solutions}, timeout=600)
        r.raise_for_status()
        out = []
        for steps in r.json()["scores"]:
            fold = {"last": lambda s: s[-1], "min": min, "prod": math.prod,
                    "mean": lambda s: sum(s) / len(s)}[aggregate]
            out.append((float(fold(steps)) if steps else math.nan, tuple(steps)))
        return out

    return score
