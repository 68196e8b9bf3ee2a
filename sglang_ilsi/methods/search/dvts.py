"""Diverse verifier tree search (Beeching, Tunstall & Rush 2024)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sglang_ilsi.methods.search.base import (
    GroupedSearch,
    Node,
    SearchResult,
    Tree,
    best,
)
from sglang_ilsi.registry import register


@register
class DiverseVerifierTreeSearch(GroupedSearch):
    """DVTS: N/M independent subtrees, each grown greedily by a process reward model.

    Beeching, Tunstall & Rush, "Scaling test-time compute with open models"
    (Hugging Face, 2024; search-and-learn), extending the PRM beam search of
    Snell et al. 2024 (arXiv:2408.03314) for diversity at large budgets. With
    N = ``n`` and M = ``beam_width``, each of the N/M subtrees repeatedly samples
    M next steps from its current node and moves to the child of highest reward
    (``aggregate`` of the PRM's step scores), until that child has finished or
    ``max_steps``; the answer is the subtree leaf of highest reward. Every step
    samples N nodes in all, as beam search does. Ties go to the earliest node.
    """

    name = "dvts"
    family = "independent/tree-search"
    paper = ("Beeching, Tunstall & Rush 2024, Scaling test-time compute with open models "
             "(Hugging Face blog, search-and-learn); Snell et al. 2024, arXiv:2408.03314")
    params = GroupedSearch.shape("M: the children sampled from each subtree's node (N/M subtrees)")

    @classmethod
    async def search(cls, tree: Tree, params: Mapping[str, Any]) -> SearchResult:
        width = int(params["beam_width"])
        current: list[Node] = [tree.root] * (int(params["n"]) // width)
        leaves: list[Node | None] = [None] * len(current)
        depth = 0
        while depth < params["max_steps"]:
            growing = [k for k, leaf in enumerate(leaves) if leaf is None]
            if not growing:
                break
            children = await tree.expand([current[k] for k in growing], width)
            depth += 1
            for slot, k in enumerate(growing):
                current[k] = best(children[slot * width:(slot + 1) * width])
                if current[k].finished:
                    leaves[k] = current[k]
        ends = [leaf if leaf is not None else current[k] for k, leaf in enumerate(leaves)]
        return SearchResult(best(ends), ends, {"subtrees": len(ends), "depth": depth,
                                               "finished": sum(x.finished for x in ends)})
