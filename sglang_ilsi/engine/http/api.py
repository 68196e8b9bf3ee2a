"""HTTP-side request routing and response reporting.

These functions are installed as hooks by :mod:`sglang_ilsi.engine.patches`:

- :func:`around_generate_request` runs for every request that reaches
  SGLang's ``TokenizerManager`` (``/generate``, both OpenAI endpoints,
  ``sglang.Engine``): it refuses client-sent processors, validates the
  method selection (HTTP 400 naming the parameter), and attaches our
  processor; a request naming a selection rule is expanded into N samples, a
  prompting program runs its generations as inner requests;
- :func:`around_openai_handle_request` reads a ``model="NAME+method"`` suffix;
- :func:`after_update_request_meta_info` and the two ``after_build_*``
  functions put the method report into ``meta_info.ilsi`` and the OpenAI
  responses' ``ilsi`` field.
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from sglang_ilsi import plan
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


def apply_grammar(item: dict, grammar: plan.GrammarChoice | None, backend: str) -> None:
    """A named grammar (``ilsi.grammar``) becomes SGLang's own ``json_schema`` /
    ``regex`` / ``ebnf`` sampling parameter, compiled by the server's backend."""
    if grammar is None:
        return
    from sglang_ilsi import grammars

    clash = [k for k in SGLANG_GRAMMAR_KEYS if item.get(k) is not None]
    if clash:
        raise IlsiRequestError("grammar", f"cannot be combined with sampling_params.{clash[0]}")
    item.update(grammars.sampling_params_for(grammar.name, backend, grammar.schema))


def _prompts(obj: Any) -> tuple[list[Any], bool]:
    """The request's prompts (texts or id lists) and whether it is a batch."""
    prompt = obj.text if obj.text is not None else obj.input_ids
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        return list(prompt), True
    return [prompt], False


def _items(obj: Any) -> list[Any]:
    if obj.sampling_params is None:
        obj.sampling_params = {}
    return obj.sampling_params if isinstance(obj.sampling_params, list) else [obj.sampling_params]


def read_plans(obj: Any, tokenizer: Any) -> list[plan.Plan]:
    """Each ``sampling_params`` item's plan, read once."""
    return [plan.read(item.get("custom_params") if isinstance(item, dict) else None, config(),
                      tokenizer) for item in _items(obj)]


def _needs_second_context(chosen: plan.Plan) -> bool:
    return chosen.logits is not None and plan.requirements(chosen.logits).second_context


def _refuse_client_processor(obj: Any) -> bool:
    """Whether the request carries a client processor (refused unless the
    operator opted in)."""
    client_processor = _has_client_processor(getattr(obj, "custom_logit_processor", None))
    if client_processor and not config().allow_custom_logit_processor:
        raise IlsiRequestError(
            "",
            "custom_logit_processor is refused: serialized (dill) processors run "
            "client-sent code and are disabled while sglang-ilsi is active; select a "
            "named method with custom_params.ilsi instead",
        )
    return client_processor


def _refuse_ignore_eos(chain: plan.MethodChoice) -> None:
    from sglang_ilsi import registry

    for name, params in chain.steps():
        if registry.get(name).ends_sequences(params):
            raise IlsiRequestError("ignore_eos", f"{name!r} ends a request with end-of-sequence "
                                   "(here: stop_below > 0), which ignore_eos would override")


def prepare_generate_input(obj: Any, tokenizer: Any, plans: list[plan.Plan],
                           grammar_backend: str = "xgrammar",
                           facts: request_needs.ModelFacts | None = None) -> None:
    """Rewrite one ``GenerateReqInput`` in place for its (validated) plans: the
    grammar, the logits chain's server-side needs, and our processor."""
    cfg = config()
    client_processor = _refuse_client_processor(obj)
    items = _items(obj)
    prompts, batched = _prompts(obj)
    if batched and isinstance(obj.sampling_params, dict) and _needs_second_context(plans[0]):
        # each prompt gets its own second context: one sampling_params per prompt
        obj.sampling_params = [copy.deepcopy(obj.sampling_params) for _ in prompts]
        items = obj.sampling_params
        plans = [plans[0].for_one_prompt() for _ in prompts]
    chosen = False
    for index, (item, chosen_plan) in enumerate(zip(items, plans, strict=True)):
        if not isinstance(item, dict):
            continue
        apply_grammar(item, chosen_plan.grammar, grammar_backend)
        chain = chosen_plan.logits
        if chain is not None:
            request_needs.check_and_prepare(chain, cfg, facts or request_needs.ModelFacts(),
                                            prompts[min(index, len(prompts) - 1)], tokenizer)
        if chain is not None and item.get("ignore_eos"):
            _refuse_ignore_eos(chain)
        if chain is not None and chain.forced:
            clash = [k for k in SGLANG_GRAMMAR_KEYS if item.get(k) is not None]
            if clash:
                raise IlsiRequestError(plan.FORCED_KEY, f"cannot be combined with "
                                       f"sampling_params.{clash[0]} (the continuation is "
                                       "given, not generated)")
            # the continuation is the output: as many new tokens as it has
            item["max_new_tokens"] = len(chain.forced)
        rewritten = plan.rewrite_custom_params(item.get("custom_params"), chain)
        if rewritten is not None:
            item["custom_params"] = rewritten
        chosen |= chain is not None
    if chosen:
        if client_processor:
            raise IlsiRequestError(
                "", "a request cannot combine custom_logit_processor with an ilsi method"
            )
        from sglang_ilsi.engine.scheduler.logits_stage import PROCESSOR_STR

        obj.custom_logit_processor = PROCESSOR_STR


def around_generate_request(original, tokenizer_manager: Any, obj: Any, *args: Any, **kwargs: Any):
    """AROUND hook on ``TokenizerManager.generate_request`` (an async generator).

    The request's plan is read (validated) here, when the generator is created,
    so a bad request raises ValueError where SGLang's HTTP layer turns it into a
    400; then it is dispatched on the plan's kind: a tool loop or a selection
    runs its own loop of inner requests, anything else is rewritten and goes on."""
    from sglang.srt.managers.io_struct import GenerateReqInput

    if not isinstance(obj, GenerateReqInput):
        return original(tokenizer_manager, obj, *args, **kwargs)
    from sglang_ilsi.engine.http import programs, samples, search, tool_loop

    tokenizer = getattr(tokenizer_manager, "tokenizer", None)
    backend = _grammar_backend(tokenizer_manager)
    facts = request_needs.ModelFacts.of(tokenizer_manager)

    def prepare(o: Any, inner_plan: plan.Plan) -> None:
        # a batched inner request (a program's sweep) decodes every prompt the same way
        count = len(o.sampling_params) if isinstance(o.sampling_params, list) else 1
        prepare_generate_input(o, tokenizer, [inner_plan.for_one_prompt() for _ in range(count)],
                               backend, facts)

    _refuse_client_processor(obj)  # before anything else reads the request
    plans = read_plans(obj, tokenizer)
    loops = {plan.TOOL_LOOP: tool_loop, plan.SELECTION: samples, plan.PROGRAM: programs,
             plan.SEARCH: search}
    for kind, runner in loops.items():
        found = [i for i, p in enumerate(plans) if p.kind == kind]
        if found:
            runner.check_request(obj)
            request = args[0] if args else kwargs.get("request")
            return _remembering(runner.run(original, tokenizer_manager, obj, request,
                                           plans[found[0]], prepare, config()))
    prepare_generate_input(obj, tokenizer, plans, backend, facts)
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
            custom[plan.SUFFIX_KEY] = method
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
            _read_chat_plan(serving, request)
        except IlsiRequestError as e:
            return serving.create_error_response(message=str(e), err_type="BadRequest",
                                                 status_code=400)
    return await original(serving, request, raw_request)


def _read_chat_plan(serving: Any, request: Any) -> None:
    """Read a chat request's plan here, where the messages still exist: a method
    that needs a second context built from the messages gets its token ids now.
    The plan travels on under :data:`~sglang_ilsi.plan.PLAN_KEY`."""
    tokenizer = getattr(serving.tokenizer_manager, "tokenizer", None)
    chosen = plan.read(request.custom_params, config(), tokenizer)
    if chosen is plan.PLAIN_PLAN and request.custom_params is None:
        return
    if chosen.program is not None:  # its in-context turns go into the conversation
        from sglang_ilsi.engine.http import programs

        programs.add_chat_messages(request, chosen.program.program.chat_messages(
            chosen.program.params))
        chosen = replace(chosen, program=replace(chosen.program, chat=True))
    if _needs_second_context(chosen) and tokenizer is not None:
        ids = request_needs.chat_second_ids(chosen.logits, request, tokenizer)
        if ids is not None:
            request_needs.check_and_prepare(
                chosen.logits, config(), request_needs.ModelFacts.of(serving.tokenizer_manager),
                None, tokenizer, ids)
    request.custom_params = {**(request.custom_params or {}), plan.PLAN_KEY: chosen}


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
