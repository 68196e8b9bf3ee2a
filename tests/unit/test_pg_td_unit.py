"""PG-TD without a server: its pieces, its request checks, and its search on toy
language models against the reference written apart (hypothesis)."""

from __future__ import annotations

import asyncio
import hashlib
import math
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_ilsi import plan, registry
from sglang_ilsi.config import IlsiConfig
from sglang_ilsi.methods.search.base import Node
from sglang_ilsi.methods.search.pg_td import PgTd, Rollouts, program_of, same_output
from sglang_ilsi.params import IlsiRequestError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
from pg_td_reference import first_program, pg_td, run_program  # noqa: E402

EOS = 0
VOCAB = 6


def test_program_of_takes_the_first_fenced_block():
    assert program_of("```python\nprint(1)\n```\nthen ```x\nno\n```") == "print(1)\n"
    assert program_of("Here:\n```\nprint(2)\n") == "print(2)\n"  # unclosed: to the end
    assert program_of("print(3)") == "print(3)"
    for text in ("```python\nprint(1)\n```\n", "a\n```\nb\n", "plain", "```py\n"):
        assert program_of(text) == first_program(text)


def test_same_output_ignores_trailing_blanks_only():
    assert same_output("5\n", "5")
    assert same_output("a  \nb\n\n", "a\nb")
    assert not same_output("5 6", "5\n6")
    assert not same_output("", "0")
    assert same_output("", "")


def test_rollouts_cover_the_prefixes_on_a_greedy_path():
    known = Rollouts([((1,), (1, 2, 3, 4))])
    assert known.lookup((1, 2)) == (1, 2, 3, 4)
    assert known.lookup((1, 2, 3, 4)) == (1, 2, 3, 4)
    assert known.lookup(()) is None  # the token after the root was not greedy
    assert known.lookup((1, 3)) is None


def test_requests_are_checked():
    registry.load()
    with pytest.raises(IlsiRequestError) as missing:
        PgTd.validate({})
    assert missing.value.param == "test_inputs"
    with pytest.raises(IlsiRequestError) as unequal:
        PgTd.validate({"test_inputs": ["1", "2"], "test_outputs": ["1"]})
    assert unequal.value.param == "test_outputs"
    with pytest.raises(IlsiRequestError) as many:
        PgTd.validate({"test_inputs": ["1"] * 17, "test_outputs": ["1"] * 17})
    assert many.value.param == "test_inputs"
    request = {"method": "pg_td", "test_inputs": ["1"], "test_outputs": ["1"]}
    with pytest.raises(IlsiRequestError) as no_sandbox:
        plan.read({plan.REQUEST_KEY: request}, IlsiConfig(), None)
    assert no_sandbox.value.param == "method" and "--ilsi-tools python" in str(no_sandbox.value)
    chosen = plan.read({plan.REQUEST_KEY: request},
                       IlsiConfig(tools=("python",)), None)
    assert chosen.search.method is PgTd


def _digest(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


class ToyTree:
    """A deterministic toy language model over VOCAB tokens (EOS = 0) and toy tests."""

    def __init__(self, seed: int, budget: int, tests: int):
        self.seed, self.max_new_tokens, self.tests = seed, budget, tests
        self.eos_token_ids = frozenset({EOS})
        self.root = Node(id=0, parent=None, depth=0)
        self.nodes: list[Node] = [self.root]
        self.generate_calls = 0

    def logprobs(self, prefix: tuple[int, ...]) -> list[float]:
        raw = [(_digest(self.seed, prefix, v) % 1000) / 250.0 for v in range(VOCAB)]
        total = math.log(sum(math.exp(x) for x in raw))
        return [x - total for x in raw]

    def top_k(self, prefix: tuple[int, ...], k: int) -> list[tuple[int, float]]:
        row = self.logprobs(prefix)
        order = sorted(range(VOCAB), key=lambda v: (-row[v], v))
        return [(v, row[v]) for v in order[:k]]

    def greedy(self, prefix: tuple[int, ...]) -> tuple[int, ...]:
        ids = prefix
        while len(ids) < self.max_new_tokens and not (ids and ids[-1] == EOS):
            ids += (self.top_k(ids, 1)[0][0],)
        return ids

    def passed(self, ids: tuple[int, ...]) -> list[bool]:
        return [_digest(self.seed, ids, t) % 3 == 0 for t in range(self.tests)]

    async def next_tokens(self, prefixes, k):
        self.generate_calls += 1
        return [self.top_k(tuple(p), k) for p in prefixes]

    async def rollout(self, prefixes):
        self.generate_calls += 1
        return [(self.greedy(tuple(p)), self.greedy(tuple(p))[-1:] == (EOS,)) for p in prefixes]

    async def run_tests(self, token_ids, tests):
        assert len(tests) == self.tests
        return self.passed(tuple(token_ids))

    def leaf(self, token_ids, finished, reward):
        node = Node(id=len(self.nodes), parent=0, depth=1, token_ids=tuple(token_ids),
                    finished=finished, reward=reward)
        self.nodes.append(node)
        return node


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 10**6), iterations=st.integers(1, 24), k=st.integers(1, 4),
       exploration=st.sampled_from([0.0, 0.5, 4.0, 50.0]), budget=st.integers(1, 8),
       tests=st.integers(1, 3), stop=st.booleans())
def test_search_equals_the_reference_on_toy_models(seed, iterations, k, exploration, budget,
                                                   tests, stop):
    tree = ToyTree(seed, budget, tests)
    params = PgTd.validate({"test_inputs": ["x"] * tests, "test_outputs": ["y"] * tests,
                            "n": iterations, "k": k, "exploration": exploration,
                            "stop_when_solved": stop})
    result = asyncio.run(PgTd.search(tree, params))
    programs, answer = pg_td(lambda p: tree.top_k(p, k), tree.greedy, tree.passed, iterations,
                             exploration, budget, {EOS}, stop)
    assert [(x.token_ids, x.reward) for x in result.leaves] == programs
    assert result.chosen is result.leaves[answer]
    assert result.info["programs_run"] == len(programs)
    assert result.info["iterations"] == iterations or (stop and answer == len(programs) - 1
                                                       and programs[answer][1] == 1.0)


def test_a_solved_search_stops_and_tree_cache_saves_rollouts():
    tree = ToyTree(seed=7, budget=6, tests=1)
    params = PgTd.validate({"test_inputs": ["x"], "test_outputs": ["y"], "n": 30, "k": 3,
                            "stop_when_solved": False})
    result = asyncio.run(PgTd.search(tree, params))
    assert result.info["iterations"] == 30
    assert result.info["cached_rollouts"] + result.info["programs_run"] == 30
    assert result.info["cached_rollouts"] > 0  # the greedy child of an evaluated node
    assert result.chosen.reward == 1.0
    stopping = asyncio.run(PgTd.search(ToyTree(7, 6, 1), {**params, "stop_when_solved": True}))
    assert stopping.chosen.reward == 1.0 and stopping.info["iterations"] < 30


def test_reference_runner_compares_printed_lines(tmp_path):
    assert run_program("print(input()[::-1])", [("abc\n", "cba"), ("xy\n", "yz")]) == [True, False]
    assert run_program("raise SystemExit(3)", [("", "")]) == [False]
