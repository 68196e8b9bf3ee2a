"""PRM-guided beam search over reasoning steps (Snell et al. 2024)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sglang_ilsi.methods.search.base import (
    GroupedSearch,
    Node,
    SearchResult,
    Tree,
    best,
    top_k,
)
from sglang_ilsi.registry import register


@register
class PrmBeamSearch(GroupedSearch):
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
    params = GroupedSearch.shape("M: the children of each kept node (N/M nodes are kept)")

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
