"""HTTP-side request routing and response reporting.

These functions are installed as hooks by :mod:`sglang_ilsi.engine.patches`:

- :func:`around_generate_request` runs for every request that reaches
  SGLang's ``TokenizerManager`` (``/generate``, both OpenAI endpoints,
  ``sglang.Engine``): it refuses client-sent processors, validates the
  method selection (HTTP 400 naming the parameter), and attaches our
  processor; a request naming a selection rule is expanded into N samples;
- :func:`around_openai_handle_request` reads a ``model="NAME+method"`` suffix;
- :func:`after_update_request_meta_info` and the two ``after_build_*``
  functions put the method report into ``meta_info.ilsi`` and the OpenAI
  responses' ``ilsi`` field.
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from typing import Any

from sglang_ilsi import request_spec
from sglang_ilsi.config import IlsiConfig
from sglang_ilsi.engine.http import request_needs
from sglang_ilsi.params import IlsiRequestError

_CONFIG: IlsiConfig | None = None


def configure(config: IlsiConfig) -> None:
    global _CONFIG
    _CONFIG = config


def config() -> IlsiConfig:
    assert _CONFIG is not None, "sglang-ilsi hooks used before configure()"
    return _CONFIG


def _has_client_processor(value: Any) -> bool:
    if isinstance(value, list):
        return any(v is not None for v in value)
    return value is not None


SGLANG_GRAMMAR_KEYS = ("json_schema", "regex", "ebnf", "structural_tag")


def apply_named_grammar(item: dict, custom: Any, backend: str) -> None:
    """``ilsi.grammar`` (a name from the grammars library, plus ``ilsi.schema``
    for ``json-object``) becomes SGLang's own ``json_schema``/``regex``/``ebnf``
    sampling parameter, compiled by the server's grammar backend."""
    raw = custom.get(request_spec.REQUEST_KEY) if isinstance(custom, dict) else None
    if not isinstance(raw, dict) or "grammar" not in raw:
        if isinstance(raw, dict) and "schema" in raw:
            raise IlsiRequestError("schema", "only meaningful with ilsi.grammar")
        return
    from sglang_ilsi import grammars

    name = raw["grammar"]
    if not isinstance(name, str):
        raise IlsiRequestError("grammar", f"expected a grammar name, got {type(name).__name__}")
    clash = [k for k in SGLANG_GRAMMAR_KEYS if item.get(k) is not None]
    if clash:
        raise IlsiRequestError("grammar", f"cannot be combined with sampling_params.{clash[0]}")
    item.update(grammars.sampling_params_for(name, backend, raw.get("schema")))


def _prompts(obj: Any) -> tuple[list[Any], bool]:
    """The request's prompts (texts or id lists) and whether it is a batch."""
    prompt = obj.text if obj.text is not None else obj.input_ids
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        return list(prompt), True
    return [prompt], False


def _needs_second_context(choice: Any) -> bool:
    return choice is not None and request_needs.requirements(choice).second_context


def prepare_generate_input(obj: Any, tokenizer: Any, grammar_backend: str = "xgrammar",
                           facts: request_needs.ModelFacts | None = None) -> None:
    """Validate and rewrite one ``GenerateReqInput`` in place."""
    cfg = config()
    client_processor = _has_client_processor(getattr(obj, "custom_logit_processor", None))
    if client_processor and not cfg.allow_custom_logit_processor:
        raise IlsiRequestError(
            "",
            "custom_logit_processor is refused: serialized (dill) processors run "
            "client-sent code and are disabled while sglang-ilsi is active; select a "
            "named method with custom_params.ilsi instead",
        )
    if obj.sampling_params is None:
        obj.sampling_params = {}
    prompts, batched = _prompts(obj)
    if batched and isinstance(obj.sampling_params, dict) and _needs_second_context(
            request_spec.resolve(obj.sampling_params.get("custom_params"), cfg, tokenizer)):
        # each prompt gets its own second context: one sampling_params per prompt
        obj.sampling_params = [copy.deepcopy(obj.sampling_params) for _ in prompts]
    items = obj.sampling_params if isinstance(obj.sampling_params, list) else [obj.sampling_params]
    chosen = False
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        custom = item.get("custom_params")
        apply_named_grammar(item, custom, grammar_backend)
        choice = request_spec.resolve(custom, cfg, tokenizer)
        if choice is not None:
            chat_ids = custom.get(request_needs.CHAT_SECOND_IDS_KEY) \
                if isinstance(custom, dict) else None
            request_needs.check_and_prepare(choice, cfg, facts or request_needs.ModelFacts(),
                                            prompts[min(index, len(prompts) - 1)], tokenizer,
                                            chat_ids)
        rewritten = request_spec.rewrite_custom_params(custom, choice)
        if rewritten is not None:
            item["custom_params"] = rewritten
        chosen |= choice is not None
    if chosen:
        if client_processor:
            raise IlsiRequestError(
                "", "a request cannot combine custom_logit_processor with an ilsi method"
            )
        from sglang_ilsi.engine.scheduler.logits_stage import PROCESSOR_STR

        obj.custom_logit_processor = PROCESSOR_STR


def around_generate_request(original, tokenizer_manager: Any, obj: Any, *args: Any, **kwargs: Any):
    """AROUND hook on ``TokenizerManager.generate_request`` (an async generator).

    Validation runs when the generator is created, so a bad request raises
    ValueError where SGLang's HTTP layer turns it into a 400. Requests naming a
    selection rule are expanded into N samples (:mod:`.samples`)."""
    from sglang.srt.managers.io_struct import GenerateReqInput

    if isinstance(obj, GenerateReqInput):
        from sglang_ilsi.engine.http import samples

        backend = _grammar_backend(tokenizer_manager)

        facts = request_needs.ModelFacts.of(tokenizer_manager)

        def prepare(o: Any, tokenizer: Any) -> None:
            prepare_generate_input(o, tokenizer, backend, facts)

        from sglang_ilsi.engine.http import tool_loop

        tool_plan = tool_loop.plan_for(obj, config())
        if tool_plan is not None:
            request = args[0] if args else kwargs.get("request")
            return _remembering(tool_loop.run(original, tokenizer_manager, obj, request,
                                              tool_plan, prepare, config()))
        plan = samples.plan_for(obj, config())
        if plan is not None:
            request = args[0] if args else kwargs.get("request")
            return _remembering(samples.run(original, tokenizer_manager, obj, request, plan,
                                            prepare))
        prepare(obj, getattr(tokenizer_manager, "tokenizer", None))
        if obj.stream and obj.custom_logit_processor is not None:
            return _remembering(original(tokenizer_manager, obj, *args, **kwargs))
    return original(tokenizer_manager, obj, *args, **kwargs)


# The latest report of streaming requests, by request id, for the OpenAI
# stream wrappers below (SGLang builds those chunks without meta_info).
_STREAM_REPORTS: OrderedDict[str, dict] = OrderedDict()
_STREAM_REPORTS_MAX = 4096


async def _remembering(outputs: Any):
    async for out in outputs:
        for item in out if isinstance(out, list) else [out]:
            meta = item.get("meta_info", {}) if isinstance(item, dict) else {}
            report = meta.get("ilsi")
            if isinstance(report, dict) and "id" in meta:
                _STREAM_REPORTS[meta["id"]] = report
                _STREAM_REPORTS.move_to_end(meta["id"])
                while len(_STREAM_REPORTS) > _STREAM_REPORTS_MAX:
                    _STREAM_REPORTS.popitem(last=False)
        yield out


def _stream_reports(rid: Any) -> list[dict]:
    rids = rid if isinstance(rid, list) else [rid]
    found = [_STREAM_REPORTS.pop(r, None) for r in rids if isinstance(r, str)]
    # n > 1 expands a rid into rid_0, rid_1, ...
    for r in rids:
        if isinstance(r, str):
            found += [_STREAM_REPORTS.pop(k) for k in
                      [k for k in _STREAM_REPORTS if k.startswith(r + "_")]]
    return [f for f in found if f is not None]


async def around_openai_stream(original, serving: Any, adapted_request: Any, *args: Any,
                               **kwargs: Any):
    """AROUND hook on the OpenAI chat/completion stream generators: before
    ``data: [DONE]``, one extra chunk with no choices carries the ``ilsi`` report."""
    async for chunk in original(serving, adapted_request, *args, **kwargs):
        if isinstance(chunk, str) and chunk.strip() == "data: [DONE]":
            reports = _stream_reports(getattr(adapted_request, "rid", None))
            if reports:
                payload = {"object": "chat.completion.chunk", "choices": [],
                           "ilsi": reports[0] if len(reports) == 1 else reports}
                yield f"data: {json.dumps(payload)}\n\n"
        yield chunk


def _grammar_backend(tokenizer_manager: Any) -> str:
    server_args = getattr(tokenizer_manager, "server_args", None)
    return str(getattr(server_args, "grammar_backend", None) or "xgrammar")


async def around_openai_handle_request(original, serving: Any, request: Any, raw_request: Any):
    """AROUND hook on ``OpenAIServingBase.handle_request``: ``model="M+method"``."""
    model = getattr(request, "model", None)
    if isinstance(model, str) and "+" in model and hasattr(request, "custom_params"):
        base, _, method = model.rpartition("+")
        served = getattr(serving.tokenizer_manager, "served_model_name", None)
        if model != served and (served is None or base == served):
            from sglang_ilsi import registry

            if method not in registry.entries() or not config().method_allowed(method):
                enabled = sorted(m for m in registry.entries() if config().method_allowed(m))
                return serving.create_error_response(
                    message=f"model: suffix '+{method}' names no enabled sglang-ilsi "
                    f"method; enabled: {enabled}",
                    err_type="BadRequest",
                    status_code=400,
                )
            custom = dict(request.custom_params or {})
            custom[request_spec.SUFFIX_KEY] = method
            request.custom_params = custom
            request.model = base
    from sglang_ilsi.engine.http import tool_loop

    try:  # chat requests whose tools are server-side tools run the tool loop
        adapted = tool_loop.adapt_openai_request(request, config())
    except IlsiRequestError as e:
        return serving.create_error_response(message=str(e), err_type="BadRequest",
                                             status_code=400)
    if adapted:
        return await original(serving, request, raw_request)
    if getattr(request, "messages", None) is not None and hasattr(request, "custom_params"):
        try:
            _attach_chat_second_context(serving, request)
        except IlsiRequestError as e:
            return serving.create_error_response(message=str(e), err_type="BadRequest",
                                                 status_code=400)
    return await original(serving, request, raw_request)


def _names_second_context_method(custom: Any) -> bool:
    """Whether the request (or the server default it falls back to) names a
    method that needs a second context; full validation happens later."""
    from sglang_ilsi import registry

    raw = custom.get(request_spec.REQUEST_KEY) if isinstance(custom, dict) else None
    if raw is None and isinstance(custom, dict):
        raw = custom.get(request_spec.SUFFIX_KEY)
    if raw is None:
        raw = config().default_method
    names = []
    if isinstance(raw, str):
        names.append(raw)
    elif isinstance(raw, dict):
        names.append(raw.get("method"))
        then = raw.get(request_spec.THEN_KEY)
        if isinstance(then, list):
            names += [t.get("method") if isinstance(t, dict) else t for t in then]
    classes = [registry.get(n) for n in names if isinstance(n, str)]
    return any(c is not None and "second_context" in c.needs for c in classes)


def _attach_chat_second_context(serving: Any, request: Any) -> None:
    """Chat requests whose method needs a second context built from the
    messages get its token ids here, where the messages still exist."""
    custom = request.custom_params
    if isinstance(custom, dict) and request_needs.CHAT_SECOND_IDS_KEY in custom:
        raise IlsiRequestError("", f"custom_params key {request_needs.CHAT_SECOND_IDS_KEY!r} "
                               "is reserved")
    if not _names_second_context_method(custom):
        return
    tokenizer = getattr(serving.tokenizer_manager, "tokenizer", None)
    choice = request_spec.resolve(custom, config(), tokenizer)
    if not _needs_second_context(choice) or tokenizer is None:
        return
    ids = request_needs.chat_second_ids(choice, request, tokenizer)
    if ids is not None:
        request.custom_params = {**(custom or {}), request_needs.CHAT_SECOND_IDS_KEY: ids}


def after_update_request_meta_info(result: Any, tokenizer_manager: Any, meta_info: dict, *a, **k):
    """SGLang accumulates one report per output token (see logits_stage);
    the last one is the request's report as of its latest token."""
    value = meta_info.get("ilsi")
    if isinstance(value, list):
        latest = next((v for v in reversed(value) if v is not None), None)
        if latest is None:
            meta_info.pop("ilsi")
        else:
            meta_info["ilsi"] = _clamp_steps(latest, meta_info.get("completion_tokens"))
    return None


def _clamp_steps(report: dict, completion_tokens: Any) -> dict:
    """Under SGLang's overlap scheduler a request that has just sampled its
    stop token takes part in one more (discarded) decoding step; the report
    counts the steps that produced returned tokens."""
    cost = report.get("cost", {})
    if isinstance(completion_tokens, int) and cost.get("steps", 0) > completion_tokens:
        return {**report, "cost": {**cost, "steps": completion_tokens}}
    return report


def _with_ilsi_field(response: Any, ret: list[dict[str, Any]]) -> Any:
    reports = [item.get("meta_info", {}).get("ilsi") for item in ret]
    if not any(r is not None for r in reports):
        return None
    from fastapi.responses import ORJSONResponse

    if isinstance(response, ORJSONResponse):  # an error response: leave it
        return None
    data = response.model_dump()
    for choice in data.get("choices", []):
        index = choice.get("index", 0)
        if 0 <= index < len(reports) and reports[index] is not None:
            choice["ilsi"] = reports[index]
    data["ilsi"] = reports[0] if len(reports) == 1 else reports
    return ORJSONResponse(content=data)


def after_build_chat_response(response: Any, serving: Any, request: Any, ret: list, *a, **k):
    return _with_ilsi_field(response, ret)


def after_build_completion_response(response: Any, serving: Any, request: Any, ret: list, *a, **k):
    return _with_ilsi_field(response, ret)
