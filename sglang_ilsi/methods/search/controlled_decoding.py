"""Controlled decoding, blockwise best-of-K (Mudgal et al. 2024)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sglang_ilsi.methods.search.base import (
    MAX_NODES_PER_STEP,
    SearchMethod,
    SearchResult,
    Tree,
    best,
)
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register
from sglang_ilsi.reward import AGGREGATE_PARAM, REWARD_MODEL_PARAM


@register
class ControlledDecoding(SearchMethod):
    """Blockwise controlled decoding: K sampled blocks, the prefix scorer keeps the best.

    Mudgal et al., "Controlled Decoding from Language Models", ICML 2024
    (arXiv:2310.17022), blockwise CD: from the current prefix sample K
    continuations of ``block`` tokens, score each extended prefix with the
    reward model (the paper's prefix scorer), keep the best (ties: the
    earliest) and repeat until it ends or ``max_new_tokens``. K = 1 is plain
    sampling; a block as long as the answer is best-of-K.
    """

    name = "controlled_decoding"
    family = "model-aided/reward"
    paper = ("Mudgal et al. 2024, Controlled Decoding from Language Models (ICML), "
             "arXiv:2310.17022")
    needs = frozenset({"tree", "reward"})
    delimited = False
    params = (
        Param("k", "int", 4, "K: the blocks sampled from each prefix", minimum=1,
              maximum=MAX_NODES_PER_STEP),
        Param("block", "int", 8, "the tokens in a block", minimum=1, maximum=1024),
        REWARD_MODEL_PARAM,
        AGGREGATE_PARAM,
    )
    example = {"k": 2, "block": 4}

    @classmethod
    async def search(cls, tree: Tree, params: Mapping[str, Any]) -> SearchResult:
        current = tree.root
        blocks = 0
        while not current.finished:
            children = await tree.expand([current], int(params["k"]))
            if not children:
                break
            current = best(children)
            blocks += 1
        return SearchResult(current, [current], {"blocks": blocks})
