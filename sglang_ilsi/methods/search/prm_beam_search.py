"""PRM-guided beam search over reasoning steps (Snell et al. 2024)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sglang_ilsi.methods.search.base import (
    STEP_PARAMS,
    Node,
    SearchMethod,
    SearchResult,
    Tree,
    best,
    check_width_divides,
    nodes_param,
    top_k,
    width_param,
)
from sglang_ilsi.registry import register
from sglang_ilsi.reward import AGGREGATE_PARAM, REWARD_MODEL_PARAM


@register
class PrmBeamSearch(SearchMethod):
    """Beam search over steps, ranked by a process reward model.

    Snell et al., "Scaling LLM Test-Time Compute Optimally can be More Effective
    than Scaling Model Parameters", 2024 (arXiv:2408.03314), §5; as in HF
    search-and-learn. With N = ``n`` and M = ``beam_width``:

    1. sample N first steps from the prompt;
    2. score every open node with the PRM (its step scores folded by
       ``aggregate``, ``last`` by default); nodes that ended are *finished*;
    3. keep the N/M best open nodes and sample M next steps from each (N new
       nodes); repeat from 2 until N nodes have finished or ``max_steps``;
    4. answer with the finished node of highest reward (if none finished, the
       best open one).

    Ties go to the earliest node (creation order).
    """

    name = "prm_beam_search"
    family = "independent/tree-search"
    paper = ("Snell et al. 2024, Scaling LLM Test-Time Compute Optimally can be More "
             "Effective than Scaling Model Parameters, arXiv:2408.03314")
    needs = frozenset({"tree", "reward"})
    params = (
        nodes_param(),
        width_param("M: the children of each kept node (N/M nodes are kept)"),
        *STEP_PARAMS,
        REWARD_MODEL_PARAM,
        AGGREGATE_PARAM,
    )
    example = {"n": 4, "beam_width": 2, "max_steps": 4}

    @classmethod
    def validate(cls, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        params = super().validate(given)
        check_width_divides(params)
        return params

    @classmethod
    async def search(cls, tree: Tree, params: Mapping[str, Any]) -> SearchResult:
        n, width = int(params["n"]), int(params["beam_width"])
        open_nodes = await tree.expand([tree.root], n)
        finished: list[Node] = []
        depth = 1
        while True:
            finished += [x for x in open_nodes if x.finished]
            open_nodes = [x for x in open_nodes if not x.finished]
            if not open_nodes or len(finished) >= n or depth >= params["max_steps"]:
                break
            open_nodes = await tree.expand(top_k(open_nodes, n // width), width)
            depth += 1
        leaves = finished or open_nodes
        return SearchResult(best(leaves), leaves, {"finished": len(finished), "depth": depth})
