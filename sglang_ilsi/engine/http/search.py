"""Searches inside one request (kind ``search``).

A request whose ``ilsi.method`` is a search method (``prm_beam_search``,
``dvts``; :mod:`sglang_ilsi.methods.search`) runs here, in the tokenizer
manager's process. The method grows a tree through :class:`EngineTree`: each
``expand`` is one batched SGLang request whose items are ``prompt + the
parent's tokens``, stopped at the step delimiter (kept in the text), so every
child reuses its parent's KV through the radix cache and all the children of
a step decode as one batch; the new nodes are then scored by the request's
reward model in one batched call (:mod:`reward_service`). Steps use the
request's own sampling parameters and ``ilsi.decoding`` (a logits method);
``max_new_tokens`` bounds each solution's length. The client receives the
chosen solution as an ordinary response; ``meta_info.ilsi`` lists every node
(its parent, depth, step text, reward, whether it finished), the chosen path and
what the search cost (policy tokens, reward-model tokens, nodes, calls).

A ``sampling_seed`` gives node i the seed ``node_seed(seed, i)``; SGLang honours
per-request seeds only on a server started with ``--enable-deterministic-inference``
(elsewhere it samples freely, and the tree differs from run to run).
"""

from __future__ import annotations

import asyncio
import copy
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any

from sglang_ilsi.engine.http import reward_service, tool_loop
from sglang_ilsi.engine.http.programs import DEFAULT_MAX_NEW_TOKENS, LOGPROB_KEYS
from sglang_ilsi.engine.http.samples import check_one_text_prompt, finish_type, prompt_text
from sglang_ilsi.methods.search.base import Node, node_seed
from sglang_ilsi.methods.search.pg_td import program_of, same_output
from sglang_ilsi.plan import SANDBOX_TOOL, SOURCE_SUFFIX, Plan, SearchPlan, clients_own

DEFAULT_DELIMITER = "\n"


def check_request(obj: Any) -> None:
    """What a search asks of the request's shape (its ilsi object is valid)."""
    check_one_text_prompt(obj, "a search", "; use the method's own ilsi.n")


def step_delimiter(plan: SearchPlan, config: Any) -> str:
    """The request's delimiter, else its reward model's, else a newline."""
    if plan.params.get("step_delimiter"):
        return str(plan.params["step_delimiter"])
    if "reward" in plan.method.needs:
        return reward_service.service(plan.params["reward_model"], config).info.step_delimiter
    return DEFAULT_DELIMITER


class EngineTree:
    """The tree a search method grows (:class:`~sglang_ilsi.methods.search.base.Tree`)."""

    def __init__(self, original: Callable[..., Any], tokenizer_manager: Any, obj: Any,
                 request: Any, plan: SearchPlan, prepare: Callable[[Any, Plan], None],
                 config: Any):
        self.original, self.tokenizer_manager, self.obj = original, tokenizer_manager, obj
        self.request, self.plan, self.prepare, self.config = request, plan, prepare, config
        tokenizer = tokenizer_manager.tokenizer
        self.prompt_ids = (list(obj.input_ids) if obj.input_ids is not None
                           else list(tokenizer.encode(obj.text)))
        self.prompt_text = prompt_text(tokenizer_manager, obj)
        self.base = dict(obj.sampling_params or {})
        self.custom = clients_own(self.base.get("custom_params"))
        self.budget = int(self.base.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
        self.seed = self.base.get("sampling_seed")
        stops = self.base.get("stop") or []
        self.client_stops = [stops] if isinstance(stops, str) else list(stops)
        self.delimiter = step_delimiter(plan, config)
        self.scored = "reward" in plan.method.needs
        self.max_new_tokens = self.budget
        self.eos_token_ids = _eos_token_ids(tokenizer_manager, self.base)
        self.tokenizer = tokenizer
        self.root = Node(id=0, parent=None, depth=0)
        self.nodes: list[Node] = [self.root]
        self.metas: dict[int, dict[str, Any]] = {}
        self.calls = self.reward_calls = self.reward_tokens = self.reward_cached_tokens = 0
        self.completion_tokens = self.prompt_tokens_computed = 0
        self.reward_ms = 0.0
        self.last_meta: dict[str, Any] = {}
        self.rollout_metas: dict[tuple[int, ...], dict[str, Any]] = {}
        self.executions = 0
        self.execution_ms = 0.0

    def _sampling(self, parent: Node, node_id: int) -> dict[str, Any]:
        step = (self.plan.params["step_max_tokens"] if self.plan.method.delimited
                else self.plan.params["block"])
        stops = ([self.delimiter] if self.plan.method.delimited else []) + [
            s for s in self.client_stops if s != self.delimiter]
        params = {**self.base, "n": 1, "custom_params": dict(self.custom),
                  "max_new_tokens": min(int(step), self.budget - len(parent.token_ids)),
                  "stop": stops or None, "no_stop_trim": True}
        if self.seed is not None:
            params["sampling_seed"] = node_seed(self.seed, node_id)
        return params

    def _finished(self, meta: dict[str, Any], length: int) -> bool:
        reason = meta.get("finish_reason")
        matched = reason.get("matched") if isinstance(reason, dict) else None
        if finish_type(meta) == "stop":  # end of sequence, or a client's stop
            return not (self.plan.method.delimited and matched == self.delimiter)
        return length >= self.budget or finish_type(meta) not in ("length", None)

    async def expand(self, parents: Sequence[Node], width: int) -> list[Node]:
        parents = [p for p in parents if not p.finished]
        if not parents or width < 1:
            return []
        first_id = len(self.nodes)
        pairs = [(p, first_id + k * width + j) for k, p in enumerate(parents)
                 for j in range(width)]
        outs = await self._generate([list(p.token_ids) for p, _ in pairs],
                                    [self._sampling(p, node_id) for p, node_id in pairs])
        children = []
        for (parent, node_id), o in zip(pairs, outs, strict=True):
            meta = o["meta_info"]
            self.metas[node_id] = meta
            ids = tuple(parent.token_ids) + tuple(o.get("output_ids") or ())
            text = _without_client_stop(o["text"], meta, self.delimiter)
            children.append(Node(id=node_id, parent=parent.id, depth=parent.depth + 1,
                                 steps=(*parent.steps, text), token_ids=ids,
                                 finished=self._finished(meta, len(ids)),
                                 finish_reason=meta.get("finish_reason")))
        if self.scored:
            if self.plan.method.delimited:
                scored = await self._score([list(c.steps) for c in children])
            else:  # blocks of tokens: the reward model reads its own steps
                scored = await self._score_texts([c.text for c in children])
            children = [replace(c, reward=r, step_scores=s) for c, r, s in
                        zip(children, scored.rewards, scored.step_scores, strict=True)]
        self.nodes += children
        return children

    async def next_tokens(self, prefixes: Sequence[Sequence[int]], k: int
                          ) -> list[list[tuple[int, float]]]:
        one = {**self.base, "n": 1, "custom_params": dict(self.custom), "max_new_tokens": 1,
               "temperature": 0.0, "stop": None, "ignore_eos": True}
        outs = await self._generate([list(p) for p in prefixes],
                                    [dict(one) for _ in prefixes], top_logprobs=k)
        result = []
        for o in outs:
            meta = o["meta_info"]
            self.last_meta = meta
            tops = (meta.get("output_top_logprobs") or [[]])[0] or []
            result.append([(int(token), float(lp)) for lp, token, *_ in tops])
        return result

    async def rollout(self, prefixes: Sequence[Sequence[int]]
                      ) -> list[tuple[tuple[int, ...], bool]]:
        greedy = {**self.base, "n": 1, "custom_params": dict(self.custom), "temperature": 0.0,
                  "stop": self.client_stops or None}
        outs = await self._generate(
            [list(p) for p in prefixes],
            [{**greedy, "max_new_tokens": self.budget - len(p)} for p in prefixes])
        result = []
        for prefix, o in zip(prefixes, outs, strict=True):
            ids = tuple(prefix) + tuple(o.get("output_ids") or ())
            meta = o["meta_info"]
            self.rollout_metas[ids] = meta
            result.append((ids, finish_type(meta) == "stop"))
        return result

    async def run_tests(self, token_ids: Sequence[int],
                        tests: Sequence[tuple[str, str]]) -> list[bool]:
        runner = tool_loop.tool_instances(self.config)[SANDBOX_TOOL]
        code = program_of(self.tokenizer.decode(list(token_ids), skip_special_tokens=True))

        async def one(stdin: str, expected: str) -> bool:
            async with tool_loop.blocking_slots():
                result = await asyncio.to_thread(runner.run_program, code, stdin)
            self.executions += 1
            self.execution_ms += result.wall_ms
            return result.ok and same_output(result.stdout, expected)

        return list(await asyncio.gather(*(one(i, o) for i, o in tests)))

    async def score_prefixes(self, prefixes: Sequence[Sequence[int]]) -> list[float]:
        return (await self._score_texts(
            [self.tokenizer.decode(list(p), skip_special_tokens=True) for p in prefixes])).rewards

    async def _generate(self, continuations: list[list[int]], sampling: list[dict[str, Any]],
                        top_logprobs: int = 0) -> list[dict[str, Any]]:
        """One batched inner request: ``prompt + continuation`` per item, decoded under
        ``ilsi.decoding``; its policy tokens are added to the search's cost."""
        inputs = [self.prompt_ids + c for c in continuations]
        inner = copy.copy(self.obj)
        inner.text = None
        inner.input_ids = inputs[0] if len(inputs) == 1 else inputs
        inner.sampling_params = sampling[0] if len(inputs) == 1 else sampling
        inner.rid = None
        inner.stream = False
        inner.return_logprob = top_logprobs > 0
        if top_logprobs:
            inner.top_logprobs_num = top_logprobs
            inner.logprob_start_len = -1
        self.prepare(inner, self.plan.decoding)
        self.calls += 1
        out = await self.original(self.tokenizer_manager, inner, self.request).__anext__()
        outs = out if isinstance(out, list) else [out]
        for o in outs:
            meta = o["meta_info"]
            self.completion_tokens += int(meta.get("completion_tokens", 0))
            self.prompt_tokens_computed += (int(meta.get("prompt_tokens", 0))
                                            - int(meta.get("cached_tokens", 0) or 0))
        return outs

    async def _score(self, solutions: list[list[str]]) -> reward_service.Rewards:
        """The request's reward model on ``solutions`` (step lists), counted in the cost."""
        scored = await reward_service.rewards(self.config, self.plan.params, self.prompt_text,
                                              solutions)
        self.reward_calls += 1
        self.reward_tokens += scored.tokens
        self.reward_cached_tokens += scored.cached_tokens
        self.reward_ms += scored.ms
        return scored

    async def _score_texts(self, texts: list[str]) -> reward_service.Rewards:
        """:meth:`_score` on texts cut into the reward model's own steps."""
        return await self._score([reward_service.steps_of(self.config, self.plan.params, t)
                                  for t in texts])

    def leaf(self, token_ids: Sequence[int], finished: bool, reward: float) -> Node:
        node = Node(id=len(self.nodes), parent=0, depth=1,
                    steps=(self.tokenizer.decode(list(token_ids), skip_special_tokens=True),),
                    token_ids=tuple(token_ids), finished=finished, reward=reward)
        self.nodes.append(node)
        meta = self.rollout_metas.get(tuple(token_ids), self.last_meta)
        self.metas[node.id] = {k: v for k, v in meta.items() if k not in LOGPROB_KEYS}
        ended_by = next((t for t in token_ids[-1:] if t in self.eos_token_ids), None)
        self.metas[node.id]["finish_reason"] = (
            {"type": "stop", "matched": ended_by} if ended_by is not None
            else {"type": "length", "length": len(token_ids)})
        return node

    def path(self, node: Node) -> list[int]:
        ids = []
        current: Node | None = node
        while current is not None and current.id != 0:
            ids.append(current.id)
            current = self.nodes[current.parent] if current.parent is not None else None
        return ids[::-1]


def _eos_token_ids(tokenizer_manager: Any, sampling: dict[str, Any]) -> frozenset[int]:
    """The tokens that end a solution: the model's end-of-sequence ids and the
    request's ``stop_token_ids`` (none under ``ignore_eos``)."""
    ids = set(sampling.get("stop_token_ids") or ())
    if sampling.get("ignore_eos"):
        return frozenset(ids)
    eos = getattr(getattr(tokenizer_manager, "tokenizer", None), "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    model_eos = getattr(getattr(tokenizer_manager, "model_config", None), "hf_eos_token_id", None)
    ids |= set(model_eos or ())
    return frozenset(ids)


def _without_client_stop(text: str, meta: dict[str, Any], delimiter: str) -> str:
    """A step's text, minus a client's stop string it ended on (SGLang trims those
    from plain requests; the step delimiter stays)."""
    reason = meta.get("finish_reason")
    matched = reason.get("matched") if isinstance(reason, dict) else None
    if isinstance(matched, str) and matched != delimiter and text.endswith(matched):
        return text[:-len(matched)]
    return text


def _reward(value: float) -> float | None:
    """A reward as reported: exactly the value the search compared (None for NaN)."""
    return None if math.isnan(value) else value


async def run(original: Callable[..., Any], tokenizer_manager: Any, obj: Any, request: Any,
              request_plan: Plan, prepare: Callable[[Any, Plan], None], config: Any
              ) -> AsyncIterator[dict]:
    """Run the search and yield the chosen solution once."""
    plan = request_plan.search
    start = time.perf_counter()
    if not isinstance(obj.rid, str):  # the response's id (the inner requests get their own)
        obj.rid = uuid.uuid4().hex
    tree = EngineTree(original, tokenizer_manager, obj, request, plan, prepare, config)
    result = await plan.method.search(tree, plan.params)
    chosen = result.chosen
    if chosen.id == 0:
        raise RuntimeError(f"search {plan.method.name!r} chose no node")
    meta = dict(tree.metas[chosen.id])
    inner_report = meta.pop("ilsi", None)
    for key in LOGPROB_KEYS:
        meta.pop(key, None)
    meta["prompt_tokens"] = len(tree.prompt_ids)
    meta["completion_tokens"] = len(chosen.token_ids)
    if not chosen.finished:
        meta["finish_reason"] = {"type": "length", "length": len(chosen.token_ids)}
    meta["ilsi"] = {
        "method": plan.method.name,
        "family": plan.method.family,
        "params": plan.params,
        "source": request_plan.source,
        "why": ("search chosen by the request's model-name suffix"
                if request_plan.source == SOURCE_SUFFIX else
                "search chosen by the request (custom_params.ilsi)"),
        "step_delimiter": tree.delimiter,
        "chosen": chosen.id,
        "chosen_path": tree.path(chosen),
        "reward": _reward(chosen.reward),
        "step_scores": list(chosen.step_scores),
        "leaves": [leaf.id for leaf in result.leaves],
        "info": result.info,
        "nodes": [{"id": x.id, "parent": x.parent, "depth": x.depth, "step": x.steps[-1],
                   "reward": _reward(x.reward), "finished": x.finished,
                   "tokens": len(x.token_ids)}
                  for x in tree.nodes[1:]],
        "decoding": inner_report,
        "cost": {
            "nodes": len(tree.nodes) - 1,
            "samples": len(tree.nodes) - 1,
            # every policy token generated beside the answer's own (as selection reports)
            "extra_forward_tokens": max(tree.completion_tokens - len(chosen.token_ids), 0),
            "generate_calls": tree.calls,
            "policy_completion_tokens": tree.completion_tokens,
            "prompt_tokens_computed": tree.prompt_tokens_computed,
            "reward_calls": tree.reward_calls,
            "reward_model_tokens": tree.reward_tokens,
            # of those, the ones the reward model's KV cache held (not computed again)
            "reward_model_cached_tokens": tree.reward_cached_tokens,
            "reward_ms": round(tree.reward_ms, 3),
            "executions": tree.executions,
            "execution_ms": round(tree.execution_ms, 3),
            "wall_ms": round((time.perf_counter() - start) * 1000.0, 3),
        },
    }
    meta["id"] = obj.rid
    yield {"text": chosen.text, "output_ids": list(chosen.token_ids), "meta_info": meta}
