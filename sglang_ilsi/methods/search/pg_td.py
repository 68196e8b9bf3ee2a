"""PG-TD: planning-guided code generation, a token-level MCTS valued by running tests."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sglang_ilsi.methods.search.base import SearchMethod, SearchResult, Tree, best
from sglang_ilsi.params import IlsiRequestError, Param, validate_params
from sglang_ilsi.registry import register

MAX_TESTS = 16
MAX_TEST_CHARS = 4096
_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)


def program_of(text: str) -> str:
    """The program in a completion: the first fenced code block (an unclosed one
    runs to the end), else the whole text."""
    found = _FENCE.search(text)
    return found.group(1) if found else text


def same_output(printed: str, expected: str) -> bool:
    """Whether a program's standard output is the expected one, up to trailing
    whitespace on each line and blank lines at either end."""
    def lines(s: str) -> list[str]:
        return [line.rstrip() for line in s.strip().splitlines()]
    return lines(printed) == lines(expected)


def reward_of(passed: Sequence[bool]) -> float:
    """The fraction of tests passed."""
    return sum(passed) / len(passed) if passed else 0.0


@dataclass
class TokenNode:
    """A prefix of the solution (token ids after the prompt) in PG-TD's tree."""

    ids: tuple[int, ...]
    prior: float  # p(last token | parent), from the parent's top-k
    visits: int = 0
    value: float = 0.0  # the best reward of a rollout through this node
    children: list[TokenNode] | None = None  # None: not expanded yet
    ended: bool = False  # ends in end-of-sequence or fills the token budget


@dataclass
class Rollouts:
    """Greedy completions seen so far: ``prefix → completion``, and each completion's
    reward. Greedy decoding is deterministic, so every prefix q with prefix ⊑ q ⊑
    completion completes the same way (PG-TD's tree-structure cache)."""

    done: list[tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    rewards: dict[tuple[int, ...], float] = field(default_factory=dict)

    def lookup(self, q: tuple[int, ...]) -> tuple[int, ...] | None:
        for prefix, full in self.done:
            if len(prefix) <= len(q) <= len(full) and full[:len(q)] == q:
                return full
        return None


@register
class PgTd(SearchMethod):
    """PG-TD: MCTS over tokens, each new node valued by the tests its greedy completion passes.

    Zhang, Chen, Shen, Ding, Tenenbaum & Gan, "Planning with Large Language
    Models for Code Generation", ICLR 2023 (arXiv:2303.05510). A node is a
    token prefix; each of ``n`` iterations:

    1. *select*: from the root, while the node is expanded, go to the child c
       maximising the P-UCB score Q(c) + w·P(c)·sqrt(N(s)) / (1 + N(c))
       (P = the policy's probability of c's token, Q = the best reward found
       through c, N = visits; ties: the more likely token);
    2. *expand*: the policy's ``k`` most likely next tokens become children;
    3. *evaluate*: the node is completed greedily (one batched SGLang call;
       a completion already known covers every prefix on it, as PG-TD's
       tree cache) and the program in it (its first fenced code block, else
       the text) runs on each test's input in the server's sandbox; the
       reward is the fraction of tests whose standard output is the expected
       one (exit status 0);
    4. *back up*: N += 1 and Q = max(Q, reward) along the path.

    The answer is the completion with the best reward (ties: the first
    found); with ``stop_when_solved`` the search ends at the first program
    that passes every test. The paper's β(s) is the constant w here. Tests are
    data (standard input and expected output); the programs are the model's
    and run only where the operator enabled the sandbox (``--ilsi-tools python``).
    """

    name = "pg_td"
    family = "independent/tree-search"
    paper = ("Zhang et al. 2023, Planning with Large Language Models for Code Generation "
             "(PG-TD, ICLR), arXiv:2303.05510")
    needs = frozenset({"tree", "execution"})
    delimited: ClassVar[bool] = False
    params = (
        Param("test_inputs", "str_list", [], "each test's standard input",
              max_items=MAX_TESTS, max_length=MAX_TEST_CHARS),
        Param("test_outputs", "str_list", [], "each test's expected standard output "
              "(compared up to trailing whitespace)", max_items=MAX_TESTS,
              max_length=MAX_TEST_CHARS),
        Param("n", "int", 8, "iterations (each evaluates one node)", minimum=1, maximum=64),
        Param("k", "int", 3, "the most likely next tokens a node is expanded into",
              minimum=1, maximum=16),
        Param("exploration", "float", 4.0, "w: the weight of P-UCB's exploration term",
              minimum=0.0, maximum=100.0),
        Param("stop_when_solved", "bool", True, "end at the first program passing every test"),
    )
    example = {"test_inputs": ["2 3\n"], "test_outputs": ["5"], "n": 2, "k": 2}

    @classmethod
    def validate(cls, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        params = validate_params(cls.params, given or {})
        if not params["test_inputs"]:
            raise IlsiRequestError("test_inputs", "give at least one test (its standard input)")
        if len(params["test_outputs"]) != len(params["test_inputs"]):
            raise IlsiRequestError("test_outputs", f"one expected output per test input: "
                                   f"{len(params['test_inputs'])} inputs, "
                                   f"{len(params['test_outputs'])} outputs")
        return params

    @classmethod
    async def search(cls, tree: Tree, params: Mapping[str, Any]) -> SearchResult:
        k, weight = int(params["k"]), float(params["exploration"])
        tests = list(zip(params["test_inputs"], params["test_outputs"], strict=True))
        root = TokenNode((), 1.0)
        rollouts = Rollouts()
        leaves = []
        passed_by_leaf: dict[int, list[bool]] = {}
        cached = 0

        def ended(ids: tuple[int, ...]) -> bool:
            return len(ids) >= tree.max_new_tokens or (
                bool(ids) and ids[-1] in tree.eos_token_ids)

        for _ in range(int(params["n"])):
            node, path = root, [root]
            while node.children:
                parent_visits = node.visits
                node = max(node.children, key=lambda c: (
                    c.value + weight * c.prior * math.sqrt(parent_visits) / (1 + c.visits),
                    c.prior))
                path.append(node)
            if node.children is None and not node.ended:
                options = (await tree.next_tokens([node.ids], k))[0]
                node.children = [TokenNode(node.ids + (token,), math.exp(lp),
                                           ended=ended(node.ids + (token,)))
                                 for token, lp in options]
            full = rollouts.lookup(node.ids)
            if full is None:
                if node.ended:  # nothing left to generate: the prefix is the program
                    full, finished = node.ids, node.ids[-1] in tree.eos_token_ids
                else:
                    full, finished = (await tree.rollout([node.ids]))[0]
                rollouts.done.append((node.ids, full))
                passed = await tree.run_tests(full, tests)
                leaf = tree.leaf(full, finished, reward_of(passed))
                leaves.append(leaf)
                passed_by_leaf[leaf.id] = passed
                rollouts.rewards[full] = leaf.reward
            else:
                cached += 1
            reward = rollouts.rewards[full]
            for on_path in path:
                on_path.visits += 1
                on_path.value = max(on_path.value, reward)
            if params["stop_when_solved"] and reward >= 1.0:
                break
        return SearchResult(best(leaves), leaves, {
            "iterations": root.visits, "programs_run": len(leaves),
            "cached_rollouts": cached, "tests": len(tests),
            "passed": {str(i): p for i, p in passed_by_leaf.items()}})
