"""The ``tool`` capability: a tool-use loop inside one request.

A request whose ``ilsi.method`` is ``tools`` is run here, in the tokenizer
manager's process, as a sequence of ordinary SGLang sub-requests on one
growing prompt (the radix cache keeps the shared prefix)::

    prompt + text  <tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>
                   <tool_response>\\nRESULT\\n</tool_response>\\n  text ...

1. free text: the client's sampling parameters (and ``ilsi.decoding``, a
   logits method), stopping at ``<tool_call>``;
2. the call: decoded under a grammar that admits exactly
   ``{"name": TOOL, "arguments": ARGS}`` for the allowed tools
   (:func:`sglang_ilsi.tools.call_grammar`), with plain decoding;
3. the server parses the call, runs the tool (:mod:`sglang_ilsi.tools`),
   appends the result (or ``error: ...``) and goes back to 1.

It stops when the model ends its text without a call, at ``max_calls``
(the text up to the next ``<tool_call>`` is the answer), or when the
request's ``max_new_tokens`` (counted over every generated token, calls
included) is spent. ``tool_choice`` ``required`` or a tool name starts
with a call. The client receives the text after the last tool response;
``meta_info.ilsi`` lists each call (tool, arguments, result or error, time)
and the whole transcript. Only calls the model generates in this request
are ever executed: text in the request (messages, prompts) is never parsed
for calls.

OpenAI chat requests whose ``tools`` are all server-enabled tools are turned
into such requests by :func:`adapt_openai_request` (``tool_choice`` ``none``
or client-side tools keep SGLang's own behaviour).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from sglang_ilsi import tools as tool_registry
from sglang_ilsi.methods.tool_use.tools import ToolUse
from sglang_ilsi.params import IlsiRequestError
from sglang_ilsi.plan import (
    PLAIN_PLAN,
    REQUEST_KEY,
    SOURCE_SUFFIX,
    Plan,
    clients_own,
)

logger = logging.getLogger(__name__)

OPEN, CLOSE = "<tool_call>", "</tool_call>"
RESULT_OPEN, RESULT_CLOSE = "<tool_response>", "</tool_response>"
DEFAULT_MAX_NEW_TOKENS = 128  # SGLang's default when a request sets none
GRAMMAR_KEYS = ("json_schema", "regex", "ebnf", "structural_tag")
MAX_BLOCKING_TOOLS = 2  # concurrent subprocess/disk tool calls per server


def check_request(obj: Any) -> None:
    """What the tool loop asks of the request's shape (its ilsi object is valid)."""
    from sglang_ilsi.engine.http.samples import single_prompt

    items = obj.sampling_params if isinstance(obj.sampling_params, list) else [obj.sampling_params]
    if len(items) > 1 or not single_prompt(obj):
        raise IlsiRequestError("method", "the tool loop takes one prompt per request")
    item = items[0]
    if item.get("n", 1) != 1:
        raise IlsiRequestError("n", "sampling_params.n (OpenAI n) cannot be combined with tools")
    if obj.custom_logit_processor is not None:
        raise IlsiRequestError("", "tools cannot be combined with custom_logit_processor")
    clash = [k for k in GRAMMAR_KEYS if item.get(k) is not None]
    if clash:
        raise IlsiRequestError("method", f"tools cannot be combined with sampling_params."
                               f"{clash[0]}: the tool calls take their own grammar")


# -- tools of this process ---------------------------------------------------------------

_INSTANCES: dict[tuple, dict[str, tool_registry.Tool]] = {}
_SEMAPHORE: asyncio.Semaphore | None = None


def blocking_slots() -> asyncio.Semaphore:
    """The server's bound on blocking tool runs at a time (subprocess, disk): the tool
    loop's calls and a search's sandboxed programs share it."""
    global _SEMAPHORE
    if _SEMAPHORE is None:
        _SEMAPHORE = asyncio.Semaphore(MAX_BLOCKING_TOOLS)
    return _SEMAPHORE


def tool_instances(config: Any) -> dict[str, tool_registry.Tool]:
    """One instance per enabled tool, built once per process and configuration."""
    key = (tuple(config.tools), config.tool_retrieval_dir)
    if key not in _INSTANCES:
        options = {"retrieval_dir": config.tool_retrieval_dir}
        _INSTANCES[key] = {n: tool_registry.TOOLS[n](options) for n in config.tools}
    return _INSTANCES[key]


async def execute(tool: tool_registry.Tool, call_text: str, allowed: list[str]
                  ) -> dict[str, Any]:
    """Parse one generated call and run it: the call's report entry."""
    record: dict[str, Any] = {"tool": None, "arguments": None, "result": None, "error": None,
                              "ms": 0.0}
    start = time.perf_counter()
    try:
        try:
            # strict=False: grammar backends admit control characters in strings
            call = json.loads(call_text, strict=False)
        except (json.JSONDecodeError, RecursionError):
            raise tool_registry.ToolError("malformed tool call: not valid JSON (did the call "
                                          "run out of tokens?)") from None
        if not isinstance(call, dict) or call.get("name") not in allowed:
            raise tool_registry.ToolError(f"unknown tool; allowed: {allowed}")
        record["tool"], record["arguments"] = call["name"], call.get("arguments")
        if tool is None or tool.name != call["name"]:
            raise tool_registry.ToolError(f"tool {call['name']!r} is not available")
        arguments = tool_registry.check_arguments(type(tool), call.get("arguments"))
        if tool.blocking:
            async with blocking_slots():
                result = await asyncio.get_running_loop().run_in_executor(None, tool.run,
                                                                          arguments)
        else:
            result = tool.run(arguments)
        record["result"] = tool_registry.truncate(str(result))
    except tool_registry.ToolError as exc:
        record["error"] = tool_registry.truncate(str(exc))
    except Exception as exc:  # a tool bug must not take the request down
        logger.exception("sglang-ilsi: tool %r failed", record["tool"])
        record["error"] = f"internal tool error ({type(exc).__name__})"
    record["ms"] = round((time.perf_counter() - start) * 1000.0, 3)
    return record


def response_block(call_text: str, record: Mapping[str, Any]) -> str:
    """What is appended to the prompt after a call's JSON."""
    body = record["result"] if record["error"] is None else f"error: {record['error']}"
    return f"{call_text}\n{CLOSE}\n{RESULT_OPEN}\n{body}\n{RESULT_CLOSE}\n"


def _finish(meta: Mapping[str, Any]) -> dict:
    reason = meta.get("finish_reason")
    return reason if isinstance(reason, dict) else {"type": reason}


async def run(original: Callable[..., Any], tokenizer_manager: Any, obj: Any, request: Any,
              request_plan: Plan, prepare: Callable[[Any, Plan], None], config: Any
              ) -> AsyncIterator[dict]:
    """Run the loop and yield the final output once."""
    plan = request_plan.tools
    start = time.perf_counter()
    if not isinstance(obj.rid, str):
        obj.rid = uuid.uuid4().hex
    tokenizer = getattr(tokenizer_manager, "tokenizer", None)
    base = dict(obj.sampling_params)
    custom = clients_own(base.get("custom_params"))
    budget = int(base.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
    stops = base.get("stop") or []
    stops = [stops] if isinstance(stops, str) else list(stops)
    p = plan.params
    names: list[str] = p["tools"]
    instances = tool_instances(config)
    allow_calls = p["tool_choice"] != "none" and p["max_calls"] > 0
    forced = p["tool_choice"] not in ("auto", "none")
    server_args = getattr(tokenizer_manager, "server_args", None)
    backend = str(getattr(server_args, "grammar_backend", None) or "xgrammar")

    transcript = ""
    used = 0
    calls: list[dict[str, Any]] = []
    metas: list[dict] = []
    answer: dict | None = None  # the last free-text segment's output
    stopped = "answer"

    async def generate(update: dict[str, Any], decoding: Plan) -> dict:
        nonlocal used
        inner = copy.copy(obj)
        if obj.text is not None:
            inner.text = obj.text + transcript
        else:
            extra = tokenizer.encode(transcript, add_special_tokens=False) if transcript else []
            inner.input_ids = list(obj.input_ids) + list(extra)
        inner.sampling_params = {**base, **update, "custom_params": dict(custom)}
        inner.rid = None
        inner.stream = False
        prepare(inner, decoding)
        out = await original(tokenizer_manager, inner, request).__anext__()
        metas.append(out["meta_info"])
        used += int(out["meta_info"].get("completion_tokens", 0))
        return out

    while True:
        if not (forced and not calls):
            answer = await generate({"max_new_tokens": budget - used, "no_stop_trim": False,
                                     "stop": stops + ([OPEN] if allow_calls else [])},
                                    plan.decoding)
            transcript += answer["text"]
            finish = _finish(answer["meta_info"])
            if not (allow_calls and finish.get("type") == "stop" and finish.get("matched") == OPEN):
                stopped = "answer" if finish.get("type") != "length" else "length"
                break
            if len(calls) >= p["max_calls"]:
                stopped = "max_calls"
                break
            if used >= budget:
                stopped = "length"
                break
        allowed = [p["tool_choice"]] if (forced and not calls and p["tool_choice"] in names) \
            else names
        transcript += f"{OPEN}\n"
        call_out = await generate({
            "max_new_tokens": min(p["call_max_tokens"], budget - used), "stop": None,
            "stop_token_ids": None, "min_new_tokens": 0, "ignore_eos": False,
            **tool_registry.call_grammar(allowed, backend)}, PLAIN_PLAN)
        call_text = call_out["text"].strip()
        name = _peek_name(call_text)
        record = await execute(instances.get(name) if name in allowed else None, call_text,
                               allowed)
        record["index"] = len(calls)
        calls.append(record)
        transcript += response_block(call_text, record)
        answer = None
        if used >= budget:
            stopped = "length"
            break

    final = answer if answer is not None else call_out
    meta = dict(final["meta_info"])
    inner_report = meta.pop("ilsi", None) if answer is not None else None
    meta.pop("ilsi", None)
    if stopped == "length":
        meta["finish_reason"] = {"type": "length", "length": budget}
    meta["completion_tokens"] = used
    meta["ilsi"] = {
        "method": ToolUse.name,
        "family": ToolUse.family,
        "params": p,
        "source": request_plan.source,
        "why": ("tool loop chosen by the request's model-name suffix" if request_plan.source == SOURCE_SUFFIX
                else "tool loop chosen by the request (custom_params.ilsi or OpenAI tools)"),
        "calls": calls,
        "stopped": stopped,
        "transcript": transcript,
        "decoding": inner_report,
        "cost": {
            "generate_calls": len(metas),
            "tool_calls": len(calls),
            "completion_tokens": used,
            "prefill_tokens_computed": sum(
                m.get("prompt_tokens", 0) - m.get("cached_tokens", 0) for m in metas),
            "tool_ms": round(sum(c["ms"] for c in calls), 3),
            "wall_ms": round((time.perf_counter() - start) * 1000.0, 3),
        },
    }
    if metas:
        meta["prompt_tokens"] = metas[0].get("prompt_tokens", meta.get("prompt_tokens"))
    meta["id"] = obj.rid
    out = dict(final)
    if answer is None:
        out["text"], out["output_ids"] = "", []
    out["meta_info"] = meta
    yield out


def _peek_name(call_text: str) -> str | None:
    try:
        call = json.loads(call_text, strict=False)
    except (json.JSONDecodeError, RecursionError):
        return None
    return call.get("name") if isinstance(call, dict) else None


# -- OpenAI chat requests ----------------------------------------------------------------

def tools_prompt(names: list[str]) -> str:
    """The system text that tells the model which tools exist and how to call them."""
    specs = "\n".join(json.dumps({"name": n, "description": tool_registry.TOOLS[n].description,
                                  "parameters": tool_registry.TOOLS[n].arguments})
                      for n in names)
    return (f"You can call these tools:\n{specs}\nTo call one, write {OPEN}\n"
            '{"name": "TOOL", "arguments": {...}}\n'
            f"{CLOSE}\nand its result comes back as {RESULT_OPEN}...{RESULT_CLOSE}. "
            "Then answer.")


def adapt_openai_request(request: Any, config: Any) -> bool:
    """Turn a chat request whose ``tools`` are all server-enabled tools into a
    tool-loop request (``custom_params.ilsi``), in place. Returns whether it
    did; raises :class:`IlsiRequestError` for a mix of server and client tools."""
    declared = getattr(request, "tools", None)
    if not declared or getattr(request, "messages", None) is None \
            or not hasattr(request, "custom_params"):
        return False
    names = [t.function.name for t in declared]
    ours = [n for n in names if n in config.tools]
    if not ours:
        return False  # client-side tools: SGLang's own tool calling
    if len(ours) != len(names):
        others = [n for n in names if n not in config.tools]
        raise IlsiRequestError("tools", f"the request mixes server-side tools {ours} with "
                               f"client-side tools {others}; send them in separate requests")
    choice = request.tool_choice
    if not isinstance(choice, str):
        choice = choice.function.name
    if choice == "none":
        return False
    custom = dict(request.custom_params or {})
    raw = custom.get(REQUEST_KEY)
    if isinstance(raw, Mapping) and raw.get("method") == ToolUse.name:
        spec = dict(raw)
    else:
        spec = {"method": ToolUse.name}
        if raw is not None:
            spec[ToolUse.decoded_by] = raw
    spec.setdefault("tools", names)
    spec.setdefault("tool_choice", choice)
    custom[REQUEST_KEY] = spec
    request.custom_params = custom
    request.tools = None
    request.tool_choice = "none"
    listed = spec["tools"] if isinstance(spec["tools"], list) else []
    _add_system_text(request, tools_prompt(
        [n for n in listed if isinstance(n, str) and n in tool_registry.TOOLS] or ours))
    return True


def _add_system_text(request: Any, text: str) -> None:
    from sglang.srt.entrypoints.openai.protocol import ChatCompletionMessageGenericParam

    messages = list(request.messages)
    first = messages[0] if messages else None
    if first is not None and getattr(first, "role", None) == "system" \
            and isinstance(getattr(first, "content", None), str):
        messages[0] = first.model_copy(update={"content": f"{first.content}\n\n{text}"})
    else:
        messages.insert(0, ChatCompletionMessageGenericParam(role="system", content=text))
    request.messages = messages
