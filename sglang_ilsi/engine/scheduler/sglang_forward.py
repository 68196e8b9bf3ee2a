"""SGLang internals used to run extra forwards inside the scheduler: the one
place (beside :mod:`sglang_ilsi.engine.patches`) that builds SGLang objects by
hand. Each function names the SGLang pieces it relies on; their signatures and
attributes are entries of the touch-point table in ``engine/patches.py``,
verified at start-up against the running SGLang (supported versions:
``patches.SUPPORTED_SGLANG``).

- :func:`extend_batch` builds an EXTEND-mode ``ForwardBatch`` for a few
  sequences whose KV-cache slots the caller has set in the request-to-token
  table (``forward_batch_info.ForwardBatch``; the torch-native attention backend
  reads ``req_pool_indices``, ``seq_lens``, ``extend_prefix_lens``,
  ``extend_seq_lens`` and ``out_cache_loc``; the logits processor keeps the last
  position of each sequence, ``layers/logits_processor.py``).
- :func:`run_forward` runs a model on it under SGLang's forward context
  (``model_executor/forward_context.py``), returning last-position logits.
- :func:`load_aux_model` loads a second model with SGLang's loader
  (``model_loader.get_model``) and gives it its own KV pool
  (:func:`kv_cache_beside`: ``mem_cache.memory_pool.MHATokenToKVPool``, same
  slot count as the target's, so the aux model can use the target's slot
  indices) and its own torch-native attention backend.
- Under tensor parallelism (``--tp-size``), an aux model is sharded with the
  target's TP group: SGLang's parallel layers read the group SGLang set up
  (``distributed.parallel_state.get_tensor_model_parallel_world_size``), its KV pool holds
  this rank's heads, and on CPU its config is padded for head counts the TP
  size does not divide, as SGLang pads the target's
  (``configs.update_config.adjust_config_with_unaligned_cpu_tp``).
  :func:`early_exit_logits` gathers its vocabulary shards over the group
  (``distributed.communication_op.tensor_model_parallel_all_gather``), as SGLang's logits
  processor does for the final layer.
- :func:`all_positions_view` turns the target's ``TARGET_VERIFY`` batch into
  one a second model can run (``spec_info.draft_token_num``; the logits
  processor keeps every position in verify mode).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

logger = logging.getLogger(__name__)


def extend_batch(like: Any, *, req_pool_indices: list[int], prefix_lens: list[int],
                 token_lists: list[list[int]], out_cache_loc: torch.Tensor) -> Any:
    """An EXTEND ``ForwardBatch``: sequence i has ``prefix_lens[i]`` tokens already
    in the KV cache and extends by ``token_lists[i]`` (whose slots are the
    matching run of ``out_cache_loc``). ``like`` (the target's batch) gives the
    device and index dtypes."""
    from sglang.srt.model_executor.forward_batch_info import (
        CaptureHiddenMode,
        ForwardBatch,
        ForwardMode,
    )

    device = like.input_ids.device
    ext = [len(t) for t in token_lists]
    seq = [p + e for p, e in zip(prefix_lens, ext)]
    flat = [tok for toks in token_lists for tok in toks]
    positions = [p + j for p, e in zip(prefix_lens, ext) for j in range(e)]
    starts = [0]
    for e in ext[:-1]:
        starts.append(starts[-1] + e)
    idx_dtype = like.seq_lens.dtype
    return ForwardBatch(
        forward_mode=ForwardMode.EXTEND,
        batch_size=len(token_lists),
        input_ids=torch.tensor(flat, dtype=like.input_ids.dtype, device=device),
        req_pool_indices=torch.tensor(req_pool_indices, dtype=like.req_pool_indices.dtype,
                                      device=device),
        seq_lens=torch.tensor(seq, dtype=idx_dtype, device=device),
        seq_lens_cpu=torch.tensor(seq, dtype=idx_dtype),
        seq_lens_sum=sum(seq),
        out_cache_loc=out_cache_loc.to(device=device, dtype=like.out_cache_loc.dtype),
        positions=torch.tensor(positions, dtype=torch.int64, device=device),
        extend_num_tokens=len(flat),
        extend_seq_lens=torch.tensor(ext, dtype=torch.int32, device=device),
        extend_prefix_lens=torch.tensor(prefix_lens, dtype=torch.int32, device=device),
        extend_start_loc=torch.tensor(starts, dtype=torch.int32, device=device),
        extend_seq_lens_cpu=ext,
        extend_prefix_lens_cpu=list(prefix_lens),
        extend_logprob_start_lens_cpu=list(ext),
        return_logprob=False,
        capture_hidden_mode=CaptureHiddenMode.NULL,
        spec_algorithm=like.spec_algorithm,
    )


def run_forward(model: Any, attn_backend: Any, batch: Any) -> torch.Tensor:
    """``model.forward`` on ``batch`` with ``attn_backend``; the ``[batch_size,
    vocab]`` float32 logits of each sequence's last position."""
    from sglang.srt.model_executor.forward_context import ForwardContext, forward_context

    attn_backend.init_forward_metadata(batch)
    with torch.inference_mode(), forward_context(ForwardContext(attn_backend=attn_backend),
                                                 forward_batch=batch):
        out = model.forward(batch.input_ids, batch.positions, batch)
    return out.next_token_logits.float()


@dataclass
class AuxModel:
    """A co-resident auxiliary model: weights, a KV pool indexed like the
    target's, and the attention backend bound to that pool. ``valid[s]`` says
    whether the aux KV in slot ``s`` was computed for the token the target
    currently holds there (cleared for slots the target writes anew)."""

    name: str
    path: str
    model: Any
    kv_pool: Any
    attn_backend: Any
    valid: torch.Tensor
    vocab_size: int
    num_layers: int
    kv_bytes: int


def tp_size() -> int:
    """This rank's tensor-parallel group size (1 without ``--tp-size``)."""
    from sglang.srt.distributed.parallel_state import get_tensor_model_parallel_world_size

    return int(get_tensor_model_parallel_world_size())


def _kv_pool_for(model_config: Any, size: int, page_size: int, dtype: torch.dtype,
                 device: str) -> Any:
    from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool

    hf = model_config.hf_text_config
    heads = model_config.get_num_kv_heads(tp_size())  # this rank's share
    return MHATokenToKVPool(
        size=size,
        page_size=page_size,
        dtype=dtype,
        head_num=heads,
        head_dim=model_config.head_dim,
        layer_num=hf.num_hidden_layers,
        device=device,
        enable_memory_saver=False,
    )


def kv_cache_beside(model_config: Any, target_runner: Any) -> tuple[Any, Any, torch.Tensor, int]:
    """A KV pool for a second model, indexed like ``target_runner``'s (same slot
    count, so the model writes at the target's slot indices), the
    ``torch_native`` attention backend bound to it, an all-false ``valid``
    mask per slot, and the pool's size in bytes."""
    from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend

    target_pool = target_runner.token_to_kv_pool
    size = int(target_pool.size)
    pool = _kv_pool_for(model_config, size, int(getattr(target_pool, "page_size", 1)),
                        target_pool.dtype, target_runner.device)
    shim = SimpleNamespace(device=target_runner.device,
                           req_to_token_pool=target_runner.req_to_token_pool,
                           token_to_kv_pool=pool)
    kv_bytes = sum(t.numel() * t.element_size() for t in (*pool.k_buffer, *pool.v_buffer))
    valid = torch.zeros(size + page_size_pad(target_pool), dtype=torch.bool)
    return pool, TorchNativeAttnBackend(shim), valid, kv_bytes


def load_aux_model(name: str, path: str, target_runner: Any) -> AuxModel:
    """Load ``path`` as an auxiliary model beside ``target_runner``'s model.

    Raises ``SystemExit`` with a clear message when its vocabulary size
    differs from the target's."""
    from sglang.srt.configs.device_config import DeviceConfig
    from sglang.srt.configs.load_config import LoadConfig
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.model_loader import get_model

    target_config = target_runner.model_config
    config = ModelConfig.from_server_args(target_runner.server_args, model_path=path,
                                          context_length=target_config.context_len)
    if config.vocab_size != target_config.vocab_size:
        raise SystemExit(
            f"sglang-ilsi: --ilsi-aux-model {name}: vocabulary size {config.vocab_size} "
            f"differs from the target's {target_config.vocab_size}; the auxiliary model "
            "must use the target's tokenizer")
    device = target_runner.device
    load_config = LoadConfig(load_format="auto")
    if device == "cpu":
        from sglang.srt.configs.update_config import adjust_config_with_unaligned_cpu_tp

        config = adjust_config_with_unaligned_cpu_tp(config, load_config, tp_size())
    model = get_model(model_config=config, load_config=load_config,
                      device_config=DeviceConfig(device))
    model.eval()
    pool, backend, valid, kv_bytes = kv_cache_beside(config, target_runner)
    logger.info("sglang-ilsi: auxiliary model %r loaded from %s (%d layers; KV pool of %d "
                "slots, %.1f MB)", name, path, config.hf_text_config.num_hidden_layers,
                int(pool.size), kv_bytes / 2**20)
    return AuxModel(
        name=name, path=path, model=model, kv_pool=pool, attn_backend=backend,
        valid=valid, vocab_size=config.vocab_size,
        num_layers=config.hf_text_config.num_hidden_layers,
        kv_bytes=kv_bytes,
    )


def valid_prefix(valid: torch.Tensor, slots: torch.Tensor) -> int:
    """How many leading ``slots`` (a sequence's first tokens, in order) hold
    valid KV of a second model: it recomputes from there."""
    held = valid[slots.to(valid.device).long()]
    stale = (~held).nonzero()
    return int(stale[0]) if len(stale) else len(slots)


def extend_stale(like: Any, model: Any, attn_backend: Any, valid: torch.Tensor,
                 req_to_token: torch.Tensor, jobs: Sequence[tuple[int, int, Callable[[], Sequence[int]]]],
                 keep_last: bool = True) -> tuple[torch.Tensor | None, list[int]]:
    """Bring a second model's KV up to date for some sequences, in one EXTEND forward.

    Each job is ``(row, length, tokens)``: the sequence in request-to-token row
    ``row`` has ``length`` tokens, ``tokens()`` lists at least those (called
    only when some must be computed). Tokens whose slots already hold ``valid``
    KV are not recomputed; with ``keep_last`` the last token always is, and the
    ``[jobs, vocab]`` logits after each sequence are returned (else the logits
    of the sequences that needed work, or None). Also returns how many tokens
    each job computed. The computed slots are marked valid."""
    rows, prefixes, token_lists, slots, computed = [], [], [], [], []
    for row, length, tokens in jobs:
        done = valid_prefix(valid, req_to_token[row, :length])
        if keep_last:
            done = min(done, length - 1)
        computed.append(length - done)
        if done == length:
            continue
        rows.append(row)
        prefixes.append(done)
        token_lists.append(list(tokens()[done:length]))
        slots.append(req_to_token[row, done:length])
    if not rows:
        return None, computed
    out_loc = torch.cat(slots)
    batch = extend_batch(like, req_pool_indices=rows, prefix_lens=prefixes,
                         token_lists=token_lists, out_cache_loc=out_loc)
    logits = run_forward(model, attn_backend, batch)
    valid[out_loc.to(valid.device).long()] = True
    return logits, computed


def all_positions_view(verify_batch: Any) -> Any:
    """A shallow copy of a ``TARGET_VERIFY`` batch to run a second model on
    the same draft tokens, positions and slots, keeping logits of every
    position (the logits processor's verify mode) in a fresh tensor. The
    draft tree must be a chain (``topk == 1``): then it is also a causal
    extend of ``draft_token_num`` tokens after ``seq_lens``, which the view
    states as well, for attention backends without a verify mode."""
    import copy

    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode

    view = copy.copy(verify_batch)
    n = int(verify_batch.spec_info.draft_token_num)
    bs = int(verify_batch.batch_size)
    device = verify_batch.seq_lens.device
    prefix = verify_batch.seq_lens.to(torch.int32)
    view.next_token_logits_buffer = None
    view.return_logprob = False
    view.capture_hidden_mode = CaptureHiddenMode.NULL
    view.extend_prefix_lens = prefix
    view.extend_seq_lens = torch.full((bs,), n, dtype=torch.int32, device=device)
    view.extend_prefix_lens_cpu = prefix.tolist()
    view.extend_seq_lens_cpu = [n] * bs
    view.extend_start_loc = torch.arange(0, bs * n, n, dtype=torch.int32, device=device)
    view.extend_num_tokens = bs * n
    return view


def page_size_pad(pool: Any) -> int:
    """Slots beyond ``size`` that SGLang's pools keep (slot 0 is padding, and
    buffers hold ``size + page_size`` rows)."""
    return int(getattr(pool, "page_size", 1))


def decoder_layers(model: Any) -> Any:
    """The model's list of decoder layers (Llama/Qwen/Gemma-style ``model.layers``)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise RuntimeError(f"{type(model).__name__}: no model.layers to read early layers from")
    return layers


def early_exit_logits(model: Any, hidden: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``lm_head(final_norm(hidden))`` for early-layer hidden states ``[n, d]``."""
    normed = model.model.norm(hidden)
    if isinstance(normed, tuple):
        normed = normed[0]
    weight = model.lm_head.weight  # under TP: this rank's vocabulary shard
    logits = normed.to(weight.dtype) @ weight.t()
    if tp_size() > 1:
        from sglang.srt.distributed.communication_op import tensor_model_parallel_all_gather

        logits = tensor_model_parallel_all_gather(logits.contiguous(), dim=-1)
    return logits[:, :vocab_size].float()


def capture_stream_before(model: Any, index: int, sink: dict[int, torch.Tensor]) -> Any:
    """Register a hook that stores in ``sink[index]`` the complete residual
    stream entering decoder layer ``index`` (= the hidden state after
    ``index`` layers; 0 = the embeddings), ``[tokens, hidden]``. Returns the
    hook handle (``.remove()``).

    SGLang 0.5.23 defers each layer's residual add into a per-batch
    ``ResidualStream`` (``layers/layer_boundary/residual``); ``snapshot`` gives
    the completed value without disturbing it, as its own aux-hidden-state
    capture does at the same point (the layer's ``attn_boundary.prepare``)."""
    from sglang.srt.layers.layer_boundary.residual import batch as residual_batch

    def hook(_module: Any, args: tuple, kwargs: dict) -> None:
        hidden = args[1] if len(args) > 1 else kwargs["hidden_states"]
        forward_batch = args[2] if len(args) > 2 else kwargs["forward_batch"]
        sink[index] = residual_batch.snapshot(hidden, forward_batch)

    return decoder_layers(model)[index].register_forward_pre_hook(hook, with_kwargs=True)


def capture_final_hidden(model: Any, key: int, sink: dict[int, torch.Tensor]) -> Any:
    """Register a hook that stores in ``sink[key]`` the final hidden states the
    model hands its logits processor (after the final norm: what the LM head
    reads), ``[tokens, hidden]``. Returns the hook handle (``.remove()``).

    SGLang's causal LMs call ``self.logits_processor(input_ids, hidden_states,
    lm_head, forward_batch, ...)`` (``layers/logits_processor.LogitsProcessor.forward``)."""

    def hook(_module: Any, args: tuple, kwargs: dict) -> None:
        sink[key] = args[1] if len(args) > 1 else kwargs["hidden_states"]

    return model.logits_processor.register_forward_pre_hook(hook, with_kwargs=True)
