"""Every place sglang-ilsi touches SGLang internals, in one table.

Each entry names a dotted target in SGLang 0.5.23, the hook type (SGLang's
own ``HookRegistry``, or ``PROVIDE``: a module attribute SGLang leaves as
``None`` on this platform, which we fill), and our function. :func:`install`
registers them, applies them at once, and verifies that each target was
really wrapped (or provided):
SGLang only logs hook failures, and a silently missing patch here could
reopen the dill path or drop a method, so a failed patch stops the process.

Besides these patches, the plugin uses one supported extension point, SGLang's
speculative-algorithm registry: ``engine/self_speculative.py`` registers
``SELF_SPECULATIVE``, ``engine/lookahead.py`` registers ``LOOKAHEAD`` and
``engine/contrastive.py`` registers ``SPECULATIVE_CONTRASTIVE``, all on
``engine/spec_algorithm_base.py`` (the three predicates SGLang 0.5.23's
``CustomSpecAlgo`` lacks).
``LOOKAHEAD``'s worker subclasses SGLang's ``NGRAMWorker``; the methods it
overrides are listed in ``engine/lookahead_worker.py``;
``SPECULATIVE_CONTRASTIVE``'s subclasses ``StandaloneWorkerV2``
(``engine/spec_contrastive_worker.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sglang_ilsi.config import IlsiConfig

logger = logging.getLogger(__name__)

SUPPORTED_SGLANG = ("0.5.23",)

# Which processes need a touch point.
MAIN = "main"  # launcher / HTTP server / Engine: tokenizer manager, OpenAI layer
WORKER = "worker"  # scheduler (and other spawned) processes
BOTH = "both"


@dataclass(frozen=True)
class TouchPoint:
    target: str
    kind: str  # HookType name
    hook: Callable[..., Any]
    where: str
    why: str


def _before_server_args_resolve(server_args: Any, *a: Any, **k: Any) -> None:
    # Our own processor travels through SGLang's processor path, which this
    # flag gates; client-sent processors stay refused by our hooks. Only the
    # first call can change it: resolved server args are sealed.
    if not getattr(server_args, "_resolution_finished", False):
        server_args.enable_custom_logit_processor = True


def _around_model_runner_sample(original, model_runner, logits_output, forward_batch, *a, **k):
    from sglang_ilsi.engine.scheduler.logits_stage import record_sampled_tokens

    next_token_ids = original(model_runner, logits_output, forward_batch, *a, **k)
    record_sampled_tokens(forward_batch.sampling_info, next_token_ids)
    return next_token_ids


def _after_init_attention_backends(result: Any, model_runner: Any, *a: Any, **k: Any) -> None:
    from sglang_ilsi.engine.http import api
    from sglang_ilsi.engine.scheduler import companions

    companions.on_runner_ready(model_runner, api.config().aux_models)


def _around_model_runner_forward(original, model_runner, forward_batch, *a, **k):
    from sglang_ilsi.engine.scheduler import companions
    from sglang_ilsi.engine.speculative import contrastive

    output = companions.around_forward(original, model_runner, forward_batch, *a, **k)
    contrastive.after_forward(model_runner, forward_batch, output)
    return output


def _before_req_to_token_free(pool: Any, req: Any, *a: Any, **k: Any) -> None:
    from sglang_ilsi.engine.scheduler import companions

    companions.before_free(pool, req)


def _around_torch_native_forward_extend(original, backend, *a, **k):
    from sglang_ilsi.engine.cpu import verify_attention

    return verify_attention.around_forward_extend(original, backend, *a, **k)


def _around_draft_backend_factory_create(original, factory, *a, **k):
    from sglang_ilsi.engine.cpu import draft_attention

    return draft_attention.around_create_backend(original, factory, *a, **k)


PROVIDE = "PROVIDE"  # our kind: fill a module attribute that is None on this platform
EAGLE_UTILS = "sglang.srt.speculative.eagle_utils."


def _cpu_only_touch_points() -> list[TouchPoint]:
    """Touch points for machines without CUDA (never installed next to a GPU)."""
    from sglang_ilsi.engine.cpu import portability
    from sglang_ilsi.engine.cpu import verify_sampling

    if portability.cuda_available():
        return []
    return [
        TouchPoint(
            EAGLE_UTILS + "_verify_uses_greedy", "REPLACE", verify_sampling.verify_uses_greedy,
            WORKER, "sampled requests under speculative decoding sample on CPU (not argmax)",
        ),
        *(
            TouchPoint(
                EAGLE_UTILS + name, PROVIDE, getattr(spec_sampling_cpu, name), WORKER,
                "the speculative sampling verify path on CPU (SGLang has no CPU kernel)",
            )
            for name in (
                "tree_speculative_sampling_target_only", "top_k_renorm_prob", "top_p_renorm_prob"
            )
        ),
        TouchPoint(
            "sglang.srt.layers.attention.torch_native_backend.TorchNativeAttnBackend."
            "forward_extend", "AROUND", _around_torch_native_forward_extend, WORKER,
            "speculative TARGET_VERIFY (draft tree mask) on torch_native: NGRAM on CPU",
        ),
        TouchPoint(
            "sglang.srt.speculative.draft_utils.DraftBackendFactory._create_backend", "AROUND",
            _around_draft_backend_factory_create, WORKER,
            "draft-model decode/extend attention on torch_native: STANDALONE on CPU",
        ),
    ]


OUTLINES_FILL = "sglang.srt.constrained.outlines_backend.OutlinesGrammar.fill_vocab_mask"


def _grammar_touch_points(config: IlsiConfig) -> list[TouchPoint]:
    """Only on ``--grammar-backend outlines`` servers (importing the backend
    elsewhere would cost every scheduler a second)."""
    if config.grammar_backend != "outlines":
        return []
    from sglang_ilsi.engine.scheduler import outlines_masks

    return [TouchPoint(
        OUTLINES_FILL, "REPLACE", outlines_masks.fill_vocab_mask, WORKER,
        "cache each outlines FSM state's mask row: outlines_core rebuilds the allowed-token "
        "list (11 ms for a broad regex on a 49k vocabulary) at every step",
    )]


def touch_points(config: IlsiConfig) -> list[TouchPoint]:
    from sglang_ilsi.engine import safety
    from sglang_ilsi.engine.http import api

    safe_from_str = safety.make_safe_cache_from_str(config.allow_custom_logit_processor)
    return _cpu_only_touch_points() + _grammar_touch_points(config) + [
        TouchPoint(
            "sglang.srt.server_args.ServerArgs.resolve_once", "BEFORE",
            _before_server_args_resolve, MAIN,
            "turn on SGLang's processor path for our server-side processor",
        ),
        TouchPoint(
            "sglang.srt.sampling.custom_logit_processor._cache_from_str", "REPLACE",
            safe_from_str, BOTH,
            "never dill.loads client bytes; import allow-listed processors by name",
        ),
        TouchPoint(
            "sglang.srt.managers.tokenizer_manager.TokenizerManager.generate_request", "AROUND",
            api.around_generate_request, MAIN,
            "validate method selection (400s), refuse dill processors, attach ours; "
            "expand selection methods into N samples",
        ),
        TouchPoint(
            "sglang.srt.managers.tokenizer_manager.TokenizerManager.update_request_meta_info",
            "AFTER", api.after_update_request_meta_info, MAIN,
            "meta_info.ilsi as one object",
        ),
        TouchPoint(
            "sglang.srt.entrypoints.openai.serving_base.OpenAIServingBase.handle_request",
            "AROUND", api.around_openai_handle_request, MAIN,
            "model='NAME+method' suffix for unchanged OpenAI clients",
        ),
        TouchPoint(
            "sglang.srt.entrypoints.openai.serving_chat.OpenAIServingChat._build_chat_response",
            "AFTER", api.after_build_chat_response, MAIN,
            "ilsi field in chat completion responses",
        ),
        TouchPoint(
            "sglang.srt.entrypoints.openai.serving_completions.OpenAIServingCompletion."
            "_build_completion_response",
            "AFTER", api.after_build_completion_response, MAIN,
            "ilsi field in completion responses",
        ),
        TouchPoint(
            "sglang.srt.entrypoints.openai.serving_chat.OpenAIServingChat._generate_chat_stream",
            "AROUND", api.around_openai_stream, MAIN,
            "ilsi field at the end of streamed chat completions",
        ),
        TouchPoint(
            "sglang.srt.entrypoints.openai.serving_completions.OpenAIServingCompletion."
            "_generate_completion_stream",
            "AROUND", api.around_openai_stream, MAIN,
            "ilsi field at the end of streamed completions",
        ),
        TouchPoint(
            "sglang.srt.model_executor.model_runner.ModelRunner.sample", "AROUND",
            _around_model_runner_sample, WORKER,
            "record each sampled token: exact histories under the overlap scheduler",
        ),
        TouchPoint(
            "sglang.srt.model_executor.model_runner.ModelRunner.init_attention_backends",
            "AFTER", _after_init_attention_backends, WORKER,
            "load --ilsi-aux-model models beside the target, with their KV pools",
        ),
        TouchPoint(
            "sglang.srt.model_executor.model_runner.ModelRunner.forward", "AROUND",
            _around_model_runner_forward, WORKER,
            "aux models, second contexts and early-layer logits after each target forward; "
            "SPECULATIVE_CONTRASTIVE's contrastive logits",
        ),
        TouchPoint(
            "sglang.srt.mem_cache.memory_pool.ReqToTokenPool.free", "BEFORE",
            _before_req_to_token_free, WORKER,
            "free a request's second-context KV slots and row with its own",
        ),
    ]


def sglang_version() -> str:
    try:
        from importlib.metadata import version

        return version("sglang")
    except Exception:
        return "unknown"


def _resolve(target: str) -> Any:
    import pkgutil

    owner, _, attr = target.rpartition(".")
    obj = pkgutil.resolve_name(owner)
    raw = obj.__dict__.get(attr) if isinstance(obj, type) else getattr(obj, attr)
    return getattr(raw, "__func__", raw)


def _provide(target: str, value: Any) -> None:
    """Set a module attribute that SGLang left as ``None`` (never overwrite one it has)."""
    import pkgutil

    owner, _, attr = target.rpartition(".")
    module = pkgutil.resolve_name(owner)
    current = getattr(module, attr)
    if current is None:
        setattr(module, attr, value)
    elif current is not value:
        raise RuntimeError(f"SGLang already provides {attr}; not replacing it")


def install(config: IlsiConfig, role: str) -> list[str]:
    """Register, apply and verify the touch points for this process's role."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    version = sglang_version()
    if version not in SUPPORTED_SGLANG:
        logger.warning(
            "sglang-ilsi was checked against SGLang %s; this is %s. Touch points are "
            "verified below and the process stops if one no longer fits.",
            ", ".join(SUPPORTED_SGLANG), version,
        )
    chosen = [tp for tp in touch_points(config) if tp.where in (role, BOTH)]
    for tp in chosen:
        if tp.kind != PROVIDE:
            HookRegistry.register(tp.target, tp.hook, HookType[tp.kind])
    HookRegistry.apply_hooks()
    broken = []
    for tp in chosen:
        try:
            if tp.kind == PROVIDE:
                _provide(tp.target, tp.hook)
            current = _resolve(tp.target)
        except Exception as e:  # target moved or renamed
            broken.append(f"{tp.target} ({e})")
            continue
        ok = current is tp.hook if tp.kind == PROVIDE else (
            getattr(current, "__wrapped__", None) is not None)
        if not ok:
            broken.append(tp.target)
    if broken:
        raise SystemExit(
            "sglang-ilsi: could not patch SGLang " + version + " at: " + ", ".join(broken)
            + ". This SGLang version is not supported; uninstall sglang-ilsi or disable it."
        )
    return [tp.target for tp in chosen]
