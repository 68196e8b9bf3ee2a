"""Target-verify attention for SGLang's ``torch_native`` backend (CPU, no CUDA).

SGLang 0.5.23's speculative workers verify a draft *tree* in one target
forward (``ForwardMode.TARGET_VERIFY``): every request appends its ``n`` draft
tokens after its ``seq_len`` verified tokens, and draft node ``i`` may attend
to the whole verified prefix but, among the drafts, only to itself and its
ancestors in the tree. ``TorchNativeAttnBackend`` (the only attention backend
that runs on a CPU without AMX kernels) has no such mode: it treats the verify
batch as a prefill and crashes on the missing ``extend_prefix_lens``. That is
why ``--speculative-algorithm NGRAM`` died on this machine.

:func:`tree_verify_attention` is that missing mode, written for clarity with
``torch.nn.functional.scaled_dot_product_attention``. For request ``b`` with
verified length ``L`` and draft slots ``d_0..d_{n-1}`` (its ``n`` entries of
``out_cache_loc``)::

    keys/values = cache[req_to_token[row_b, :L]] ++ cache[d_0 .. d_{n-1}]
    allowed[i, j] = 1                          for j < L   (the prefix)
    allowed[i, L + j] = tree[b, i, j] or i == j  (ancestors and self)
    out_i = softmax(q_i K^T * scale + log(allowed)) V

``tree`` is the worker's ``custom_mask``, either the compact ``[bs, n, n]``
layout the NGRAM worker builds on CPU, or SGLang's full layout (per request,
``n`` rows of ``L + n`` entries, prefix columns included); both are accepted.
A layer's sliding window is applied on absolute positions (prefix key ``j`` is
at position ``j``; draft node ``i`` at ``spec_info.positions``).

:func:`around_forward_extend` routes TARGET_VERIFY batches here and every other
batch to SGLang's own ``forward_extend``; ``engine/patches.py`` installs it only
when no CUDA device exists.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.functional import scaled_dot_product_attention


def tree_masks(
    custom_mask: torch.Tensor, seq_lens: list[int], n: int
) -> list[torch.Tensor]:
    """Per-request ``[n, n]`` bool draft-visibility masks (self always visible).

    Accepts the compact layout (``bs * n * n`` entries) or the full layout
    (``sum((L_b + n) * n)`` entries, of which the last ``n`` columns of each
    row are the draft part).
    """
    bs = len(seq_lens)
    flat = custom_mask.reshape(-1).to(torch.bool)
    eye = torch.eye(n, dtype=torch.bool, device=flat.device)
    compact = bs * n * n
    full = sum((length + n) * n for length in seq_lens)
    out: list[torch.Tensor] = []
    if flat.numel() >= full and flat.numel() != compact:
        start = 0
        for length in seq_lens:
            rows = flat[start : start + (length + n) * n].view(n, length + n)
            out.append(rows[:, length:] | eye)
            start += (length + n) * n
        return out
    if flat.numel() < compact:
        raise ValueError(
            f"custom_mask has {flat.numel()} entries; expected {compact} (compact) "
            f"or {full} (full layout) for {bs} requests x {n} draft tokens"
        )
    trees = flat[:compact].view(bs, n, n)
    return [trees[b] | eye for b in range(bs)]


def tree_verify_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor,
    seq_lens: torch.Tensor,
    draft_locs: torch.Tensor,
    custom_mask: torch.Tensor,
    n: int,
    *,
    scale: float | None = None,
    positions: torch.Tensor | None = None,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """Attention of ``bs * n`` draft queries over prefix + draft-tree keys.

    Shapes: ``q`` ``[bs * n, heads, head_dim]``; ``k_cache``/``v_cache``
    ``[slots, kv_heads, head_dim(_v)]``; ``draft_locs`` ``[bs * n]`` (the KV
    slots the drafts were written to); ``positions`` ``[bs * n]`` (absolute
    positions of the draft tokens, only used with ``sliding_window``).
    Returns ``[bs * n, heads, head_dim_v]`` in ``q``'s dtype.
    """
    lens = [int(x) for x in seq_lens.tolist()]
    rows = req_pool_indices.tolist()
    masks = tree_masks(custom_mask, lens, n)
    heads, kv_heads = q.shape[1], k_cache.shape[1]
    out = q.new_empty((q.shape[0], heads, v_cache.shape[-1]))
    for b, (length, row) in enumerate(zip(lens, rows, strict=True)):
        slots = torch.cat(
            (req_to_token[row, :length].to(torch.int64), draft_locs[b * n : (b + 1) * n].to(torch.int64))
        )
        key = k_cache[slots].to(q.dtype).movedim(0, 1)  # [kv_heads, L + n, d]
        value = v_cache[slots].to(q.dtype).movedim(0, 1)
        query = q[b * n : (b + 1) * n].movedim(0, 1)  # [heads, n, d]
        allowed = torch.cat(
            (torch.ones((n, length), dtype=torch.bool, device=q.device), masks[b].to(q.device)),
            dim=1,
        )
        if sliding_window is not None and sliding_window > -1 and positions is not None:
            q_pos = positions[b * n : (b + 1) * n].to(torch.int64)[:, None]
            k_pos = torch.cat(
                (torch.arange(length, device=q.device), q_pos[:, 0])
            )[None, :]
            allowed = allowed & (k_pos >= q_pos - sliding_window)
        result = scaled_dot_product_attention(
            query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0),
            attn_mask=allowed, scale=scale, enable_gqa=heads != kv_heads,
        )
        out[b * n : (b + 1) * n] = result.squeeze(0).movedim(0, 1)
    return out


def around_forward_extend(
    original: Any,
    backend: Any,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layer: Any,
    forward_batch: Any,
    save_kv_cache: bool = True,
    *args: Any,
    **kwargs: Any,
) -> torch.Tensor:
    """``TorchNativeAttnBackend.forward_extend`` with a TARGET_VERIFY mode."""
    if not forward_batch.forward_mode.is_target_verify():
        return original(backend, q, k, v, layer, forward_batch, save_kv_cache, *args, **kwargs)
    spec_info = forward_batch.spec_info
    if spec_info is None or getattr(spec_info, "custom_mask", None) is None:
        raise RuntimeError(
            "sglang-ilsi: TARGET_VERIFY on the torch_native backend needs the speculative "
            "worker's tree mask (spec_info.custom_mask); this worker provides none"
        )
    if layer.is_cross_attention:
        raise RuntimeError("sglang-ilsi: speculative verify with cross-attention is not supported")
    from sglang.srt.mem_cache.memory_pool import KVWriteLoc

    cache_loc = forward_batch.out_cache_loc
    if save_kv_cache and k is not None and v is not None:
        backend.token_to_kv_pool.set_kv_buffer(
            layer, KVWriteLoc(cache_loc, backend.swa_out_cache_loc), k, v
        )
    window = layer.sliding_window_size
    o = tree_verify_attention(
        q.reshape(-1, layer.tp_q_head_num, layer.qk_head_dim),
        backend.token_to_kv_pool.get_key_buffer(layer.layer_id),
        backend.token_to_kv_pool.get_value_buffer(layer.layer_id),
        backend.req_to_token_pool.req_to_token,
        forward_batch.req_pool_indices,
        forward_batch.seq_lens,
        cache_loc,
        spec_info.custom_mask,
        int(spec_info.draft_token_num),
        scale=layer.scaling,
        positions=getattr(spec_info, "positions", None),
        sliding_window=window if window is not None and window > -1 else None,
    )
    return o.reshape(q.shape[0], layer.tp_q_head_num * layer.v_head_dim)
