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

from typing import Any

from sglang_ilsi import request_spec
from sglang_ilsi.config import IlsiConfig
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


def prepare_generate_input(obj: Any, tokenizer: Any) -> None:
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
    items = obj.sampling_params if isinstance(obj.sampling_params, list) else [obj.sampling_params]
    chosen = False
    for item in items:
        if not isinstance(item, dict):
            continue
        custom = item.get("custom_params")
        choice = request_spec.resolve(custom, cfg, tokenizer)
        rewritten = request_spec.rewrite_custom_params(custom, choice)
        if rewritten is not None:
            item["custom_params"] = rewritten
        chosen |= choice is not None
    if chosen:
        if client_processor:
            raise IlsiRequestError(
                "", "a request cannot combine custom_logit_processor with an ilsi method"
            )
        from sglang_ilsi.engine.logits_stage import PROCESSOR_STR

        obj.custom_logit_processor = PROCESSOR_STR


def around_generate_request(original, tokenizer_manager: Any, obj: Any, *args: Any, **kwargs: Any):
    """AROUND hook on ``TokenizerManager.generate_request`` (an async generator).

    Validation runs when the generator is created, so a bad request raises
    ValueError where SGLang's HTTP layer turns it into a 400. Requests naming a
    selection rule are expanded into N samples (:mod:`.samples`)."""
    from sglang.srt.managers.io_struct import GenerateReqInput

    if isinstance(obj, GenerateReqInput):
        from sglang_ilsi.engine import samples

        plan = samples.plan_for(obj, config())
        if plan is not None:
            request = args[0] if args else kwargs.get("request")
            return samples.run(original, tokenizer_manager, obj, request, plan,
                               prepare_generate_input)
        prepare_generate_input(obj, getattr(tokenizer_manager, "tokenizer", None))
    return original(tokenizer_manager, obj, *args, **kwargs)


async def around_openai_handle_request(original, serving: Any, request: Any, raw_request: Any):
    """AROUND hook on ``OpenAIServingBase.handle_request``: ``model="M+method"``."""
    model = getattr(request, "model", None)
    if isinstance(model, str) and "+" in model and hasattr(request, "custom_params"):
        base, _, method = model.rpartition("+")
        served = getattr(serving.tokenizer_manager, "served_model_name", None)
        if model != served and (served is None or base == served):
            from sglang_ilsi import registry

            if method not in registry.catalog() or not config().method_allowed(method):
                enabled = sorted(m for m in registry.catalog() if config().method_allowed(m))
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
    return await original(serving, request, raw_request)


def after_update_request_meta_info(result: Any, tokenizer_manager: Any, meta_info: dict, *a, **k):
    """SGLang accumulates one report per output token (see logits_stage);
    the last one is the request's report as of its latest token."""
    value = meta_info.get("ilsi")
    if isinstance(value, list):
        latest = next((v for v in reversed(value) if v is not None), None)
        if latest is None:
            meta_info.pop("ilsi")
        else:
            meta_info["ilsi"] = latest
    return None


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
