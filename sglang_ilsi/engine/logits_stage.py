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
from sglang_ilsi.methods.base import LogitsMethod, RowContext
from sglang_ilsi.request_spec import ENCODED_KEY, MethodChoice, explain

logger = logging.getLogger(__name__)

STATE_ATTR = "_ilsi_state"
META_KEY = "ilsi"
TRACE_KEY = "ilsi_trace"


class RequestState:
    """One request's method, parameters, token history, state and accounting."""

    __slots__ = ("choice", "method", "ctx", "summary", "trace", "reports", "stage_seconds")

    def __init__(self, choice: MethodChoice, method: type[LogitsMethod], req: Any):
        self.choice = choice
        self.method = method
        sp = req.sampling_params
        self.ctx = RowContext(
            params=choice.params,
            prompt_ids=req.origin_input_ids,
            # Tokens already generated (a retracted request resumes with them).
            output_ids=list(req.output_ids),
            temperature=float(sp.temperature),
            eos_token_ids=tuple(sorted(req.eos_token_ids or ())),
        )
        self.stage_seconds = 0.0
        self.summary: dict[str, Any] = {
            "method": choice.method,
            "family": method.family,
            "params": choice.params,
            "source": choice.source,
            "why": explain(choice),
            "cost": {
                "steps": 0,
                "stage_ms": 0.0,
                "extra_forward_tokens": 0,
                "aux_model_tokens": 0,
                "samples": 1,
            },
            "stats": self.ctx.stats,
        }
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

    def account(self, seconds: float) -> None:
        self.stage_seconds += seconds
        cost = self.summary["cost"]
        cost["steps"] += 1
        cost["stage_ms"] = round(self.stage_seconds * 1000.0, 4)
        self.reports.append(self.summary)


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
        method = registry.get(choice.method)
        if method is None:  # validated on the HTTP side; a plugin file may be missing here
            logger.error("sglang-ilsi: method %r is not registered in the scheduler", choice.method)
            return None
        state = RequestState(choice, method, req)
        setattr(req, STATE_ATTR, state)
    return state


def _in_chunked_prefill(params: dict) -> bool:
    # A request still being prefilled chunk by chunk has its sampled token
    # discarded by SGLang; it is not a decoding step.
    return getattr(params["__req__"], "is_chunked", 0) > 0


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


def apply_methods(logits: torch.Tensor, custom_params: Sequence[Any]) -> torch.Tensor:
    """Apply each row's method; rows without one pass through unchanged."""
    groups: dict[type[LogitsMethod], list[tuple[int, RequestState]]] = {}
    for row, params in enumerate(custom_params):
        state = state_of(params)
        if state is None or _in_chunked_prefill(params):
            continue
        groups.setdefault(state.method, []).append((row, state))
    for method, members in groups.items():
        start = time.perf_counter()
        whole = len(members) == logits.shape[0]  # the common case: one method, all rows
        if whole:
            before = logits.float()
        else:
            index = torch.tensor([row for row, _ in members], device=logits.device)
            before = logits.index_select(0, index).float()
        after = method.apply(before, [s.ctx for _, s in members])
        if whole:
            logits = after.to(logits.dtype)
        else:
            logits.index_copy_(0, index, after.to(logits.dtype))
        per_row = (time.perf_counter() - start) / len(members)
        for i, (_, state) in enumerate(members):
            if state.trace is not None:
                k, t = state.choice.trace_k, state.ctx.temperature
                state.trace.append(
                    {
                        "before": _top(_trace_distribution(before[i], t), k),
                        "after": _top(_trace_distribution(after[i], t), k),
                    }
                )
            state.account(per_row)
    return logits


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
            if state is None or _in_chunked_prefill(params):
                continue
            state.method.on_token(state.ctx, int(token))
            state.ctx.output_ids.append(int(token))


def _by_reference(cls: type) -> str:
    # SGLang's format ({"callable": hex pickle}), but a plain by-reference
    # pickle: dill would serialize the class by value (its code) here.
    return json.dumps({"callable": pickle.dumps(cls, protocol=4).hex()})


PROCESSOR_STR: str = _by_reference(IlsiLogitProcessor)
