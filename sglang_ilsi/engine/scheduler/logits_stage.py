"""The logits stage: batched application of the requested methods inside
SGLang's sampling step.

SGLang groups the rows of requests that carry the same serialized processor
and calls it once per step with those rows (``layers/sampler.py``,
``apply_custom_logit_processor``). Our single processor class,
:class:`IlsiLogitProcessor`, splits its rows by method and calls each
method's batched ``apply`` once. Per-request state (:class:`RequestState`)
lives on SGLang's ``Req`` object, so it survives requests joining and leaving
the batch and dies with the request.

After sampling, :func:`record_sampled_tokens` (called from a hook on
``ModelRunner.sample``) appends each row's sampled token to its state, so the
token history a method sees is exact even under the overlap scheduler, where
``req.output_ids`` lags one token behind.

Costs and the optional per-token trace are written to ``req.customized_info``,
which SGLang carries to ``meta_info`` (keys ``ilsi`` and ``ilsi_trace``).
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from collections.abc import Sequence
from typing import Any

import torch
from sglang.srt.sampling.custom_logit_processor import CustomLogitProcessor

from sglang_ilsi import registry
from sglang_ilsi.methods.base import (
    SECOND,
    SECOND_IDS,
    LogitsMethod,
    Requirements,
    RowContext,
    aux_key,
    layer_key,
)
from sglang_ilsi.plan import ENCODED_KEY, MethodChoice, explain

logger = logging.getLogger(__name__)

STATE_ATTR = "_ilsi_state"
META_KEY = "ilsi"
TRACE_KEY = "ilsi_trace"


class RequestState:
    """One request's methods (a chain of one or more), their parameters,
    the shared token history, each method's private state, and accounting."""

    __slots__ = ("choice", "steps", "summary", "trace", "reports", "stage_seconds",
                 "temperature", "output_ids", "requirements", "input_keys", "inputs", "ready",
                 "second", "companion_seconds", "second_ids")

    def __init__(self, choice: MethodChoice, methods: list[type[LogitsMethod]], req: Any):
        self.choice = choice
        self.temperature = float(req.sampling_params.temperature)
        # Tokens already generated (a retracted request resumes with them);
        # one list shared by every method of the chain.
        self.output_ids: list[int] = list(req.output_ids)
        eos = tuple(sorted(req.eos_token_ids or ()))
        limit = getattr(req.sampling_params, "max_new_tokens", None)
        self.steps: list[tuple[type[LogitsMethod], RowContext]] = [
            (method, RowContext(params=params, prompt_ids=req.origin_input_ids,
                                output_ids=self.output_ids, temperature=self.temperature,
                                eos_token_ids=eos, max_new_tokens=limit))
            for method, (_, params) in zip(methods, choice.steps())
        ]
        first = self.steps[0][1]
        self.stage_seconds = 0.0
        self._init_companions(methods, choice)
        self.summary: dict[str, Any] = {
            "method": choice.method,
            "family": methods[0].family,
            "params": _public(choice.params),
            "source": choice.source,
            "why": explain(choice),
            "cost": {
                "steps": 0,
                "stage_ms": 0.0,
                "extra_forward_tokens": 0,
                "aux_model_tokens": 0,
                "samples": 1,
            },
            "stats": first.stats,
        }
        if choice.then:
            self.summary["then"] = [
                {"method": m.name, "family": m.family, "params": _public(ctx.params),
                 "stats": ctx.stats}
                for m, ctx in self.steps[1:]
            ]
        self.trace: list[dict[str, Any]] | None = [] if choice.trace_k > 0 else None
        # SGLang slices customized_info values per output token and streams
        # each slice with its tokens; one reference to the (live) summary per
        # token means every chunk, streamed or final, carries the report as of
        # its last token. The HTTP side keeps the last one.
        self.reports: list[dict[str, Any]] = []
        info = req.customized_info if req.customized_info is not None else {}
        info[META_KEY] = self.reports
        if self.trace is not None:
            info[TRACE_KEY] = self.trace
        req.customized_info = info

    def _init_companions(self, methods: list[type[LogitsMethod]], choice: MethodChoice) -> None:
        """What this request needs beyond its logits (see :mod:`.companions`)."""
        needs = Requirements()
        self.second_ids: list[int] = []
        for method, (_, params) in zip(methods, choice.steps()):
            needs = needs.merged(method.requirements(params))
            self.second_ids = self.second_ids or list(params.get(SECOND_IDS, ()))
        self.requirements = needs
        self.input_keys = frozenset(
            [aux_key(n) for n in needs.aux_models] + [layer_key(i) for i in needs.layers]
            + ([SECOND] if needs.second_context else []))
        self.inputs: dict[str, torch.Tensor] = {}
        for _, ctx in self.steps:
            ctx.inputs = self.inputs
        self.ready = not needs
        self.second: Any = None  # a companions.SecondSequence while one is open
        self.companion_seconds = 0.0

    def account(self, seconds: float) -> None:
        self.stage_seconds += seconds
        cost = self.summary["cost"]
        cost["steps"] += 1
        cost["stage_ms"] = round(self.stage_seconds * 1000.0, 4)
        if self.requirements:
            cost["extra_distributions_ms"] = round(self.companion_seconds * 1000.0, 4)
        self.reports.append(self.summary)

    def skip(self) -> None:
        """A step where this request's extra distributions were not available:
        its logits pass through unchanged and the report counts the step."""
        cost = self.summary["cost"]
        cost["steps_without_method"] = cost.get("steps_without_method", 0) + 1
        self.reports.append(self.summary)

    def record(self, token: int) -> None:
        for method, ctx in self.steps:
            method.on_token(ctx, token)
        self.output_ids.append(token)


def _public(params: dict[str, Any]) -> dict[str, Any]:
    """Params as reported: without server-filled internals (``__second_ids``)."""
    return {k: v for k, v in params.items() if not k.startswith("__")}


def _request(params: Any) -> Any | None:
    if not isinstance(params, dict) or ENCODED_KEY not in params:
        return None
    return params.get("__req__")


def state_of(params: Any, create: bool = True) -> RequestState | None:
    """The state of the request behind one row's ``custom_params``."""
    req = _request(params)
    if req is None:
        return None
    state = getattr(req, STATE_ATTR, None)
    if state is None and create:
        choice = MethodChoice.decode(params[ENCODED_KEY])
        methods = [registry.get(name) for name, _ in choice.steps()]
        if None in methods:  # validated on the HTTP side; a plugin file may be missing here
            logger.error("sglang-ilsi: a method of %r is not registered in the scheduler",
                         [name for name, _ in choice.steps()])
            return None
        state = RequestState(choice, methods, req)
        setattr(req, STATE_ATTR, state)
    return state


def in_chunked_prefill(params: dict) -> bool:
    """Whether this forward only prefills a middle chunk of the request's prompt:
    SGLang discards the token it samples, so it is not a decoding step.

    This round extends the request up to ``extend_end``; a middle chunk stops
    short of the prompt. (SGLang's own ``inflight_middle_chunks`` counter cannot
    tell: under the overlap scheduler it still counts the previous chunk, whose
    result is processed after this forward.) Checked in ``engine/patches.py``."""
    req = params["__req__"]
    end = getattr(req, "extend_end", None)
    return end is not None and end < len(req.origin_input_ids)


def _top(logprobs: torch.Tensor, k: int) -> list[list[float]]:
    """``[[token_id, logprob], ...]`` of the k most likely tokens; tokens the
    method removed (logprob -inf) are left out."""
    values, ids = logprobs.topk(min(k, logprobs.shape[-1]))
    return [
        [int(i), round(float(v), 6)]
        for i, v in zip(ids.tolist(), values.tolist())
        if v != float("-inf")
    ]


def _trace_distribution(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    t = temperature if temperature > 1e-6 else 1.0
    return torch.log_softmax(logits.float() / t, dim=-1)


def _apply_group(logits: torch.Tensor, method: type[LogitsMethod],
                 rows: list[int], contexts: list[RowContext]) -> torch.Tensor:
    """``method.apply`` on the given rows of ``logits`` (float32 in and out)."""
    if len(rows) == logits.shape[0]:  # the common case: one method, every row
        return method.apply(logits, contexts)
    index = torch.tensor(rows, device=logits.device)
    logits.index_copy_(0, index, method.apply(logits.index_select(0, index), contexts))
    return logits


def apply_methods(logits: torch.Tensor, custom_params: Sequence[Any]) -> torch.Tensor:
    """Apply each row's chain of methods; rows without one pass through unchanged.

    At each depth of the chains, rows whose method at that depth is the same
    are processed together in one batched ``apply``."""
    members: list[tuple[int, RequestState]] = []
    for row, params in enumerate(custom_params):
        state = state_of(params)
        if state is not None and not in_chunked_prefill(params):
            if state.ready:
                members.append((row, state))
            else:
                state.skip()
    if not members:
        return logits
    start = time.perf_counter()
    traced = [(row, state) for row, state in members if state.trace is not None]
    before = {row: logits[row].float().clone() for row, _ in traced}
    work = logits.float()
    depth = 0
    while True:
        groups: dict[type[LogitsMethod], tuple[list[int], list[RowContext]]] = {}
        for row, state in members:
            if depth < len(state.steps):
                method, ctx = state.steps[depth]
                rows, contexts = groups.setdefault(method, ([], []))
                rows.append(row)
                contexts.append(ctx)
        if not groups:
            break
        for method, (rows, contexts) in groups.items():
            work = _apply_group(work, method, rows, contexts)
        depth += 1
    for row, state in traced:
        k, t = state.choice.trace_k, state.temperature
        state.trace.append({
            "before": _top(_trace_distribution(before[row], t), k),
            "after": _top(_trace_distribution(work[row], t), k),
        })
    per_row = (time.perf_counter() - start) / len(members)
    for _, state in members:
        state.account(per_row)
    return work if work.dtype == logits.dtype else work.to(logits.dtype)


class IlsiLogitProcessor(CustomLogitProcessor):
    """The one processor SGLang sees for every sglang-ilsi request.

    Requests never send code: the plugin attaches this class (by reference)
    on the server side after validating the request's named method.
    """

    def __call__(
        self, logits: torch.Tensor, custom_param_list: list[dict[str, Any]] | None = None
    ) -> torch.Tensor:
        if not custom_param_list:
            return logits
        return apply_methods(logits, custom_param_list)


def record_sampled_tokens(sampling_info: Any, next_token_ids: torch.Tensor) -> None:
    """Append each sglang-ilsi row's sampled token to its request state."""
    entries = getattr(sampling_info, "custom_logit_processor", None)
    if not entries or next_token_ids is None:
        return
    for entry in entries.values():
        if not isinstance(entry.processor, IlsiLogitProcessor):
            continue
        tokens = next_token_ids.index_select(0, entry.indices.to(next_token_ids.device)).tolist()
        for row, token in zip(entry.rows, tokens):
            params = sampling_info.custom_params[row]
            state = state_of(params, create=False)
            if state is None or in_chunked_prefill(params):
                continue
            state.record(int(token))


def _by_reference(cls: type) -> str:
    # SGLang's format ({"callable": hex pickle}), but a plain by-reference
    # pickle: dill would serialize the class by value (its code) here.
    return json.dumps({"callable": pickle.dumps(cls, protocol=4).hex()})


PROCESSOR_STR: str = _by_reference(IlsiLogitProcessor)
