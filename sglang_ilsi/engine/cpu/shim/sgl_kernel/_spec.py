"""Draft-tree bookkeeping ops for speculative decoding (pure PyTorch).

These are the tree ops SGLang's CPU engine imports from ``sgl_kernel``:
EAGLE tree construction, greedy tree verification and the NGRAM mask-to-links
reconstruction. All tensors are small (batch x draft tokens), so clarity wins
over speed; the per-request work is vectorised where that stays readable.

Conventions shared by the ops (``n`` = draft tokens per request, node 0 is the
root, i.e. the last verified token):

* ``retrive_index[b, i] = b * n + i`` (a flat index into per-token outputs).
* ``retrive_next_token[b, i]`` = first child of node ``i`` (-1: none).
* ``retrive_next_sibling[b, i]`` = next child of ``i``'s parent after ``i``
  (-1: none).
"""

from __future__ import annotations

import torch

__all__ = [
    "build_tree_kernel_efficient_cpu",
    "reconstruct_indices_from_tree_mask",
    "verify_tree_greedy_cpu",
]

# Tree mask layouts (``TreeMaskMode`` in SGLang).
FULL_MASK = 0
QLEN_ONLY = 1
QLEN_ONLY_BITPACKING = 2


def _write_flat(dst: torch.Tensor, values: torch.Tensor) -> None:
    """Write ``values`` into the first ``values.numel()`` elements of ``dst``
    (row-major order), in place and with a dtype cast."""
    values = values.reshape(-1).to(dst.dtype)
    if dst.is_contiguous():
        dst.view(-1)[: values.numel()].copy_(values)
    else:
        dst.copy_(values.view(dst.shape))


def _parents_from_selection(
    parent_list: torch.Tensor,
    selected_index: torch.Tensor,
    topk: int,
    n: int,
) -> torch.Tensor:
    """Parent node of every draft node, shape ``[bs, n]``.

    Node ``i >= 1`` is the draft token ``selected_index[b, i - 1]`` (an index
    into the flattened top-k candidates of all draft steps). Its parent is the
    root when ``selected_index // topk == 0``; otherwise the parent candidate
    is ``parent_list[b, selected_index // topk]`` and the parent node is
    ``1 + `` the first position where ``selected_index`` holds that candidate.
    Entry -1 marks the root (node 0) and nodes whose parent was not selected
    (an invalid tree, e.g. after NaN logprobs).
    """
    bs = selected_index.shape[0]
    device = selected_index.device
    parents = torch.full((bs, n), -1, dtype=torch.int64, device=device)
    if n <= 1 or bs == 0:
        return parents
    sel = selected_index.reshape(bs, n - 1).to(torch.int64)
    parent_tb = torch.div(sel, topk, rounding_mode="floor")
    width = parent_list.shape[1] if parent_list.dim() == 2 else 0

    node_parent = torch.full((bs, n - 1), -1, dtype=torch.int64, device=device)
    at_root = parent_tb == 0
    node_parent[at_root] = 0
    if width > 0:
        in_range = (parent_tb > 0) & (parent_tb < width)
        gathered = parent_list.to(torch.int64).gather(1, parent_tb.clamp(0, width - 1))
        # match[b, i, p]: candidate at position p is node i's parent candidate.
        match = sel[:, None, :] == gathered[:, :, None]
        found = match.any(dim=2)
        first = match.to(torch.int8).argmax(dim=2)
        ok = in_range & found
        node_parent[ok] = first[ok] + 1
    parents[:, 1:] = node_parent
    return parents


def build_tree_kernel_efficient_cpu(
    parent_list: torch.Tensor,
    selected_index: torch.Tensor,
    verified_seq_len: torch.Tensor,
    tree_mask: torch.Tensor,
    positions: torch.Tensor,
    retrive_index: torch.Tensor,
    retrive_next_token: torch.Tensor,
    retrive_next_sibling: torch.Tensor,
    topk: int,
    depth: int,
    draft_token_num: int,
    tree_mask_mode: int,
) -> None:
    """Build the EAGLE draft tree from top-k draft selection (all outputs in place).

    Inputs: ``parent_list`` ``[bs, topk * (depth - 1) + 1]`` (parent candidate
    of each draft step's top-k group), ``selected_index`` ``[bs, n - 1]``
    (sorted indices of the chosen draft tokens; node ``i`` is entry ``i - 1``),
    ``verified_seq_len`` ``[bs]``. See :func:`_parents_from_selection` for how a
    node's parent is found.

    Outputs:

    * ``positions[b * n + i]`` = ``verified_seq_len[b]`` + depth of node ``i``
      (root depth 0).
    * ``retrive_index[b, i] = b * n + i``.
    * ``retrive_next_token[b, p]`` = smallest child of ``p``, and
      ``retrive_next_sibling[b, i]`` = next larger child of ``i``'s parent.
      Entries with no such node are left untouched (callers pre-fill -1);
      nodes whose parent was not selected get no links.
    * ``tree_mask``: row ``i`` marks the root, node ``i`` and its ancestors.
      ``FULL_MASK`` (0): flat, request ``b`` owns ``n`` rows of
      ``seq_len[b] + n`` entries starting at ``n*n*b + n*sum(seq_len[:b])``;
      only the last ``n`` columns of each row are written (the prefix columns
      keep the caller's fill). ``QLEN_ONLY`` (1): ``[bs, n, n]``, every entry
      written. ``QLEN_ONLY_BITPACKING`` (2): one little-endian word of 1, 2 or
      4 bytes per row (by ``n``), bit ``j`` = column ``j``; ORed into the
      caller's zero-filled buffer.
    """
    n = int(draft_token_num)
    bs = verified_seq_len.shape[0]
    if tree_mask_mode not in (FULL_MASK, QLEN_ONLY, QLEN_ONLY_BITPACKING):
        raise ValueError(f"invalid tree_mask_mode {tree_mask_mode}")
    if bs == 0 or n <= 0:
        return
    device = verified_seq_len.device
    seq = verified_seq_len.reshape(-1).to(torch.int64)
    parents = _parents_from_selection(parent_list, selected_index, topk, n)

    # Ancestor walk, all nodes at once: anc[b, x, j] = node j is x or an
    # ancestor of x (root excluded); depth counts those nodes.
    nodes = torch.arange(n, device=device)
    cur = nodes.expand(bs, n).clone()
    alive = cur >= 1
    anc = torch.zeros((bs, n, n), dtype=torch.bool, device=device)
    depth_of = torch.zeros((bs, n), dtype=torch.int64, device=device)
    for _ in range(max(n - 1, 0)):
        if not bool(alive.any()):
            break
        b_i, x_i = alive.nonzero(as_tuple=True)
        anc[b_i, x_i, cur[b_i, x_i]] = True
        depth_of += alive.to(torch.int64)
        nxt = parents.gather(1, cur.clamp(min=0))
        alive = alive & (nxt >= 1)
        cur = nxt
    rows = anc.clone()
    rows[:, :, 0] = True  # every row sees the root

    _write_flat(positions, seq[:, None] + depth_of)
    _write_flat(retrive_index, torch.arange(bs * n, device=device, dtype=torch.int64))
    _write_links(parents, retrive_next_token, retrive_next_sibling, bs, n)

    if tree_mask_mode == QLEN_ONLY:
        _write_flat(tree_mask, rows)
    elif tree_mask_mode == FULL_MASK:
        flat = tree_mask.view(-1)
        req_start = n * n * torch.arange(bs, device=device) + n * (torch.cumsum(seq, 0) - seq)
        row_start = req_start[:, None] + (seq[:, None] + n) * nodes[None, :]
        idx = row_start[:, :, None] + seq[:, None, None] + nodes[None, None, :]
        flat[idx.reshape(-1)] = rows.reshape(-1).to(flat.dtype)
    else:
        if n > 32:
            raise ValueError("QLEN_ONLY_BITPACKING supports at most 32 draft tokens")
        nbytes = 4 if n > 16 else (2 if n > 8 else 1)
        weights = torch.ones(n, dtype=torch.int64, device=device) << nodes
        words = (rows.to(torch.int64) * weights).sum(dim=2).reshape(-1)
        shifts = 8 * torch.arange(nbytes, device=device)
        packed = ((words[:, None] >> shifts[None, :]) & 0xFF).to(torch.uint8)
        mask_bytes = tree_mask.view(-1).view(torch.uint8)
        region = mask_bytes[: bs * n * nbytes].view(bs * n, nbytes)
        region[:, 0] = packed[:, 0]
        if nbytes > 1:
            region[:, 1:] |= packed[:, 1:]


def _write_links(
    parents: torch.Tensor,
    next_token: torch.Tensor,
    next_sibling: torch.Tensor,
    bs: int,
    n: int,
) -> None:
    """First-child / next-sibling links from a parent array (-1 = no parent).

    Only entries that have a child (resp. a later sibling) are written.
    """
    device = parents.device
    nodes = torch.arange(n, device=device)
    # child[b, p, i]: node i's parent is p.
    child = parents[:, None, :] == nodes[None, :, None]
    first_child = torch.where(child, nodes, n).min(dim=2).values
    # sib[b, i, j]: j > i shares i's (valid) parent.
    sib = (
        (parents[:, None, :] == parents[:, :, None])
        & (nodes[None, None, :] > nodes[None, :, None])
        & (parents[:, :, None] >= 0)
    )
    first_sib = torch.where(sib, nodes, n).min(dim=2).values
    old_next = next_token.reshape(bs, n).to(torch.int64)
    old_sib = next_sibling.reshape(bs, n).to(torch.int64)
    _write_flat(next_token, torch.where(first_child < n, first_child, old_next))
    _write_flat(next_sibling, torch.where(first_sib < n, first_sib, old_sib))


def verify_tree_greedy_cpu(
    predicts: torch.Tensor,
    accept_index: torch.Tensor,
    accept_token_num: torch.Tensor,
    candidates: torch.Tensor,
    retrive_index: torch.Tensor,
    retrive_next_token: torch.Tensor,
    retrive_next_sibling: torch.Tensor,
    target_predict: torch.Tensor,
) -> None:
    """Greedy verification of draft trees (outputs in place).

    Shapes: ``candidates``, ``retrive_*`` and ``target_predict`` ``[bs, n]``;
    ``accept_index`` ``[bs, num_spec]``; ``accept_token_num`` ``[bs]``;
    ``predicts`` ``[bs * n]``. Per request: start at the root
    (``last = retrive_index[b, 0]``, written to ``accept_index[b, 0]``); for
    each of up to ``num_spec - 1`` levels, walk the children of the last
    accepted node (first child, then siblings) and accept the first whose
    candidate token equals ``target_predict.flat[last]``: write that target
    token to ``predicts[last]``, append the child's ``retrive_index`` to
    ``accept_index[b]`` and continue from it. Stop at the first level without a
    match. Then ``accept_token_num[b]`` = number of accepted drafts and
    ``predicts[last] = target_predict.flat[last]`` (the bonus token).
    ``accept_index`` entries past the accepted ones are left untouched.
    """
    bs = candidates.shape[0]
    if bs == 0:
        return
    nd = candidates.shape[1]
    num_spec = accept_index.shape[1]
    cand = candidates.tolist()
    r_index = retrive_index.reshape(bs, nd).tolist()
    r_next = retrive_next_token.reshape(bs, nd).tolist()
    r_sib = retrive_next_sibling.reshape(bs, nd).tolist()
    target = target_predict.reshape(-1).tolist()

    pred_pos: list[int] = []
    pred_val: list[int] = []
    acc_rows: list[int] = []
    acc_cols: list[int] = []
    acc_vals: list[int] = []
    counts: list[int] = []
    for b in range(bs):
        last = r_index[b][0]
        acc_rows.append(b)
        acc_cols.append(0)
        acc_vals.append(last)
        accepted = 0
        cur = 0
        for _level in range(1, num_spec):
            cur = r_next[b][cur]
            steps = 0
            while cur != -1 and steps < nd:
                steps += 1
                if cand[b][cur] == target[last]:
                    pred_pos.append(last)
                    pred_val.append(target[last])
                    accepted += 1
                    acc_rows.append(b)
                    acc_cols.append(accepted)
                    acc_vals.append(r_index[b][cur])
                    last = r_index[b][cur]
                    break
                cur = r_sib[b][cur]
            else:
                cur = -1
            if cur == -1:
                break
        counts.append(accepted)
        pred_pos.append(last)
        pred_val.append(target[last])

    device = predicts.device
    flat_pred = predicts.view(-1)
    flat_pred[torch.tensor(pred_pos, dtype=torch.int64, device=device)] = torch.tensor(
        pred_val, dtype=flat_pred.dtype, device=device
    )
    accept_index[
        torch.tensor(acc_rows, dtype=torch.int64, device=device),
        torch.tensor(acc_cols, dtype=torch.int64, device=device),
    ] = torch.tensor(acc_vals, dtype=accept_index.dtype, device=device)
    _write_flat(accept_token_num, torch.tensor(counts, dtype=torch.int64, device=device))


def reconstruct_indices_from_tree_mask(
    tree_mask: torch.Tensor,
    verified_seq_len: torch.Tensor,
    positions: torch.Tensor,
    retrive_index: torch.Tensor,
    retrive_next_token: torch.Tensor,
    retrive_next_sibling: torch.Tensor,
    batch_size: int,
    draft_token_num: int,
) -> None:
    """NGRAM verify metadata from per-request ``n x n`` ancestor masks (in place).

    ``tree_mask`` is flat ``[bs * n * n]`` (bool or uint8); entry ``(b, i, j)``
    set with ``j < i`` means node ``j`` is an ancestor of node ``i`` (entries on
    or above the diagonal are ignored). Per request ``b`` and node ``t``:

    * ``positions[b * n + t]`` = number of ancestors of ``t`` + ``verified_seq_len[b]``;
    * ``retrive_index[b, t] = b * n + t``;
    * ``retrive_next_token[b, t]`` = first ``k > t`` having ``t`` as ancestor, else -1;
    * ``retrive_next_sibling[b, t]`` = first ``k > t`` with the same parent as
      ``t`` (parent = nearest, i.e. largest-index, ancestor), else -1; -1 when
      ``t`` has no ancestor at all.
    """
    bs = int(batch_size)
    n = int(draft_token_num)
    if bs == 0 or n <= 0:
        return
    device = tree_mask.device
    mask = tree_mask.reshape(-1)[: bs * n * n].reshape(bs, n, n).to(torch.bool)
    nodes = torch.arange(n, device=device)
    anc = mask & (nodes[None, :] < nodes[:, None])  # [b, i, j], strict lower triangle
    depth = anc.sum(dim=2)
    parent = torch.where(anc, nodes, -1).max(dim=2).values
    first_child = torch.where(anc, nodes[:, None], n).min(dim=1).values
    next_token = torch.where(first_child < n, first_child, -1)
    same = (
        (parent[:, :, None] == parent[:, None, :])
        & (nodes[None, :] > nodes[:, None])
        & (parent[:, :, None] >= 0)
    )  # [b, t, k]
    first_sib = torch.where(same, nodes, n).min(dim=2).values
    next_sibling = torch.where(first_sib < n, first_sib, -1)

    seq = verified_seq_len.reshape(-1)[:bs].to(torch.int64)
    _write_flat(positions, depth + seq[:, None])
    _write_flat(retrive_index, torch.arange(bs * n, dtype=torch.int64, device=device))
    _write_flat(retrive_next_token, next_token)
    _write_flat(retrive_next_sibling, next_sibling)
