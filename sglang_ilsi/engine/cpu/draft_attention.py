"""Draft-model attention for SGLang's ``torch_native`` backend (CPU, no CUDA).

SGLang 0.5.23's draft-model speculative decoding (``--speculative-algorithm
STANDALONE``, the EAGLE V2 worker with a separate small model) runs the draft
model in two modes the ``torch_native`` backend was never given, so
``DraftBackendFactory`` refuses the launch on a CPU without AMX kernels
("EAGLE is not supported in decode attention backend torch_native"):

* **multi-step draft decode**: ``speculative_num_steps - 1`` decode forwards
  in a row, each step ``i`` appending one token per branch. The worker writes
  branch ``t``'s draft slots into the request's token table at columns
  ``seq_len + t * num_steps + j`` (``assign_draft_cache_locs``); step ``i``'s
  query of branch ``t`` attends to the verified prefix and to that branch's
  first ``i + 1`` draft tokens::

      keys(b, t, i) = cache[table[r_b, :L_b]] ++ cache[table[r_b, L_b + t*S : L_b + t*S + i + 1]]

  :class:`TorchNativeMultiStepDraftBackend` holds one backend per step and
  gives each the per-branch token table and lengths ``L_b + i + 1``
  (with ``topk == 1`` the request's own row already is that table);
* **draft extend** (``DRAFT_EXTEND_V2``): an ordinary causal extend over the
  accepted tokens, which ``torch_native``'s ``forward_extend`` already does.

:func:`around_create_backend` adds both to the factory's backend maps; it is
installed by ``engine/patches.py`` only when no CUDA device exists. The target
side (``TARGET_VERIFY``) is ``engine/cpu/verify_attention.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend
from sglang.srt.mem_cache.memory_pool import KVWriteLoc

BACKEND = "torch_native"


class TorchNativeDraftStepBackend(TorchNativeAttnBackend):
    """``torch_native`` decode attention over a per-branch token table.

    ``draft_decode_metadata`` is ``(table, seq_lens, rows)``: query ``q`` of
    the step attends to ``table[rows[q], :seq_lens[q]]``.
    """

    def __init__(self, model_runner: Any):
        super().__init__(model_runner)
        self.draft_decode_metadata: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def forward_decode(self, q, k, v, layer, forward_batch, save_kv_cache=True, **kwargs):
        if self.draft_decode_metadata is None:
            return super().forward_decode(q, k, v, layer, forward_batch, save_kv_cache, **kwargs)
        table, seq_lens, rows = self.draft_decode_metadata
        q = q.reshape(-1, layer.tp_q_head_num * layer.qk_head_dim)
        o = q.new_empty((q.shape[0], layer.tp_q_head_num * layer.v_head_dim))
        if save_kv_cache and k is not None and v is not None:
            self.token_to_kv_pool.set_kv_buffer(
                layer, KVWriteLoc(forward_batch.out_cache_loc, self.swa_out_cache_loc), k, v
            )
        window = layer.sliding_window_size
        self._run_sdpa_forward_decode(
            q.view(-1, layer.tp_q_head_num, layer.qk_head_dim),
            o.view(-1, layer.tp_q_head_num, layer.v_head_dim),
            self.token_to_kv_pool.get_key_buffer(layer.layer_id),
            self.token_to_kv_pool.get_value_buffer(layer.layer_id),
            table,
            rows,
            seq_lens,
            None,
            scaling=layer.scaling,
            enable_gqa=layer.tp_q_head_num != layer.tp_k_head_num,
            causal=False,
            is_cross_attn=False,
            sliding_window_size=window if window is not None and window > -1 else None,
        )
        return o


def branch_tables(
    req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor,
    seq_lens: torch.Tensor,
    topk: int,
    num_steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token table and row index per branch query (``bs * topk`` queries).

    With ``topk == 1`` a request's own row already lists its prefix followed
    by its draft slots, so the table is ``req_to_token`` itself. Otherwise row
    ``b * topk + t`` is the prefix ``req_to_token[r_b, :L_b]`` followed by
    branch ``t``'s ``num_steps`` slots.
    """
    if topk == 1:
        return req_to_token, req_pool_indices
    # The same per-branch table SGLang's intel_amx draft backend builds; on this
    # machine sgl_kernel is our CPU stand-in (engine/cpu/shim).
    from sgl_kernel import build_draft_decode_metadata_cpu

    table = build_draft_decode_metadata_cpu(
        req_to_token, req_pool_indices, seq_lens, topk, num_steps, req_to_token.shape[1])
    return table, torch.arange(table.shape[0], device=table.device)


class TorchNativeMultiStepDraftBackend:
    """One :class:`TorchNativeDraftStepBackend` per draft decode step."""

    def __init__(self, model_runner: Any, topk: int, speculative_num_steps: int):
        self.topk = topk
        self.speculative_num_steps = speculative_num_steps
        self.req_to_token_pool = model_runner.req_to_token_pool
        self.attn_backends = [
            TorchNativeDraftStepBackend(model_runner) for _ in range(speculative_num_steps - 1)
        ]

    def init_forward_metadata(self, forward_batch: Any) -> None:
        table, rows = branch_tables(
            self.req_to_token_pool.req_to_token,
            forward_batch.req_pool_indices,
            forward_batch.seq_lens,
            self.topk,
            self.speculative_num_steps,
        )
        base = forward_batch.seq_lens.to(torch.int64).repeat_interleave(self.topk)
        for step, backend in enumerate(self.attn_backends):
            backend.init_forward_metadata(forward_batch)
            backend.draft_decode_metadata = (table, base + step + 1, rows)


def around_create_backend(
    original: Any,
    factory: Any,
    backend_name: str,
    backend_map: dict,
    error_template: str,
    stamps_children: bool = False,
) -> Any:
    """``DraftBackendFactory._create_backend`` that also knows ``torch_native``.

    ``stamps_children`` is how SGLang marks the multi-step decode container
    (the draft-extend backend is a single one).
    """
    runner = factory.draft_model_runner
    backend_map = dict(backend_map)
    if stamps_children:
        backend_map.setdefault(BACKEND, lambda: (BACKEND, TorchNativeMultiStepDraftBackend(
            runner, factory.topk, factory.speculative_num_steps)))
    else:
        backend_map.setdefault(BACKEND, lambda: (BACKEND, TorchNativeAttnBackend(runner)))
    return original(factory, backend_name, backend_map, error_template, stamps_children)
