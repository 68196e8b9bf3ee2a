"""Beam search, length-normalised (the survey's tree-search family starts here)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sglang_ilsi.methods.search.base import SearchMethod, SearchResult, Tree
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register

DEAD = -1.0e9  # the score of a beam slot that holds no live hypothesis


@register
class BeamSearch(SearchMethod):
    """Beam search over tokens with a length penalty.

    Keeps the B highest-scoring prefixes by cumulative log-probability
    s(y) = Σ_t log p(y_t | x, y_<t) (under the request's logits methods, if any).
    Each step takes the 2B best one-token extensions of all beams; those among
    the first B that end (end-of-sequence, or ``max_new_tokens`` reached) join
    the finished hypotheses with score s(y) / |y|^α (α = ``length_penalty``;
    Wu et al. 2016's length normalisation in its simplest form), the B best of
    the rest continue. The search stops when the best running beam, normalised
    at its current length, cannot beat the worst of B finished hypotheses (or
    when every extension ends); the answer is the best finished hypothesis.
    These are the semantics of transformers' ``generate(num_beams=B,
    length_penalty=α)``, which the tests check it against token for token.

    Reddy 1977 (the Harpy system) introduced beam search; Graves 2012
    (arXiv:1211.3711) and Sutskever et al. 2014 (arXiv:1409.3215) brought it to
    neural sequence models; Wu et al. 2016 (arXiv:1609.08144) the length penalty.
    """

    name = "beam_search"
    family = "independent/tree-search"
    paper = ("Sutskever et al. 2014, Sequence to Sequence Learning with Neural Networks, "
             "arXiv:1409.3215; Wu et al. 2016, Google's Neural Machine Translation System, "
             "arXiv:1609.08144 (length penalty)")
    needs = frozenset({"tree"})
    params = (
        Param("beams", "int", 4, "B: the beams kept at every step", minimum=1, maximum=32),
        Param("length_penalty", "float", 1.0, "alpha: a finished hypothesis scores "
              "logprob / length^alpha (0: no normalisation)", minimum=-2.0, maximum=4.0),
    )
    example = {"beams": 2}

    @classmethod
    async def search(cls, tree: Tree, params: Mapping[str, Any]) -> SearchResult:
        beams, alpha = int(params["beams"]), float(params["length_penalty"])
        keep = 2 * beams
        running: list[tuple[tuple[int, ...], float]] = [((), 0.0)]
        finished: list[tuple[float, int, tuple[int, ...]]] = []  # (score, order, ids)
        improvable, length, order = True, 0, 0
        while True:
            options = await tree.next_tokens([ids for ids, _ in running], keep)
            pool = sorted(((score + lp, -b, -rank, ids + (token,))
                           for b, ((ids, score), tops) in enumerate(zip(running, options))
                           for rank, (token, lp) in enumerate(tops)), reverse=True)[:keep]
            length += 1
            ends = [token_ends(ids, tree, length) for _, _, _, ids in pool]
            if improvable:
                for position, ((total, _, _, ids), end) in enumerate(zip(pool, ends)):
                    if end and position < beams:
                        finished.append((total / length ** alpha, -order, ids))
                        order += 1
                finished = sorted(finished, reverse=True)[:beams]
            alive = [(ids, total) for (total, _, _, ids), end in zip(pool, ends) if not end]
            running = (alive + [(ids, DEAD) for (_, _, _, ids), end in zip(pool, ends) if end]
                       )[:beams]
            if improvable and len(finished) == beams:
                best_possible = running[0][1] / length ** alpha
                improvable = best_possible > finished[-1][0]
            if not improvable or all(ends):
                break
        leaves = [tree.leaf(ids, True, score) for score, _, ids in finished]
        chosen = leaves[0]
        return SearchResult(chosen, leaves, {"steps": length, "finished": len(finished),
                                             "score": chosen.reward,
                                             "logprob": _logprob(chosen.reward, alpha,
                                                                 len(chosen.token_ids))})


def token_ends(ids: tuple[int, ...], tree: Tree, length: int) -> bool:
    return ids[-1] in tree.eos_token_ids or length >= tree.max_new_tokens


def _logprob(score: float, alpha: float, length: int) -> float:
    return score * length ** alpha if length and not math.isnan(score) else math.nan
