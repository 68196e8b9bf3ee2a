"""Monte-Carlo tree search over reasoning steps, valued by a process reward model."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sglang_ilsi.methods.search.base import (
    MAX_NODES_PER_STEP,
    STEP_PARAMS,
    Node,
    SearchMethod,
    SearchResult,
    Tree,
    best,
)
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register
from sglang_ilsi.reward import AGGREGATE_PARAM, REWARD_MODEL_PARAM


def value(node: Node) -> float:
    """A node's value for the search: its reward (0 when it has none)."""
    return 0.0 if math.isnan(node.reward) else node.reward


@register
class Mcts(SearchMethod):
    """MCTS over steps: UCT selection, one-step expansion, the PRM as value.

    Hao et al., "Reasoning with Language Model is Planning with World Model"
    (RAP), EMNLP 2023 (arXiv:2305.14992); UCT from Kocsis & Szepesvári 2006.
    Each of ``n`` iterations:

    1. *select*: from the root, while the node has children, go to the child c
       maximising Q(c) + w·sqrt(ln N(parent) / N(c)) (Q = mean value, N = visits,
       w = ``exploration``; ties: the earliest child);
    2. *expand*: unless the node has finished or is ``max_steps`` deep, sample
       ``width`` one-step children, each valued by the reward model (its step
       scores folded by ``aggregate``) and counted as visited once;
    3. *back up* v = the best new child's value (a finished or deepest node: its
       own value) along the selected path (N += 1, W += v).

    The answer is the finished node of highest reward (none finished: the best
    node). Unlike RAP, no rollouts: the process reward model values partial
    solutions directly, as in its PRM-guided successors (e.g. ReST-MCTS*).
    """

    name = "mcts"
    family = "independent/tree-search"
    paper = ("Hao et al. 2023, Reasoning with Language Model is Planning with World Model "
             "(RAP, EMNLP), arXiv:2305.14992; Kocsis & Szepesvari 2006, Bandit based "
             "Monte-Carlo Planning (UCT)")
    needs = frozenset({"tree", "reward"})
    params = (
        Param("n", "int", 8, "iterations (each expands one node)", minimum=1,
              maximum=MAX_NODES_PER_STEP * 4),
        Param("width", "int", 4, "children sampled when a node is expanded", minimum=1,
              maximum=MAX_NODES_PER_STEP),
        Param("exploration", "float", 1.0, "w: the weight of UCT's exploration term",
              minimum=0.0, maximum=100.0),
        *STEP_PARAMS,
        REWARD_MODEL_PARAM,
        AGGREGATE_PARAM,
    )
    example = {"n": 4, "width": 2, "max_steps": 4}

    @classmethod
    async def search(cls, tree: Tree, params: Mapping[str, Any]) -> SearchResult:
        width, weight = int(params["width"]), float(params["exploration"])
        children: dict[int, list[Node]] = {}
        visits: dict[int, int] = {tree.root.id: 0}
        total: dict[int, float] = {tree.root.id: 0.0}
        nodes: list[Node] = []
        for _ in range(int(params["n"])):
            node, path = tree.root, [tree.root]
            while children.get(node.id):
                parent_visits = visits[node.id]
                node = max(children[node.id], key=lambda c: (
                    total[c.id] / visits[c.id]
                    + weight * math.sqrt(math.log(max(parent_visits, 1)) / visits[c.id]),
                    -c.id))
                path.append(node)
            if node.finished or node.depth >= params["max_steps"]:
                backed_up = value(node)
            else:
                grown = await tree.expand([node], width)
                children[node.id] = grown
                nodes += grown
                for child in grown:
                    visits[child.id], total[child.id] = 1, value(child)
                backed_up = max(value(child) for child in grown)
            for on_path in path:
                visits[on_path.id] += 1
                total[on_path.id] += backed_up
        finished = [x for x in nodes if x.finished]
        leaves = finished or nodes
        return SearchResult(best(leaves), leaves, {
            "iterations": int(params["n"]), "expanded": len(children),
            "finished": len(finished), "root_visits": visits[tree.root.id]})
