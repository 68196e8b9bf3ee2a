"""The reward models of this server, as the HTTP-side loops use them.

A model loaded with ``--ilsi-reward-model`` runs in this process (the one that
serves HTTP and runs the selection and search loops): :class:`LocalReward`
queues every scoring job and one worker thread runs them batch by batch, so
concurrent requests share a forward pass; the model keeps the prefixes it has
read in its own bounded KV cache (:mod:`sglang_ilsi.reward_cache`), so a
request that reads a growing text (RAD, ARGS) computes only the new tokens. A
model named with ``--ilsi-reward-url`` lives on a second sglang-ilsi server:
:class:`RemoteReward` posts the same jobs to its ``POST /ilsi/reward``
(:mod:`routes`), whose own cache then serves them.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sglang_ilsi.config import IlsiConfig
from sglang_ilsi.errors import IlsiRequestError
from sglang_ilsi.reward import (
    REWARD_PATH,
    RewardInfo,
    RewardModel,
    RewardModelError,
    Scored,
    read_info,
    remote_info,
    reward_of,
    split_steps,
)

MAX_BATCH = 256  # solutions in one forward pass
REMOTE_TIMEOUT_S = 300.0


@dataclass
class _Job:
    prompts: list[str]
    solutions: list[list[str]]
    done: asyncio.Future = field(repr=False)


class LocalReward:
    """A co-resident reward model; jobs from every request are batched."""

    def __init__(self, info: RewardInfo, cache_tokens: int):
        self.info = info
        self.cache_tokens = cache_tokens
        self._model: RewardModel | None = None
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ilsi-reward")
        self.forward_passes = 0

    def model(self) -> RewardModel:
        if self._model is None:
            self._model = RewardModel(self.info, cache_tokens=self.cache_tokens)
        return self._model

    def describe(self) -> dict[str, Any]:
        out = {**self.info.to_dict(), "where": "this server"}
        if self._model is not None:
            out.update(parameters=self._model.parameters, bytes=self._model.bytes,
                       kv_cache=(self._model.cache.describe() if self._model.cache else None))
        out["forward_passes"] = self.forward_passes
        return out

    async def score(self, prompts: Sequence[str], solutions: Sequence[Sequence[str]]
                    ) -> list[Scored]:
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        job = _Job(list(prompts), [list(s) for s in solutions],
                   asyncio.get_running_loop().create_future())
        await self._queue.put(job)
        return await job.done

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            size = len(jobs[0].solutions)
            while not self._queue.empty() and size < MAX_BATCH:
                jobs.append(self._queue.get_nowait())
                size += len(jobs[-1].solutions)
            prompts = [p for j in jobs for p in j.prompts]
            solutions = [s for j in jobs for s in j.solutions]
            job_of = [n for n, j in enumerate(jobs) for _ in j.solutions]
            try:
                scored = await loop.run_in_executor(self._executor, self._forward, prompts,
                                                    solutions, job_of)
            except Exception as e:  # noqa: BLE001 (each waiting request gets the error)
                for j in jobs:
                    if not j.done.done():
                        j.done.set_exception(e)
                continue
            start = 0
            for j in jobs:
                if not j.done.done():
                    j.done.set_result(scored[start:start + len(j.solutions)])
                start += len(j.solutions)

    def _forward(self, prompts: list[str], solutions: list[list[str]], job_of: list[int]
                 ) -> list[Scored]:
        self.forward_passes += 1
        try:
            return self.model().score(prompts, solutions, job_of)
        except RewardModelError as e:
            raise IlsiRequestError("reward_model", str(e)) from None


class RemoteReward:
    """A reward model served by a second sglang-ilsi server (``--ilsi-reward-url``)."""

    def __init__(self, name: str, url: str, info: RewardInfo):
        self.name, self.url, self.info = name, url.rstrip("/"), info

    def describe(self) -> dict[str, Any]:
        return {**self.info.to_dict(), "where": self.url}

    async def score(self, prompts: Sequence[str], solutions: Sequence[Sequence[str]]
                    ) -> list[Scored]:
        body = {"reward_model": self.name, "prompts": list(prompts),
                "solutions": [list(s) for s in solutions]}
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, _post, self.url + REWARD_PATH, body)
        cached = data.get("cached") or [0] * len(data["tokens"])
        return [Scored(tuple(float(x) for x in s), int(t), int(c))
                for s, t, c in zip(data["scores"], data["tokens"], cached, strict=True)]


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REMOTE_TIMEOUT_S) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"reward server {url}: HTTP {e.code}: {e.read()[:500]!r}") from None


_SERVICES: dict[str, LocalReward | RemoteReward] = {}


def service(name: str, config: IlsiConfig) -> LocalReward | RemoteReward:
    """The reward model ``name`` of this server (created on first use)."""
    found = _SERVICES.get(name)
    if found is not None:
        return found
    if name in config.reward_models:
        found = LocalReward(read_info(name, config.reward_models[name]),
                            config.reward_cache_tokens)
    elif name in config.reward_urls:
        found = RemoteReward(name, config.reward_urls[name],
                             remote_info(name, config.reward_urls[name]))
    else:
        raise IlsiRequestError("reward_model", f"no reward model named {name!r} on this server")
    _SERVICES[name] = found
    return found


@dataclass(frozen=True)
class Rewards:
    """Rewards of several solutions to one prompt, with what scoring them cost:
    the tokens the reward model read, how many of those its KV cache held, the time."""

    rewards: list[float]
    step_scores: list[tuple[float, ...]]
    tokens: int
    cached_tokens: int
    ms: float


async def rewards(config: IlsiConfig, params: Mapping[str, Any], prompt: str,
                  solutions: Sequence[Sequence[str]]) -> Rewards:
    """Score ``solutions`` (each a list of steps) with the request's reward model
    (``params["reward_model"]``, already resolved by the plan) and fold a process
    model's step scores by ``params["aggregate"]``."""
    start = time.perf_counter()
    scorer = service(params["reward_model"], config)
    # identical solutions (siblings that sampled the same step) are read once and tie exactly
    unique = list(dict.fromkeys(tuple(s) for s in solutions))
    read = await scorer.score([prompt] * len(unique), [list(s) for s in unique])
    by_solution = dict(zip(unique, read, strict=True))
    scored = [by_solution[tuple(s)] for s in solutions]
    how = params.get("aggregate", "last")
    return Rewards([reward_of(s.scores, scorer.info.kind, how) for s in scored],
                   [s.scores for s in scored], sum(s.tokens for s in read),
                   sum(s.cached for s in read),
                   (time.perf_counter() - start) * 1000.0)


def steps_of(config: IlsiConfig, params: Mapping[str, Any], text: str) -> list[str]:
    """A finished solution's text cut into the request's reward model's steps."""
    return split_steps(text, service(params["reward_model"], config).info.step_delimiter)


def load_local(config: IlsiConfig) -> list[str]:
    """Load every ``--ilsi-reward-model`` now (at launch, not on first use); one
    line per model saying the memory it takes: weights, and its KV cache's capacity.
    A folder whose weights do not load stops the launch with the model's name."""
    lines = []
    for name in sorted(config.reward_models):
        scorer = service(name, config)
        assert isinstance(scorer, LocalReward)
        try:
            model = scorer.model()
        except Exception as e:  # noqa: BLE001 (any loader error stops the launch, named)
            raise SystemExit(f"sglang-ilsi: --ilsi-reward-model {name}: cannot load "
                             f"{scorer.info.path}: {type(e).__name__}: {e}") from None
        cache = model.cache.describe() if model.cache else None
        lines.append(f"sglang-ilsi: reward model {name!r} ({scorer.info.kind}) loaded from "
                     f"{scorer.info.path}: {model.parameters:,} parameters, "
                     f"{model.bytes / 2**20:.1f} MiB of weights"
                     + (f"; KV cache up to {cache['capacity_tokens']} tokens, "
                        f"{cache['capacity_bytes'] / 2**20:.1f} MiB" if cache else
                        "; no KV cache"))
    return lines


def listing(config: IlsiConfig) -> dict[str, Any]:
    """``GET /ilsi/reward``: the reward models this server can use."""
    out = []
    for name in sorted({**config.reward_models, **config.reward_urls}):
        try:
            out.append(service(name, config).describe())
        except RewardModelError as e:
            out.append({"name": name, "error": str(e)})
    return {"reward_models": out}


async def score_for_client(config: IlsiConfig, body: Any) -> dict[str, Any]:
    """``POST /ilsi/reward``: ``{"reward_model", "prompts", "solutions"}`` (each
    solution a list of steps) → ``{"scores", "tokens", "cached"}`` (per solution: its
    scores, the tokens read, how many came from the KV cache); a local model only."""
    if not isinstance(body, dict):
        raise IlsiRequestError("", "expected a JSON object")
    name = body.get("reward_model")
    if not isinstance(name, str) or name not in config.reward_models:
        raise IlsiRequestError("reward_model", f"no local reward model named {name!r} on this "
                               f"server (loaded: {sorted(config.reward_models) or 'none'})")
    prompts, solutions = body.get("prompts"), body.get("solutions")
    if not (isinstance(prompts, list) and all(isinstance(p, str) for p in prompts)):
        raise IlsiRequestError("prompts", "expected a list of strings")
    if not (isinstance(solutions, list) and len(solutions) == len(prompts) and all(
            isinstance(s, list) and all(isinstance(x, str) for x in s) for s in solutions)):
        raise IlsiRequestError("solutions", "expected one list of step strings per prompt")
    if len(prompts) > MAX_BATCH:
        raise IlsiRequestError("prompts", f"at most {MAX_BATCH} solutions per call")
    scored = await service(name, config).score(prompts, solutions)
    return {"scores": [list(s.scores) for s in scored], "tokens": [s.tokens for s in scored],
            "cached": [s.cached for s in scored]}
