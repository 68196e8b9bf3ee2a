"""Search methods (kind ``search``): a tree of partial solutions grown step by step.

A search method needs ``tree``: the engine gives it a :class:`Tree` whose
:meth:`Tree.expand` samples, for each parent node, ``width`` continuations of
one *step* each (text up to and including the step delimiter, or to the end
of the solution), as one batched SGLang request in which every child shares
its parent's KV through the radix cache; methods that also need ``reward``
get every new node scored by a served reward model (:mod:`sglang_ilsi.reward`)
before ``expand`` returns. The method decides which nodes to grow and which
leaf answers; the engine (``engine/http/search.py``) reports every node.

Node ids are given in creation order (the root is 0; children in parent-major
order). With a ``sampling_seed`` s in the request, the child with id i is
sampled with seed :func:`node_seed` (s, i), so a search is reproducible and a
client can replay it node by node.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from sglang_ilsi.declaration import Method
from sglang_ilsi.params import IlsiRequestError, Param, validate_params
from sglang_ilsi.reward import AGGREGATE_PARAM, REWARD_MODEL_PARAM

MAX_NODES_PER_STEP = 64
MAX_STEPS = 64
SEED_STRIDE = 1_000_003


def node_seed(request_seed: int, node_id: int) -> int:
    """The sampling seed of node ``node_id`` in a search seeded with ``request_seed``."""
    return (int(request_seed) * SEED_STRIDE + int(node_id)) % (2**31 - 1)


@dataclass(frozen=True)
class Node:
    """A partial (or finished) solution: the steps from the root to here."""

    id: int
    parent: int | None
    depth: int
    steps: tuple[str, ...] = ()
    token_ids: tuple[int, ...] = ()
    finished: bool = False
    finish_reason: Any = None
    reward: float = math.nan  # the reward model's reward of the steps so far
    step_scores: tuple[float, ...] = ()

    @property
    def text(self) -> str:
        return "".join(self.steps)

    def rank(self) -> float:
        """The reward as a sort key (NaN ranks last)."""
        return rank_of(self.reward)


def rank_of(reward: float) -> float:
    """A reward as a sort key: NaN (no reward) ranks last."""
    return -math.inf if math.isnan(reward) else reward


class Tree(Protocol):
    """What the engine gives a search method."""

    root: Node

    async def expand(self, parents: Sequence[Node], width: int) -> list[Node]:
        """``width`` one-step children of each parent (parent-major order), scored
        when the method needs ``reward``. Finished parents are not expanded."""
        ...

    async def next_tokens(self, prefixes: Sequence[Sequence[int]], k: int
                          ) -> list[list[tuple[int, float]]]:
        """For each prefix (token ids after the prompt), the ``k`` most likely next
        tokens with their log-probabilities (under the request's logits methods),
        best first: one batched forward step."""
        ...

    async def score_prefixes(self, prefixes: Sequence[Sequence[int]]) -> list[float]:
        """The request's reward model's reward of each prefix (token ids after the
        prompt, read as text and cut into the model's steps): one batched call."""
        ...

    async def rollout(self, prefixes: Sequence[Sequence[int]]
                      ) -> list[tuple[tuple[int, ...], bool]]:
        """Each prefix completed greedily (under the request's logits methods) up to
        end-of-sequence or ``max_new_tokens``: the whole token ids and whether
        they finished. One batched call."""
        ...

    async def run_tests(self, token_ids: Sequence[int],
                        tests: Sequence[tuple[str, str]]) -> list[bool]:
        """Run the program in the solution (``program_of`` its text) on each test's
        standard input in the server's sandbox: whether it exited cleanly printing
        the expected output (need ``execution``)."""
        ...

    def leaf(self, token_ids: Sequence[int], finished: bool, reward: float) -> Node:
        """Record a solution found without steps (a token-level search) as a node."""
        ...

    eos_token_ids: frozenset[int]
    max_new_tokens: int


@dataclass(frozen=True)
class SearchResult:
    chosen: Node
    leaves: list[Node]  # the finished (or last) candidates the answer was chosen from
    info: dict[str, Any]


def best(nodes: Sequence[Node]) -> Node:
    """The highest-reward node (ties: the earliest in ``nodes``)."""
    top = nodes[0]
    for node in nodes[1:]:
        if node.rank() > top.rank():
            top = node
    return top


def top_k(nodes: Sequence[Node], k: int) -> list[Node]:
    """The ``k`` highest-reward nodes, best first (ties: the earliest)."""
    order = sorted(range(len(nodes)), key=lambda i: (-nodes[i].rank(), i))
    return [nodes[i] for i in order[:k]]


async def reward_guided_tokens(tree: Tree, candidates: int, choose: Any
                               ) -> SearchResult:
    """Token by token: the ``candidates`` most likely next tokens, each prefix
    scored by the reward model, ``choose(logprobs, rewards) -> index`` picks one;
    until end-of-sequence or ``max_new_tokens`` (ARGS, RAD)."""
    ids: tuple[int, ...] = ()
    reward = math.nan
    while len(ids) < tree.max_new_tokens:
        options = (await tree.next_tokens([ids], candidates))[0]
        rewards = await tree.score_prefixes([ids + (token,) for token, _ in options])
        pick = choose([lp for _, lp in options], rewards)
        ids, reward = ids + (options[pick][0],), rewards[pick]
        if ids[-1] in tree.eos_token_ids:
            break
    leaf = tree.leaf(ids, True, reward)
    return SearchResult(leaf, [leaf], {"tokens": len(ids)})


STEP_PARAMS = (
    Param("max_steps", "int", 10, "the most steps a solution may take (tree depth)",
          minimum=1, maximum=MAX_STEPS),
    Param("step_max_tokens", "int", 64, "the most tokens one step may take",
          minimum=1, maximum=1024),
    Param("step_delimiter", "str", "", "the text that ends a step (empty: the reward "
          "model's own delimiter, else a newline)", max_length=16),
)


class SearchMethod(Method):
    """Base class of the methods that grow a tree of partial solutions."""

    needs: ClassVar[frozenset[str]] = frozenset({"tree"})
    composes_with: ClassVar[frozenset[str]] = frozenset({"logits"})
    # a logits method may decode every step (``ilsi.decoding``)
    decoded_by: ClassVar[str | None] = "decoding"
    # a step ends at the step delimiter; otherwise it is ``params["block"]`` tokens
    delimited: ClassVar[bool] = True

    @classmethod
    def validate(cls, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Check a request's parameters; return them with defaults filled in."""
        return validate_params(cls.params, given or {})

    @classmethod
    async def search(cls, tree: Tree, params: Mapping[str, Any]) -> SearchResult:
        raise NotImplementedError


class GroupedSearch(SearchMethod):
    """A verifier-guided search that samples N nodes a step in N/M groups of M
    (PRM beam search, DVTS): ``beam_width`` (M) must divide ``n`` (N)."""

    needs: ClassVar[frozenset[str]] = frozenset({"tree", "reward"})
    example: ClassVar[dict[str, Any]] = {"n": 4, "beam_width": 2, "max_steps": 4}

    @staticmethod
    def shape(width_doc: str) -> tuple[Param, ...]:
        """The parameters every grouped search takes (``width_doc`` says what M is)."""
        return (Param("n", "int", 8, "N: the nodes sampled at every step", minimum=1,
                      maximum=MAX_NODES_PER_STEP),
                Param("beam_width", "int", 4, width_doc, minimum=1,
                      maximum=MAX_NODES_PER_STEP),
                *STEP_PARAMS, REWARD_MODEL_PARAM, AGGREGATE_PARAM)

    @classmethod
    def validate(cls, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        params = super().validate(given)
        if params["n"] % params["beam_width"]:
            raise IlsiRequestError("beam_width", f"must divide n ({params['n']}), got "
                                   f"{params['beam_width']}")
        return params
