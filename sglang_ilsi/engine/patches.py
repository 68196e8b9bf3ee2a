"""Every place sglang-ilsi touches SGLang internals, in one table.

Each :class:`TouchPoint` names a dotted target in SGLang, its kind, the
processes that need it and why. Two families of kinds:

* **Hooks** change SGLang: ``AROUND``/``BEFORE``/``AFTER``/``REPLACE`` go
  through SGLang's own ``HookRegistry``; ``PROVIDE`` (ours) fills a module
  attribute SGLang leaves as ``None`` on this platform. :func:`install`
  registers and applies them, then verifies that each target was really
  wrapped (or provided). SGLang only logs hook failures, and a silently
  missing patch could reopen the dill path or drop a method, so a hook that
  did not take stops the process, always.
* **Checks** change nothing; they state what the plugin's own code relies on
  and :func:`install` verifies it at start-up, cheaply (attribute look-ups and
  ``inspect.signature`` on modules that process imports anyway):
  ``OVERRIDE`` (a method a plugin subclass overrides: its parameter names,
  exactly), ``SIGNATURE`` (a callable the plugin calls: the leading positional
  parameter names, then after ``"*"`` the keyword names it passes),
  ``ATTRIBUTE`` (a dotted name that must exist), ``CODE`` (strings the target's
  code must use, e.g. a dict key SGLang fills) and ``STAND_IN`` (a name SGLang's
  CPU path imports from ``sgl_kernel``, which must be our stand-in's).

The SGLang versions the table was checked against are declared once, in
:data:`SUPPORTED_SGLANG`. Another version, or a failed check, refuses to start
(``SystemExit`` naming each failed touch point) unless the operator passes
:data:`ALLOW_FLAG`, which turns the refusal into a logged warning.

Entries that only matter for one launch configuration (a speculative
algorithm of ours, the outlines grammar backend, a machine without CUDA) are
in the table only then, so that no process imports what SGLang itself would
not import there.
"""

from __future__ import annotations

import inspect
import logging
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from sglang_ilsi.config import IlsiConfig

logger = logging.getLogger(__name__)

# The SGLang releases every entry below was checked against.
SUPPORTED_SGLANG = SpecifierSet(">=0.5.23,<0.5.24")
# The launch flag that turns a refusal (version or failed check) into a warning.
ALLOW_FLAG = "--ilsi-allow-unsupported-sglang"

# Which processes need a touch point.
MAIN = "main"  # launcher / HTTP server / Engine: tokenizer manager, OpenAI layer
WORKER = "worker"  # scheduler (and other spawned) processes
BOTH = "both"

# Kinds that change SGLang (SGLang's HookType names, and ours).
HOOK_KINDS = ("AROUND", "BEFORE", "AFTER", "REPLACE")
PROVIDE = "PROVIDE"  # fill a module attribute that is None on this platform
# Kinds that only check what the plugin relies on.
OVERRIDE = "OVERRIDE"
SIGNATURE = "SIGNATURE"
ATTRIBUTE = "ATTRIBUTE"
CODE = "CODE"
STAND_IN = "STAND_IN"
CHECK_KINDS = (OVERRIDE, SIGNATURE, ATTRIBUTE, CODE, STAND_IN)


@dataclass(frozen=True)
class TouchPoint:
    """One dependency on SGLang.

    ``hook`` is our function for hook kinds and ``PROVIDE`` (``None`` for
    checks); ``names`` is what a check relies on: parameter names for
    ``OVERRIDE``/``SIGNATURE``, strings for ``CODE``, the stand-in's own name
    for ``STAND_IN``."""

    target: str
    kind: str
    hook: Callable[..., Any] | None
    where: str
    why: str
    names: tuple[str, ...] = ()


def _check(kind: str, target: str, where: str, why: str,
           names: tuple[str, ...] = ()) -> TouchPoint:
    """A check entry (it has no hook)."""
    return TouchPoint(target, kind, None, where, why, names)


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

    companions.on_runner_ready(model_runner, api.config().aux_models, api.config().datastores)


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


def _around_init_model_parallel_group(original, *a, **k):
    # Without CUDA there is no NCCL: SGLang's in-tree CPU platform still asks for
    # a PyNccl communicator per group (it only skips that for out-of-tree
    # platforms), which dies on "Expected a cuda device". The groups' collectives
    # then run on the gloo device group SGLang creates for CPU anyway.
    k["use_pynccl"] = False
    return original(*a, **k)


EAGLE_UTILS = "sglang.srt.speculative.eagle_utils."
DISTRIBUTED = "sglang.srt.distributed."


def _cpu_only_touch_points() -> list[TouchPoint]:
    """Touch points for machines without CUDA (never installed next to a GPU)."""
    from sglang_ilsi.engine.cpu import portability, verify_sampling

    if portability.cuda_available():
        return []
    return [
        TouchPoint(
            DISTRIBUTED + "parallel_state.init_model_parallel_group", "AROUND",
            _around_init_model_parallel_group, WORKER,
            "--tp-size/--dp-size above 1 on CPU: gloo collectives, no PyNccl communicator",
        ),
        TouchPoint(
            EAGLE_UTILS + "_verify_uses_greedy", "REPLACE", verify_sampling.verify_uses_greedy,
            WORKER, "sampled requests under speculative decoding sample on CPU (not argmax)",
        ),
        *(
            TouchPoint(
                EAGLE_UTILS + name, PROVIDE, getattr(verify_sampling, name), WORKER,
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
        *(
            _check(STAND_IN, f"{module}.{bound}", WORKER,
                   "SGLang's CPU path imports it from sgl_kernel at module import; "
                   "engine/cpu/shim provides it (the CUDA-only wheel cannot)", (ours,))
            for module, bound, ours in SGL_KERNEL_CPU_IMPORTS
        ),
    ]


# (SGLang module, the name it binds, our stand-in's name): every name SGLang's
# CPU path imports from the top-level sgl_kernel package at module import.
# Not here: sgl_kernel.mamba (linear-attention models, not served on CPU) and
# build_draft_decode_metadata_cpu, imported inside the AMX backend's
# constructor (the stand-in has it, but the AMX backend never runs with it).
SGL_KERNEL_CPU_IMPORTS: tuple[tuple[str, str, str], ...] = (
    ("sglang.srt.mem_cache.allocation", "assign_req_to_token_pool_cpu",
     "assign_req_to_token_pool_cpu"),
    ("sglang.kernels.ops.kvcache.cache_move", "copy_all_layer_kv_cache_cpu",
     "copy_all_layer_kv_cache_cpu"),
    ("sglang.kernels.ops.speculative.cache_locs", "assign_draft_cache_locs_contiguous_cpu",
     "assign_draft_cache_locs_contiguous_cpu"),
    ("sglang.kernels.ops.speculative.cache_locs", "assign_extend_cache_locs_cpu",
     "assign_extend_cache_locs_cpu"),
    ("sglang.kernels.ops.speculative.eagle", "fill_accept_out_cache_loc_cpu",
     "fill_accept_out_cache_loc_cpu"),
    ("sglang.kernels.ops.speculative.eagle", "fill_bonus_tokens_cpu", "fill_bonus_tokens_cpu"),
    ("sglang.kernels.ops.speculative.multi_layer_eagle", "rotate_input_ids_cpu",
     "rotate_input_ids_cpu"),
    ("sglang.kernels.ops.speculative.spec_tree", "sgl_build_tree_kernel_efficient_cpu",
     "build_tree_kernel_efficient_cpu"),
    ("sglang.kernels.ops.speculative.spec_tree", "sgl_verify_tree_greedy_cpu",
     "verify_tree_greedy_cpu"),
)


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


SPEC_INFO = "sglang.srt.speculative.spec_info."
SPEC_REGISTRY = "sglang.srt.speculative.spec_registry."
NGRAM_WORKER = "sglang.srt.speculative.ngram_worker.NGRAMWorker."
NGRAM_CORPUS = "sglang.srt.speculative.cpp_ngram.ngram_corpus.NgramCorpus."
STANDALONE_WORKER = "sglang.srt.speculative.standalone_worker_v2.StandaloneWorkerV2"
SERVER_ARGS = "sglang.srt.server_args.ServerArgs."
FORWARD_BATCH_INFO = "sglang.srt.model_executor.forward_batch_info."
FORWARD_CONTEXT = "sglang.srt.model_executor.forward_context."
SCHEMA_VALIDATION = "sglang.srt.constrained.json_schema_validation."

# Our algorithms (``--speculative-algorithm``) and the SGLang worker each builds on.
LOOKAHEAD = "LOOKAHEAD"
SELF_SPECULATIVE = "SELF_SPECULATIVE"
SPECULATIVE_CONTRASTIVE = "SPECULATIVE_CONTRASTIVE"


def _speculative_registry_touch_points() -> list[TouchPoint]:
    """SGLang's speculative-algorithm registry (engine/speculative/algorithm_base.py):
    every process registers our three algorithms at start-up."""
    return [
        _check(SIGNATURE, SPEC_INFO + "SpeculativeAlgorithm.register", BOTH,
               "register_algorithm: register(name, supports_overlap=, spec_class=)",
               ("name", "*", "supports_overlap", "spec_class")),
        _check(SIGNATURE, SPEC_REGISTRY + "get_spec", BOTH,
               "register_algorithm: get_spec(name) makes registration idempotent", ("name",)),
        *(
            _check(OVERRIDE, SPEC_REGISTRY + "CustomSpecAlgo." + predicate, BOTH,
                   "our spec classes answer it to take one of SGLang's built-in paths",
                   ("self",))
            for predicate in ("is_standalone", "is_ngram", "has_draft_kv")
        ),
        _check(OVERRIDE, SPEC_REGISTRY + "CustomSpecAlgo.handle_server_args", BOTH,
               "our spec classes adjust or refuse the launch flags",
               ("self", "server_args")),
        *(
            _check(OVERRIDE, SPEC_INFO + "SpeculativeAlgorithm." + method, BOTH,
                   "PluginSpecAlgo mirrors the built-in algorithms' answer "
                   "(CustomSpecAlgo lacks it; the scheduler calls it)", ("self",))
            for method in ("need_topk", "carries_draft_hidden_states")
        ),
        _check(OVERRIDE, SPEC_INFO + "SpeculativeAlgorithm.create_future_map", BOTH,
               "PluginSpecAlgo mirrors it (CustomSpecAlgo lacks it; the scheduler calls it)",
               ("self", "device", "req_to_token_pool", "needs_cpu_seq_lens",
                "needs_confidence_relay")),
    ]


def _speculative_worker_touch_points(config: IlsiConfig) -> list[TouchPoint]:
    """The SGLang workers under our algorithms: only when one is launched (the
    scheduler imports the worker's module then anyway)."""
    algorithm = (config.speculative_algorithm or "").upper()
    entries: list[TouchPoint] = []
    if algorithm in (LOOKAHEAD, SELF_SPECULATIVE, SPECULATIVE_CONTRASTIVE):
        entries.append(_check(
            SIGNATURE, "sglang.srt.managers.overlap_utils.FutureMap.__init__", WORKER,
            "PluginSpecAlgo.create_future_map passes these positionally",
            ("self", "device", "spec_algo", "req_to_token_pool", "needs_cpu_seq_lens",
             "needs_confidence_relay")))
    if algorithm == LOOKAHEAD:
        entries += [
            _check(OVERRIDE, NGRAM_WORKER + "__init__", WORKER,
                   "LookaheadWorker subclasses NGRAMWorker",
                   ("self", "server_args", "gpu_id", "nccl_port", "target_worker")),
            _check(OVERRIDE, NGRAM_WORKER + "_prepare_draft_tokens", WORKER,
                   "LookaheadWorker builds each step's draft tree (pool + Jacobi window)",
                   ("self", "batch")),
            _check(OVERRIDE, NGRAM_WORKER + "forward_batch_generation", WORKER,
                   "LookaheadWorker advances the windows after each verify",
                   ("self", "batch", "on_publish", "pp_proxy_tensors")),
            _check(OVERRIDE, NGRAM_WORKER + "clear_cache_pool", WORKER,
                   "LookaheadWorker drops its windows on /flush_cache", ("self",)),
            _check(CODE, NGRAM_WORKER + "__init__", WORKER,
                   "LookaheadWorker reads these attributes the base sets",
                   ("draft_token_num", "max_trie_depth", "enable_overlap")),
            _check(SIGNATURE, NGRAM_CORPUS + "__init__", WORKER,
                   "LookaheadWorker builds its own trie for the pool's share of drafts",
                   ("self", "*", "max_trie_depth", "min_bfs_breadth", "max_bfs_breadth",
                    "draft_token_num", "match_type", "capacity")),
            _check(SIGNATURE, NGRAM_CORPUS + "batch_get", WORKER,
                   "LookaheadWorker asks the trie for drafts",
                   ("self", "req_ids", "batch_tokens", "total_lens")),
            _check(SIGNATURE, NGRAM_CORPUS + "batch_put", WORKER,
                   "LookaheadWorker feeds the trie the windows' n-grams",
                   ("self", "batch_tokens")),
            _check(SIGNATURE, NGRAM_CORPUS + "synchronize", WORKER,
                   "LookaheadWorker waits for pending inserts before a lookup", ("self",)),
            _check(ATTRIBUTE, "sglang.srt.runtime_context.get_spec", WORKER,
                   "LookaheadWorker reads the n-gram flags from the spec bag"),
            *(
                _check(ATTRIBUTE, SERVER_ARGS + "speculative_ngram_" + flag, WORKER,
                       "LookaheadWorker's trie takes the n-gram flags as SGLang's does")
                for flag in ("min_bfs_breadth", "max_bfs_breadth", "match_type", "capacity",
                             "max_trie_depth")
            ),
        ]
    if algorithm == SELF_SPECULATIVE:
        entries.append(_check(
            ATTRIBUTE, STANDALONE_WORKER, WORKER,
            "SELF_SPECULATIVE's worker is SGLang's draft-model worker, unchanged"))
    if algorithm == SPECULATIVE_CONTRASTIVE:
        entries += [
            _check(OVERRIDE, STANDALONE_WORKER + ".__init__", WORKER,
                   "SpeculativeContrastiveWorker subclasses StandaloneWorkerV2",
                   ("self", "server_args", "gpu_id", "nccl_port", "target_worker")),
            _check(OVERRIDE, STANDALONE_WORKER + ".forward_batch_generation", WORKER,
                   "SpeculativeContrastiveWorker opens the contrast stage around each step",
                   ("self", "batch", "on_publish", "grammar_barrier", "pp_proxy_tensors")),
            _check(CODE, STANDALONE_WORKER + ".__init__", WORKER,
                   "SpeculativeContrastiveWorker reads the draft length the base sets",
                   ("speculative_num_draft_tokens",)),
            *(
                _check(ATTRIBUTE, STANDALONE_WORKER + "." + worker, WORKER,
                       "SpeculativeContrastiveWorker opens the stage on both models")
                for worker in ("target_worker", "draft_worker")
            ),
            _check(CODE, "sglang.srt.speculative.standalone_worker_v2.StandaloneDraftWorker."
                   "__init__", WORKER, "the stage runs the amateur on the draft's runner",
                   ("draft_runner",)),
        ]
    return entries


def _forward_touch_points() -> list[TouchPoint]:
    """What engine/scheduler/sglang_forward.py builds or calls by hand: extra
    forwards for aux models, second contexts and early-layer logits (modules
    every scheduler imports with its ModelRunner)."""
    return [
        _check(SIGNATURE, FORWARD_BATCH_INFO + "ForwardBatch", WORKER,
               "extend_batch builds an EXTEND batch by keyword; all_positions_view and "
               "companions read or set the other fields",
               ("*", "forward_mode", "batch_size", "input_ids", "req_pool_indices", "seq_lens",
                "seq_lens_cpu", "seq_lens_sum", "out_cache_loc", "positions",
                "extend_num_tokens", "extend_seq_lens", "extend_prefix_lens",
                "extend_start_loc", "extend_seq_lens_cpu", "extend_prefix_lens_cpu",
                "extend_logprob_start_lens_cpu", "return_logprob", "capture_hidden_mode",
                "spec_algorithm", "spec_info", "sampling_info", "next_token_logits_buffer")),
        _check(ATTRIBUTE, FORWARD_BATCH_INFO + "ForwardMode.EXTEND", WORKER,
               "extend_batch's forward mode"),
        _check(ATTRIBUTE, FORWARD_BATCH_INFO + "CaptureHiddenMode.NULL", WORKER,
               "extra forwards capture no hidden states"),
        _check(SIGNATURE, FORWARD_CONTEXT + "ForwardContext", WORKER,
               "run_forward binds the second model's attention backend",
               ("*", "attn_backend")),
        _check(SIGNATURE, FORWARD_CONTEXT + "forward_context", WORKER,
               "run_forward enters SGLang's forward context", ("ctx", "*", "forward_batch")),
        _check(SIGNATURE, "sglang.srt.mem_cache.memory_pool.MHATokenToKVPool.__init__",
               WORKER, "kv_cache_beside: a KV pool for a second model",
               ("self", "*", "size", "page_size", "dtype", "head_num", "head_dim",
                "layer_num", "device", "enable_memory_saver")),
        _check(SIGNATURE, "sglang.srt.layers.attention.torch_native_backend."
               "TorchNativeAttnBackend.__init__", WORKER,
               "kv_cache_beside: the second model's attention backend on a runner stand-in",
               ("self", "model_runner")),
        _check(SIGNATURE, "sglang.srt.configs.model_config.ModelConfig.from_server_args",
               WORKER, "load_aux_model: the aux model's config from the target's flags",
               ("server_args", "*", "model_path", "context_length")),
        _check(SIGNATURE, "sglang.srt.model_loader.get_model", WORKER,
               "load_aux_model: SGLang's loader",
               ("*", "model_config", "load_config", "device_config")),
        _check(SIGNATURE, "sglang.srt.configs.load_config.LoadConfig", WORKER,
               "load_aux_model", ("*", "load_format")),
        _check(SIGNATURE, "sglang.srt.configs.update_config.adjust_config_with_unaligned_cpu_tp",
               WORKER, "load_aux_model on CPU under --tp-size: pad head counts the TP size "
               "does not divide, as SGLang does for the target",
               ("model_config", "load_config", "tp_size")),
        _check(SIGNATURE, DISTRIBUTED + "parallel_state.get_tensor_model_parallel_world_size",
               WORKER, "sglang_forward.tp_size: aux KV pools hold this rank's heads", ()),
        _check(SIGNATURE, DISTRIBUTED + "communication_op.tensor_model_parallel_all_gather",
               WORKER,
               "early_exit_logits gathers the LM head's vocabulary shards under --tp-size",
               ("input_", "dim")),
        _check(SIGNATURE, "sglang.srt.configs.device_config.DeviceConfig", WORKER,
               "load_aux_model", ("device",)),
        _check(SIGNATURE, "sglang.srt.layers.layer_boundary.residual.batch.snapshot", WORKER,
               "capture_stream_before: the completed residual stream entering a layer",
               ("hidden_states", "forward_batch")),
        _check(SIGNATURE, "sglang.srt.layers.logits_processor.LogitsProcessor.forward", WORKER,
               "capture_final_hidden: a datastore's keys at the final layer are the normed "
               "hidden states the model hands its logits processor (second argument)",
               ("self", "input_ids", "hidden_states")),
    ]


def _request_touch_points() -> list[TouchPoint]:
    """SGLang data the plugin reads outside hooks."""
    return [
        _check(CODE, "sglang.srt.managers.schedule_batch.Req.__init__", WORKER,
               "SGLang puts the Req under custom_params['__req__'] for custom logit "
               "processors; the logits stage and companions find each row's request there",
               ("__req__",)),
        _check(CODE, "sglang.srt.managers.schedule_batch.Req.__init__", WORKER,
               "a forward whose extend_end stops short of origin_input_ids prefills a middle "
               "chunk: its sampled token is discarded, so the logits stage does not count it",
               ("extend_end", "origin_input_ids")),
        *(
            _check(ATTRIBUTE, SCHEMA_VALIDATION + check, MAIN,
                   "grammars.py refuses JSON-schema keywords the backend would ignore")
            for check in ("validate_xgrammar_json_schema", "validate_outlines_json_schema")
        ),
    ]


def touch_points(config: IlsiConfig) -> list[TouchPoint]:
    """The table: every touch point this launch configuration has."""
    return (_cpu_only_touch_points() + _grammar_touch_points(config)
            + _hook_touch_points(config) + _speculative_registry_touch_points()
            + _speculative_worker_touch_points(config) + _forward_touch_points()
            + _request_touch_points() + _route_touch_points())


HTTP_SERVER = "sglang.srt.entrypoints.http_server."


def _route_touch_points() -> list[TouchPoint]:
    """``GET /ilsi/methods[/NAME]`` on SGLang's FastAPI app (engine/http/routes.py)."""
    from sglang_ilsi.engine.http import routes

    return [
        TouchPoint(
            HTTP_SERVER + "_setup_and_run_http_server", "BEFORE", routes.before_http_server,
            MAIN, "add GET /ilsi/methods[/NAME] (the catalog, with this server's "
            "availability) to the app before it serves; checks no route answers them first",
        ),
        _check(SIGNATURE, HTTP_SERVER + "_setup_and_run_http_server", MAIN,
               "routes.before_http_server takes the tokenizer manager positionally",
               ("server_args", "tokenizer_manager")),
        _check(ATTRIBUTE, HTTP_SERVER + "app.add_api_route", MAIN,
               "the catalog routes are added to SGLang's FastAPI app"),
    ]


def _hook_touch_points(config: IlsiConfig) -> list[TouchPoint]:
    """The hooks every launch has."""
    from sglang_ilsi.engine import safety
    from sglang_ilsi.engine.http import api

    safe_from_str = safety.make_safe_cache_from_str(config.allow_custom_logit_processor)
    return [
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


def version_problem(version: str) -> str | None:
    """Why ``version`` is outside :data:`SUPPORTED_SGLANG`, or None."""
    try:
        if SUPPORTED_SGLANG.contains(Version(version), prereleases=True):
            return None
    except InvalidVersion:
        pass
    return f"SGLang {version} is outside the supported range {SUPPORTED_SGLANG}"


def _resolve(target: str) -> Any:
    owner, _, attr = target.rpartition(".")
    obj = pkgutil.resolve_name(owner)
    raw = obj.__dict__.get(attr) if isinstance(obj, type) else getattr(obj, attr)
    return getattr(raw, "__func__", raw)


def _provide(target: str, value: Any) -> None:
    """Set a module attribute that SGLang left as ``None`` (never overwrite one it has)."""
    owner, _, attr = target.rpartition(".")
    module = pkgutil.resolve_name(owner)
    current = getattr(module, attr)
    if current is None:
        setattr(module, attr, value)
    elif current is not value:
        raise RuntimeError(f"SGLang already provides {attr}; not replacing it")


def _parameter_names(target: str) -> list[str]:
    """The parameter names of the callable at ``target``, as
    ``inspect.signature`` reports them (a class: its constructor, without
    ``self``; hooks' wrappers are followed to the original)."""
    return list(inspect.signature(pkgutil.resolve_name(target)).parameters)


def _code_strings(code: CodeType) -> set[str]:
    """Every name and string constant a code object (and those nested in it) uses."""
    found = set(code.co_names) | {c for c in code.co_consts if isinstance(c, str)}
    for const in code.co_consts:
        if isinstance(const, CodeType):
            found |= _code_strings(const)
    return found


def verify(tp: TouchPoint) -> str | None:
    """Check one check entry against the running SGLang: None if it holds,
    else what no longer fits. Resolves attributes and signatures only."""
    try:
        if tp.kind == ATTRIBUTE:
            pkgutil.resolve_name(tp.target)
            return None
        if tp.kind == OVERRIDE:
            actual = _parameter_names(tp.target)
            if actual != list(tp.names):
                return f"parameters are now {actual}, the plugin overrides {list(tp.names)}"
            return None
        if tp.kind == SIGNATURE:
            return _signature_problem(_parameter_names(tp.target), tp.names)
        if tp.kind == CODE:
            function = inspect.unwrap(pkgutil.resolve_name(tp.target))
            missing = [n for n in tp.names if n not in _code_strings(function.__code__)]
            return f"its code no longer uses {missing}" if missing else None
        if tp.kind == STAND_IN:
            return _stand_in_problem(tp)
    except Exception as e:  # moved, renamed, or not introspectable any more
        return f"{type(e).__name__}: {e}"
    raise ValueError(f"{tp.target}: {tp.kind} is not a check kind")


def _signature_problem(actual: list[str], expected: tuple[str, ...]) -> str | None:
    """``expected`` = leading positional names, then ``"*"``, then keyword names."""
    star = expected.index("*") if "*" in expected else len(expected)
    positional, keywords = list(expected[:star]), expected[star + 1:]
    if actual[:len(positional)] != positional:
        return (f"leading parameters are now {actual[:len(positional)]}, the plugin passes "
                f"{positional} positionally")
    missing = [name for name in keywords if name not in actual]
    return f"no parameter(s) {missing} any more" if missing else None


def _stand_in_problem(tp: TouchPoint) -> str | None:
    """SGLang's module binds our stand-in's function (only while the stand-in is
    the ``sgl_kernel`` in use: a real CPU build is SGLang's business)."""
    import sgl_kernel

    from sglang_ilsi.engine.cpu import portability

    if not str(getattr(sgl_kernel, "__file__", "")).startswith(portability.SHIM_DIR):
        return None
    ours = getattr(sgl_kernel, tp.names[0], None)
    if ours is None:
        return f"the sgl_kernel stand-in has no {tp.names[0]}"
    if pkgutil.resolve_name(tp.target) is not ours:
        return f"SGLang binds something other than the stand-in's {tp.names[0]}"
    return None


def _apply_hooks(hooks: list[TouchPoint]) -> list[str]:
    """Register and apply the hook entries; the targets not wrapped (or provided)."""
    if not hooks:
        return []
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    for tp in hooks:
        if tp.kind != PROVIDE:
            HookRegistry.register(tp.target, tp.hook, HookType[tp.kind])
    HookRegistry.apply_hooks()
    broken = []
    for tp in hooks:
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
    return broken


def install(config: IlsiConfig, role: str) -> list[str]:
    """Register, apply and verify the touch points for this process's role.

    A hook that did not take stops the process. A version outside
    :data:`SUPPORTED_SGLANG` or a failed check stops it too, unless the
    operator passed :data:`ALLOW_FLAG` (then each is logged as a warning)."""
    version = sglang_version()
    chosen = [tp for tp in touch_points(config) if tp.where in (role, BOTH)]
    problems = [p for p in (version_problem(version),) if p]
    problems += [f"{tp.target} ({tp.kind}: {tp.why}): {problem}" for tp in chosen
                 if tp.kind in CHECK_KINDS and (problem := verify(tp)) is not None]
    broken = _apply_hooks([tp for tp in chosen if tp.kind not in CHECK_KINDS])
    if broken:
        raise SystemExit(
            "sglang-ilsi: could not patch SGLang " + version + " at: " + ", ".join(broken)
            + ". This SGLang version is not supported; uninstall sglang-ilsi or disable it."
            + "".join(f"\n  - {p}" for p in problems)
        )
    if problems:
        listed = "".join(f"\n  - {p}" for p in problems)
        if not config.allow_unsupported_sglang:
            raise SystemExit(
                f"sglang-ilsi: refusing to start: SGLang {version} does not match what the "
                f"plugin was checked against ({SUPPORTED_SGLANG}):{listed}\nInstall a "
                f"supported SGLang, or pass {ALLOW_FLAG} (in SGLANG_ILSI_ARGS for "
                f"sglang.Engine) to start anyway at your own risk."
            )
        logger.warning("sglang-ilsi: starting on SGLang %s despite (%s):%s", version,
                       ALLOW_FLAG, listed)
    return [tp.target for tp in chosen]
