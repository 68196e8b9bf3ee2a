"""Prompting programs inside one request (kind ``program``).

A request whose ``ilsi.method`` is a prompting program (``zero_shot_cot``,
``cot``, ``echo_prompt``, ``urial``, ``generation_exploitation``; see
:mod:`sglang_ilsi.methods.prompting`) is run here, in the tokenizer manager's
process: the program asks for generations through :class:`EngineContext`,
each an ordinary SGLang sub-request (non-streaming) on the client's prompt
wrapped as ``prefix + prompt + suffix``, decoded under the request's own
sampling parameters and ``ilsi.decoding`` (a logits method); several calls
asked for at once go as one batched request. The client receives one output,
the program's text, like a normal response; ``meta_info.ilsi`` lists every
step (role, the suffix appended, the text, its tokens) and the whole cost, and
the usage counts (``completion_tokens``, ``prompt_tokens``) are the program's
total. A streaming request receives the text as one chunk when it is done.

Prompts arrive as text (``/generate``, completions) or as token ids (chat
requests, after the chat template): the pieces are then encoded and put
around the ids (a leading BOS stays first). For chat requests the program's
in-context turns were put into the messages before the chat template
(:func:`add_chat_messages`, called by the OpenAI hook in ``api.py``).
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from sglang_ilsi.engine.http.samples import check_one_text_prompt, finish_type
from sglang_ilsi.methods.prompting.base import Call, Generated, Prompt
from sglang_ilsi.plan import SOURCE_SUFFIX, Plan, clients_own

DEFAULT_MAX_NEW_TOKENS = 128  # SGLang's default when a request sets none
TAIL_CHARS = 32
LOGPROB_KEYS = ("output_token_logprobs", "input_token_logprobs", "output_top_logprobs",
                "input_top_logprobs", "output_token_ids_logprobs", "input_token_ids_logprobs")


def check_request(obj: Any) -> None:
    """What a program asks of the request's shape (its ilsi object is valid)."""
    check_one_text_prompt(obj, "a prompting program")


class EngineContext:
    """The engine as a program sees it (:class:`~sglang_ilsi.methods.prompting.base.Context`):
    every call becomes an inner SGLang request; steps and costs are recorded."""

    def __init__(self, original: Callable[..., Any], tokenizer_manager: Any, obj: Any,
                 request: Any, decoding: Plan, prepare: Callable[[Any, Plan], None]):
        self.original, self.tokenizer_manager, self.obj = original, tokenizer_manager, obj
        self.request, self.decoding, self.prepare = request, decoding, prepare
        self.tokenizer = getattr(tokenizer_manager, "tokenizer", None)
        self.base = dict(obj.sampling_params or {})
        self.custom = clients_own(self.base.get("custom_params"))
        stops = self.base.get("stop") or []
        self.stops = [stops] if isinstance(stops, str) else list(stops)
        self.steps: list[dict[str, Any]] = []
        self.metas: list[dict[str, Any]] = []
        self.requests = 0
        self.last: dict[str, Any] | None = None  # the latest generation's raw output

    def prompt(self, chat: bool) -> Prompt:
        if self.obj.text is not None:
            tail = self.obj.text[-TAIL_CHARS:]
        else:
            tail = self.tokenizer.decode(list(self.obj.input_ids)[-8:]) if self.tokenizer else ""
        return Prompt(tail=tail, chat=chat)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False)) if text else []

    def _input(self, call: Call) -> str | list[int]:
        if self.obj.text is not None:
            return call.prefix + self.obj.text + call.suffix
        ids = list(self.obj.input_ids)
        bos = getattr(self.tokenizer, "bos_token_id", None)
        head = ids[:1] if ids and bos is not None and ids[0] == bos else []
        return head + self._encode(call.prefix) + ids[len(head):] + self._encode(call.suffix)

    def _sampling(self, call: Call) -> dict[str, Any]:
        params = {**self.base, **call.sampling, "custom_params": dict(self.custom)}
        params["max_new_tokens"] = (call.max_new_tokens if call.max_new_tokens is not None
                                    else int(self.base.get("max_new_tokens")
                                             or DEFAULT_MAX_NEW_TOKENS))
        stops = self.stops + [s for s in call.stop if s not in self.stops]
        params["stop"] = stops or None
        return params

    async def generate(self, calls: Sequence[Call]) -> list[Generated]:
        if not calls:
            return []
        inner = copy.copy(self.obj)
        inputs = [self._input(c) for c in calls]
        sampling = [self._sampling(c) for c in calls]
        key = "text" if self.obj.text is not None else "input_ids"
        inner.text = inner.input_ids = None
        setattr(inner, key, inputs[0] if len(calls) == 1 else inputs)
        inner.sampling_params = sampling[0] if len(calls) == 1 else sampling
        inner.rid = None
        inner.stream = False
        inner.return_logprob = False
        self.prepare(inner, self.decoding)
        self.requests += 1
        out = await self.original(self.tokenizer_manager, inner, self.request).__anext__()
        outs = out if isinstance(out, list) else [out]
        if len(outs) != len(calls):
            raise RuntimeError(f"asked for {len(calls)} generations, got {len(outs)}")
        generated = []
        for call, o in zip(calls, outs, strict=True):
            meta = o["meta_info"]
            self.metas.append(meta)
            tokens = int(meta.get("completion_tokens", 0))
            step: dict[str, Any] = {"role": call.role, "prompt_suffix": call.suffix,
                                    "text": o["text"], "completion_tokens": tokens}
            if call.prefix:
                step["prompt_prefix_chars"] = len(call.prefix)
            self.steps.append(step)
            generated.append(Generated(o["text"], tokens, finish_type(meta)))
        self.last = outs[-1]
        return generated


async def run(original: Callable[..., Any], tokenizer_manager: Any, obj: Any, request: Any,
              request_plan: Plan, prepare: Callable[[Any, Plan], None], config: Any
              ) -> AsyncIterator[dict]:
    """Run the program and yield its output once."""
    plan = request_plan.program
    start = time.perf_counter()
    if not isinstance(obj.rid, str):  # the response's id (the inner requests get their own)
        obj.rid = uuid.uuid4().hex
    ctx = EngineContext(original, tokenizer_manager, obj, request, plan.decoding, prepare)
    result = await plan.program.run(ctx, ctx.prompt(plan.chat), plan.params)
    if ctx.last is None:
        raise RuntimeError(f"program {plan.program.name!r} made no generation")
    final = ctx.last
    meta = dict(final["meta_info"])
    inner_report = meta.pop("ilsi", None)
    for key in LOGPROB_KEYS:
        meta.pop(key, None)
    completion = sum(int(m.get("completion_tokens", 0)) for m in ctx.metas)
    prompt = sum(int(m.get("prompt_tokens", 0)) for m in ctx.metas)
    cached = sum(int(m.get("cached_tokens", 0) or 0) for m in ctx.metas)
    meta["completion_tokens"], meta["prompt_tokens"] = completion, prompt
    if "cached_tokens" in meta:
        meta["cached_tokens"] = cached
    meta["ilsi"] = {
        "method": plan.program.name,
        "family": plan.program.family,
        "params": plan.params,
        "source": request_plan.source,
        "why": ("prompting program chosen by the request's model-name suffix"
                if request_plan.source == SOURCE_SUFFIX else
                "prompting program chosen by the request (custom_params.ilsi)"),
        **result.report,
        "steps": ctx.steps,
        "decoding": inner_report,
        "cost": {
            "generate_calls": ctx.requests,
            "generations": len(ctx.metas),
            "completion_tokens": completion,
            "prompt_tokens": prompt,
            "prompt_tokens_computed": prompt - cached,
            "wall_ms": round((time.perf_counter() - start) * 1000.0, 3),
        },
    }
    meta["id"] = obj.rid
    out = dict(final)
    if result.text != final.get("text"):
        out["output_ids"] = ctx._encode(result.text) if ctx.tokenizer is not None else []
    out["text"] = result.text
    out["meta_info"] = meta
    yield out


# -- OpenAI chat requests ----------------------------------------------------------------

def add_chat_messages(request: Any, turns: list[dict[str, str]]) -> None:
    """Put a program's turns before a chat request's own messages, in place: a
    system turn first (joined with the client's system message, if any), then
    the others, then the client's conversation."""
    if not turns:
        return
    from sglang.srt.entrypoints.openai.protocol import (
        ChatCompletionMessageGenericParam,
        ChatCompletionMessageUserParam,
    )

    def message(role: str, content: str) -> Any:
        if role == "user":
            return ChatCompletionMessageUserParam(role="user", content=content)
        return ChatCompletionMessageGenericParam(role=role, content=content)

    messages = list(request.messages)
    system = [t["content"] for t in turns if t["role"] == "system"]
    first = messages[0] if messages else None
    if first is not None and getattr(first, "role", None) == "system" \
            and isinstance(getattr(first, "content", None), str):
        system.append(first.content)
        messages = messages[1:]
    head = [message("system", "\n\n".join(system))] if system else []
    request.messages = head + [message(t["role"], t["content"]) for t in turns
                               if t["role"] != "system"] + messages
