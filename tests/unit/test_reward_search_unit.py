"""Reward models and searches without a server: the folder format and its
refusals, step splitting and folding, the launch flags, and the search
algorithms against the client-driven reference on random trees (hypothesis)."""

from __future__ import annotations

import asyncio
import json
import math
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_ilsi import config as ilsi_config
from sglang_ilsi import plan, registry
from sglang_ilsi.config import IlsiConfig, IlsiConfigError
from sglang_ilsi.methods.search.base import Node, node_seed
from sglang_ilsi.params import IlsiRequestError
from sglang_ilsi.reward import RewardModelError, aggregate, read_info, reward_of, split_steps
from sglang_ilsi_lab.client_search import ClientSearch, mcts


def test_split_steps_keeps_delimiters():
    assert split_steps(" 1+2=3\n3+4=7\n#### 7", "\n") == [" 1+2=3\n", "3+4=7\n", "#### 7"]
    assert split_steps("a\n\nb\n", "\n") == ["a\n", "\n", "b\n"]
    assert split_steps("", "\n") == []
    assert split_steps("no delimiter", "\n\n") == ["no delimiter"]
    text = "x. y. z"
    assert "".join(split_steps(text, ". ")) == text


def test_aggregate_and_reward_of():
    scores = (0.9, 0.5, 0.8)
    assert aggregate(scores, "last") == 0.8
    assert aggregate(scores, "min") == 0.5
    assert aggregate(scores, "prod") == pytest.approx(0.36)
    assert aggregate(scores, "mean") == pytest.approx(2.2 / 3)
    assert math.isnan(aggregate((), "min"))
    assert reward_of((0.3,), "outcome", "min") == 0.3
    with pytest.raises(ValueError):
        aggregate(scores, "median")


def _folder(tmp_path: Path, kind: str = "process", arch: str = "LlamaForTokenClassification",
            labels: int = 1, declared: dict | None = None) -> str:
    folder = tmp_path / f"rm-{kind}-{arch}-{labels}"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": [arch], "id2label": {str(i): f"L{i}" for i in range(labels)},
        "max_position_embeddings": 256}))
    (folder / "sglang_ilsi_reward.json").write_text(json.dumps(declared or {"kind": kind}))
    return str(folder)


def test_read_info_accepts_the_format_and_names_what_is_wrong(tmp_path):
    info = read_info("prm", _folder(tmp_path))
    assert (info.kind, info.step_delimiter, info.max_positions) == ("process", "\n", 256)
    cases = [
        (_folder(tmp_path, "outcome", "LlamaForTokenClassification"), "ForSequenceClassification"),
        (_folder(tmp_path, "process", "LlamaForCausalLM"), "ForTokenClassification"),
        (_folder(tmp_path, "process", "LlamaForTokenClassification", labels=2), "num_labels"),
        (_folder(tmp_path, "x", "LlamaForTokenClassification", declared={"kind": "judge"}),
         "kind"),
        (_folder(tmp_path, "y", "LlamaForTokenClassification",
                 declared={"kind": "process", "step_delimiter": ""}), "step_delimiter"),
        (str(tmp_path), "sglang_ilsi_reward.json"),
        (_folder(tmp_path, "z", "LlamaForTokenClassification",
                 declared={"kind": "process", "reads": "likelihood"}), "ForCausalLM"),
        (_folder(tmp_path, "w", "LlamaForCausalLM",
                 declared={"kind": "process", "reads": "logits"}), "reads"),
    ]
    likelihood = read_info("v", _folder(tmp_path, "v", "LlamaForCausalLM", labels=2,
                                        declared={"kind": "process", "reads": "likelihood"}))
    assert likelihood.reads == "likelihood" and likelihood.to_dict()["reads"] == "likelihood"
    for path, words in cases:
        with pytest.raises(RewardModelError, match=words):
            read_info("rm", path)


def test_launch_flags(tmp_path):
    good = _folder(tmp_path)
    parsed = ilsi_config.parse(["--ilsi", "--ilsi-reward-model", f"prm={good}"])
    assert parsed.reward_models == {"prm": str(Path(good).resolve())}
    assert IlsiConfig.from_json(parsed.to_json()).reward_models == parsed.reward_models
    bad = [
        (["--ilsi-reward-model", f"prm={tmp_path}/missing"], "no reward model folder"),
        (["--ilsi-reward-model", f"prm={_folder(tmp_path, 'process', 'LlamaForCausalLM')}"],
         "ForTokenClassification"),
        (["--ilsi-reward-model", f"prm={good}", "--ilsi-reward-model", f"prm={good}"],
         "given twice"),
        (["--ilsi-reward-url", "prm=localhost:1"], "NAME=http"),
        (["--ilsi-reward-url", "prm=http://127.0.0.1:9"], "cannot reach"),
        (["--ilsi-reward-model", f"prm={good}", "--ilsi-reward-url", "prm=http://127.0.0.1:9"],
         "given twice"),
    ]
    for flags, words in bad:
        with pytest.raises(IlsiConfigError, match=words):
            ilsi_config.parse(["--ilsi", *flags])


def test_plan_resolves_and_refuses_reward_models():
    one = IlsiConfig(reward_models={"prm": "/unused"})
    two = IlsiConfig(reward_models={"prm": "/unused", "orm": "/unused"})
    chosen = plan.read({"ilsi": {"method": "dvts"}}, one)
    assert chosen.kind == plan.SEARCH and chosen.search.params["reward_model"] == "prm"
    for request, config, param in [
        ({"method": "dvts"}, two, "reward_model"),
        ({"method": "dvts"}, IlsiConfig(), "reward_model"),
        ({"method": "prm_beam_search", "reward_model": "orm"}, one, "reward_model"),
        ({"method": "best_of_n", "reward": "model"}, IlsiConfig(), "reward_model"),
        ({"method": "prm_beam_search", "n": 8, "beam_width": 3}, one, "beam_width"),
        ({"method": "dvts", "decoding": {"method": "typical"}},
         IlsiConfig(reward_models={"prm": "/unused"}, speculative_algorithm="NGRAM"), "decoding"),
    ]:
        with pytest.raises(IlsiRequestError) as e:
            plan.read({"ilsi": request}, config)
        assert e.value.param == param, (request, str(e.value))
    assert plan.read({"ilsi": {"method": "best_of_n"}}, IlsiConfig()).kind == plan.SELECTION


def test_node_seeds_are_distinct_and_stable():
    seeds = {node_seed(7, i) for i in range(1, 200)}
    assert len(seeds) == 199 and all(0 <= s < 2**31 for s in seeds)
    assert node_seed(7, 3) == node_seed(7, 3) != node_seed(8, 3)


# -- the search algorithms against the client-driven reference --------------------------


class RandomTree:
    """A tree whose nodes get random rewards (often tied) and finish at random."""

    def __init__(self, seed: int, p_finish: float):
        self.rng = random.Random(seed)
        self.p_finish = p_finish
        self.root = Node(id=0, parent=None, depth=0)
        self.nodes = [self.root]

    async def expand(self, parents, width):
        children = []
        for parent in [p for p in parents if not p.finished]:
            for _ in range(width):
                node_id = len(self.nodes) + len(children)
                reward = self.rng.choice([math.nan, 0.1, 0.5, 0.5, 0.9, self.rng.random()])
                children.append(Node(id=node_id, parent=parent.id, depth=parent.depth + 1,
                                     steps=(*parent.steps, f"s{node_id}\n"),
                                     finished=self.rng.random() < self.p_finish,
                                     reward=reward, step_scores=(reward,)))
        self.nodes += children
        return children


@settings(max_examples=150, deadline=None)
@given(method=st.sampled_from(["prm_beam_search", "dvts", "mcts"]), seed=st.integers(0, 10**6),
       width=st.sampled_from([1, 2, 4]), factor=st.sampled_from([1, 2, 4]),
       max_steps=st.integers(1, 6), p_finish=st.sampled_from([0.0, 0.2, 0.5, 1.0]))
def test_search_algorithms_equal_the_client_reference(method, seed, width, factor, max_steps,
                                                      p_finish):
    registry.load()
    cls = registry.get(method)
    params = cls.validate({"n": width * factor, "max_steps": max_steps,
                           **({"width": width} if method == "mcts" else {"beam_width": width})})
    tree = RandomTree(seed, p_finish)
    result = asyncio.run(cls.search(tree, params))
    replay = [{"id": x.id, "parent": x.parent, "step": x.steps[-1], "finished": x.finished,
               "reward": None if math.isnan(x.reward) else x.reward} for x in tree.nodes[1:]]
    ref = ClientSearch("", "", score=lambda prompt, solutions: [], replay=replay)
    if method == "mcts":
        chosen = mcts(ref, params["n"], params["width"], params["exploration"],
                      params["max_steps"])
    else:
        run = ref.beam_search if method == "prm_beam_search" else ref.dvts
        chosen = run(params["n"], params["beam_width"], params["max_steps"])
    assert len(ref.nodes) == len(tree.nodes)
    assert result.chosen.id == chosen.id
    assert result.chosen in result.leaves
