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

Ready for GPU step times (issue #17): the grouping of the rows and each group's
per-row tensors (parameter columns, temperatures, row indices; see
:class:`~sglang_ilsi.methods.base.Rows`) are kept in a :class:`_Layout` while the
batch's requests stay the same (SGLang hands the same ``custom_params`` dict per
request at every step), and rebuilt only on admission, finish or reordering. The
stage itself reads nothing back from the device: the methods' stats that live on
the device are deferred and read with the step's sampled tokens, in the one
transfer :func:`record_sampled_tokens` makes anyway (``methods/common.py:
defer_stat``). Host reads that remain are some methods' own (those whose next step
depends on a value: mirostat's μ, look-back's matches, dola's layer, ...; listed by
``stage_timing.device_read`` and ``scripts/gpu_check.py``) and the opt-in trace.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

try:
    from sglang.srt.sampling.custom_logit_processor import CustomLogitProcessor
except ImportError:  # no SGLang (scripts/gpu_check.py on a bare machine): the stage alone
    CustomLogitProcessor = object  # type: ignore[assignment,misc]

from sglang_ilsi import registry
from sglang_ilsi.methods.base import (
    SECOND,
    SECOND_IDS,
    LogitsMethod,
    Requirements,
    RowContext,
    Rows,
    aux_key,
    layer_key,
    on_device,
)
from sglang_ilsi.methods.common import add_stat, defer_stat, flush_stats
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
                 "second", "companion_seconds", "second_ids", "cost", "companions", "forced")

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
        self.cost: dict[str, Any] = self.summary["cost"]
        if choice.then:
            self.summary["then"] = [
                {"method": m.name, "family": m.family, "params": _public(ctx.params),
                 "stats": ctx.stats}
                for m, ctx in self.steps[1:]
            ]
        self.trace: list[dict[str, Any]] | None = [] if choice.trace_k > 0 else None
        self.forced: RowContext | None = None
        if choice.forced:
            # its stats are the report: tokens, and the summed log-probabilities
            report = {"tokens": 0, "logprob": 0.0, "model_logprob": 0.0,
                      "impossible_tokens": 0.0}
            self.summary["forced"] = report
            self.forced = RowContext(params={}, prompt_ids=(), output_ids=self.output_ids,
                                     temperature=self.temperature, stats=report)
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
        self.companions = bool(needs)
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
        cost = self.cost
        cost["steps"] += 1
        # ms to 4 decimals (round(x, 4) costs several times more, per row and step)
        cost["stage_ms"] = int(self.stage_seconds * 1e7 + 0.5) / 1e4
        if self.companions:
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


def _force(work: torch.Tensor, rows: list[tuple[int, RequestState]],
           before: dict[int, torch.Tensor] | None) -> None:
    """Teacher forcing (``ilsi.forced_continuation``): each row's next token is the
    continuation's next one. Its log-probability under the distribution the chain
    leaves (what the row would sample from: softmax(z'/T), T = 1 under greedy, as the
    trace) and under the model's own logits is added to the report, read back later
    with the step's sampled tokens; then the row's logits keep that token alone. A
    row past the continuation's end (the overlap scheduler's extra step after the
    last token) is left alone. Without ``before`` (rows whose extra distributions
    failed this step) the token is forced and counted as ``unscored_tokens``."""
    picked = [(row, state, state.forced.output_ids) for row, state in rows]
    picked = [(row, state, state.choice.forced[len(done)]) for row, state, done in picked
              if len(done) < len(state.choice.forced)]
    if not picked:
        return
    device = work.device
    index = on_device([row for row, _, _ in picked], torch.int64, device)
    tokens = on_device([token for _, _, token in picked], torch.int64, device)[:, None]
    contexts = [state.forced for _, state, _ in picked]
    if before is None:
        add_stat(contexts, "unscored_tokens", [1.0] * len(contexts))
    else:
        _score_forced(work, index, tokens, picked, contexts, before)
    work.index_fill_(0, index, float("-inf"))
    work[index, tokens[:, 0]] = 0.0


def _score_forced(work: torch.Tensor, index: torch.Tensor, tokens: torch.Tensor,
                  picked: list[tuple[int, RequestState, int]], contexts: list[RowContext],
                  before: dict[int, torch.Tensor]) -> None:
    device = work.device
    temperature = on_device([s.temperature if s.temperature > 1e-6 else 1.0
                             for _, s, _ in picked], torch.float32, device)[:, None]
    chosen = torch.log_softmax(work.index_select(0, index) / temperature, -1).gather(1, tokens)
    model = torch.log_softmax(torch.stack([before[row] for row, _, _ in picked]).to(device)
                              / temperature, -1).gather(1, tokens)
    possible = torch.isfinite(chosen)
    defer_stat(contexts, "logprob", torch.where(possible, chosen, torch.zeros_like(chosen)))
    defer_stat(contexts, "model_logprob", model)
    defer_stat(contexts, "impossible_tokens", (~possible).float())
    for ctx in contexts:
        ctx.stats["tokens"] += 1


@dataclass
class _Group:
    """The rows (of the stage's batch) whose chain has ``method`` at one depth."""

    method: type[LogitsMethod]
    rows: list[int]
    contexts: Rows
    index: torch.Tensor | None = None  # ``rows`` on the logits' device (kept)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """``method.apply`` on the group's rows of ``logits`` (float32 in and out)."""
        if len(self.rows) == logits.shape[0]:  # the common case: one method, every row
            return self.method.apply(logits, self.contexts)
        if self.index is None or self.index.device != logits.device:
            self.index = on_device(self.rows, torch.int64, logits.device)
        index = self.index
        logits.index_copy_(0, index, self.method.apply(logits.index_select(0, index),
                                                       self.contexts))
        return logits


@dataclass
class _Layout:
    """How one batch composition is processed: its members (rows with a state) and
    their groups, depth by depth. Built when the rows' requests change (admission,
    finish, reordering) and reused at every step in between, with the per-row
    tensors its groups' :class:`Rows` keep. It holds the rows' ``custom_params``
    (so their ``id``, the cache key, cannot be reused while it lives)."""

    params: list[Any]
    members: list[tuple[int, RequestState]]
    levels: list[list[_Group]]
    # Rows to check at each step: every member's request (a middle prefill chunk
    # is not a decoding step), and the states that wait for extra distributions.
    reqs: list[tuple[Any, int]] = field(default_factory=list)
    waiting: list[RequestState] = field(default_factory=list)
    # members whose model logits are kept for the report: traced, and forced ones
    traced: list[tuple[int, RequestState]] = field(default_factory=list)
    forced: list[tuple[int, RequestState]] = field(default_factory=list)
    # forced rows skipped this step (extra distributions missing): forced, not scored
    unscored: list[tuple[int, RequestState]] = field(default_factory=list)

    @classmethod
    def build(cls, custom_params: Sequence[Any], members: list[tuple[int, RequestState]]
              ) -> _Layout:
        levels: list[list[_Group]] = []
        depth = 0
        while True:
            groups: dict[type[LogitsMethod], _Group] = {}
            for row, state in members:
                if depth < len(state.steps):
                    method, ctx = state.steps[depth]
                    group = groups.get(method)
                    if group is None:
                        group = groups[method] = _Group(method, [], Rows())
                    group.rows.append(row)
                    group.contexts.append(ctx)
            if not groups:
                break
            levels.append(list(groups.values()))
            depth += 1
        reqs = [(custom_params[row]["__req__"], len(custom_params[row]["__req__"].origin_input_ids))
                for row, _ in members]
        waiting = [state for _, state in members if state.requirements]
        traced = [(row, state) for row, state in members if state.trace is not None]
        forced = [(row, state) for row, state in members if state.forced is not None]
        return cls(list(custom_params), members, levels, reqs, waiting, traced, forced)

    def intact(self) -> bool:
        """Whether every member takes part in this step as laid out."""
        for req, prompt in self.reqs:
            end = getattr(req, "extend_end", None)
            if end is not None and end < prompt:
                return False
        return all(state.ready for state in self.waiting)


class _Layouts:
    """The last few layouts by their rows' ``custom_params`` identities (SGLang hands
    the same dict per request at every step; the list around them is new each time)."""

    SIZE = 4

    def __init__(self) -> None:
        self._by_key: dict[tuple[int, ...], _Layout] = {}

    def get(self, custom_params: Sequence[Any]) -> _Layout | None:
        key = tuple(map(id, custom_params))
        layout = self._by_key.get(key)
        if layout is None:
            members = _members(custom_params)
            if members is None:
                return None
            layout = _Layout.build(custom_params, members)
            if len(self._by_key) >= self.SIZE:
                self._by_key.pop(next(iter(self._by_key)))
            self._by_key[key] = layout
        return layout

    def clear(self) -> None:
        self._by_key.clear()


def _members(custom_params: Sequence[Any]) -> list[tuple[int, RequestState]] | None:
    """Every row with a request state (None if no row has one)."""
    members = []
    for row, params in enumerate(custom_params):
        state = state_of(params)
        if state is not None:
            members.append((row, state))
    return members or None


_layouts = _Layouts()


def _step_layout(custom_params: Sequence[Any]) -> _Layout | None:
    """This step's layout: the kept one when every member takes part (the usual
    decoding step); otherwise one for this step only, without the rows in a middle
    prefill chunk or still waiting for their extra distributions (counted as
    skipped)."""
    layout = _layouts.get(custom_params)
    if layout is None or layout.intact():
        return layout
    members, unscored = [], []
    for row, state in layout.members:
        if in_chunked_prefill(custom_params[row]):
            continue
        if state.ready:
            members.append((row, state))
        else:
            state.skip()
            if state.forced is not None:
                unscored.append((row, state))
    if not members and not unscored:
        return None
    step = _Layout.build(custom_params, members)
    step.unscored = unscored
    return step


def apply_methods(logits: torch.Tensor, custom_params: Sequence[Any]) -> torch.Tensor:
    """Apply each row's chain of methods; rows without one pass through unchanged.

    At each depth of the chains, rows whose method at that depth is the same
    are processed together in one batched ``apply``. The grouping and the
    groups' per-row tensors are kept while the batch's requests stay the same."""
    flush_stats()
    layout = _step_layout(custom_params)
    if layout is None:
        return logits
    start = time.perf_counter()
    members = layout.members
    before = {row: logits[row].float().clone() for row, _ in layout.traced + layout.forced}
    work = logits.float()
    for groups in layout.levels:
        for group in groups:
            work = group.apply(work)
    for row, state in layout.traced:
        k, t = state.choice.trace_k, state.temperature
        state.trace.append({
            "before": _top(_trace_distribution(before[row], t), k),
            "after": _top(_trace_distribution(work[row], t), k),
        })
    if layout.forced:
        _force(work, layout.forced, before)
    if layout.unscored:
        _force(work, layout.unscored, None)
    per_row = (time.perf_counter() - start) / max(len(members), 1)
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
        flush_stats()
        return
    rows: list[int] = []
    picked: list[torch.Tensor] = []
    for entry in entries.values():
        if isinstance(entry.processor, IlsiLogitProcessor):
            rows.extend(entry.rows)
            picked.append(next_token_ids.index_select(
                0, entry.indices.to(next_token_ids.device)))
    if not picked:
        flush_stats()
        return
    record_tokens(sampling_info.custom_params, rows, torch.cat(picked))


def record_tokens(custom_params: Sequence[Any], rows: Sequence[int],
                  tokens: torch.Tensor) -> None:
    """Append ``tokens[k]`` to the state of row ``rows[k]``. The tokens are read back
    in one transfer together with the step's deferred method stats."""
    values = flush_stats(tokens)
    for row, token in zip(rows, values, strict=True):
        params = custom_params[row]
        state = state_of(params, create=False)
        if state is None or in_chunked_prefill(params):
            continue
        state.record(int(token))


def _by_reference(cls: type) -> str:
    # SGLang's format ({"callable": hex pickle}), but a plain by-reference
    # pickle: dill would serialize the class by value (its code) here.
    return json.dumps({"callable": pickle.dumps(cls, protocol=4).hex()})


PROCESSOR_STR: str = _by_reference(IlsiLogitProcessor)
