"""Sampled (non-greedy) speculative verification on a machine without CUDA.

SGLang 0.5.23 verifies drafts with ``eagle_utils.eagle_sample`` (EAGLE,
STANDALONE and NGRAM alike). On a CPU its ``_verify_uses_greedy`` answers
True for every batch, because the sampling kernels it would call
(``tree_speculative_sampling_target_only``, ``top_k_renorm_prob``,
``top_p_renorm_prob``) exist only for CUDA/HIP/NPU/MUSA. A request with
``temperature > 0`` therefore silently decoded greedily under speculative
decoding. This module supplies the three operations in PyTorch, and
:func:`verify_uses_greedy` (installed by ``engine/patches.py`` only when no
CUDA device exists) lets sampled batches take SGLang's own sampling path.

**Target-only tree speculative sampling** (the drafts are treated as
deterministic proposals, as SGLang does without ``--speculative-use-rejection-
sampling``; Leviathan et al. 2023, Chen et al. 2023, with SpecInfer's
multi-candidate walk, Miao et al. 2024). At a node with target distribution
``p`` and children ``x_1, x_2, ...`` tried in order with one coin ``u``::

    accept x_k  if  u <= (p(x_1) + ... + p(x_k)) / threshold_acc
                or  p(x_k) >= threshold_single

and continue from ``x_k`` with that node's distribution and coin. Each rejected
child's draft probability is set to ``p(x_k)``, so when no child is accepted
the final token is sampled from ``max(p - q, 0)`` renormalised, which is ``p``
without the rejected children. With both thresholds 1 (SGLang's defaults)
the emitted token at every position is distributed exactly as ``p``: child
``x_k`` is emitted with probability ``p(x_k)`` and any other token ``y`` with
``(1 - sum_k p(x_k)) * p(y) / (1 - sum_k p(x_k)) = p(y)``.

A sibling whose token was already tried at the same node is skipped. NGRAM
pads a short match with token 0, so several children of one node can carry
token 0; counting its mass once per copy would emit it with up to ``k * p(0)``
(the walk above assumes distinct children). This module serves CPU machines
only; SGLang's CUDA kernel was not checked for the same case.
"""

from __future__ import annotations

import torch


def _sample_from(weights: torch.Tensor, coin: float) -> int:
    """Inverse-CDF sample of ``weights`` (unnormalised, non-negative), ``coin`` in [0, 1).

    The first index whose cumulative weight exceeds ``coin * total`` always
    has a positive weight.
    """
    cdf = torch.cumsum(weights.to(torch.float64), dim=0)
    total = float(cdf[-1])
    if total <= 0.0:
        return int(torch.argmax(weights))
    value = torch.tensor([min(coin, 1.0 - 1e-12) * total], dtype=cdf.dtype)
    return min(int(torch.searchsorted(cdf, value, right=True).item()), weights.numel() - 1)


def tree_speculative_sampling_target_only(
    predicts: torch.Tensor,
    accept_index: torch.Tensor,
    accept_token_num: torch.Tensor,
    candidates: torch.Tensor,
    retrive_index: torch.Tensor,
    retrive_next_token: torch.Tensor,
    retrive_next_sibling: torch.Tensor,
    uniform_samples: torch.Tensor,
    uniform_samples_for_final_sampling: torch.Tensor,
    target_probs: torch.Tensor,
    draft_probs: torch.Tensor,
    threshold_single: float = 1.0,
    threshold_acc: float = 1.0,
    deterministic: bool = True,
) -> None:
    """Walk each request's draft tree with the rule above (outputs in place).

    Shapes (``n`` drafts per request): ``candidates``, ``retrive_*`` and
    ``uniform_samples`` ``[bs, n]``; ``uniform_samples_for_final_sampling``
    ``[bs]``; ``target_probs``/``draft_probs`` ``[bs, n, vocab]`` (the
    distribution after each node); ``predicts`` ``[bs * n]``, indexed by
    ``retrive_index``; ``accept_index`` ``[bs, depth]``; ``accept_token_num``
    ``[bs]`` = accepted drafts (the final sampled token not counted).
    ``draft_probs`` is updated in place at rejected children, as SGLang's
    kernel does. ``deterministic`` is accepted for signature compatibility.
    """
    del deterministic
    bs, n = candidates.shape[0], candidates.shape[1]
    depth = accept_index.shape[1]
    thr_single = max(float(threshold_single), 1e-12)
    thr_acc = max(float(threshold_acc), 1e-12)
    cand = candidates.tolist()
    r_index = retrive_index.reshape(bs, n).tolist()
    r_next = retrive_next_token.reshape(bs, n).tolist()
    r_sib = retrive_next_sibling.reshape(bs, n).tolist()
    coins = uniform_samples.reshape(bs, n).tolist()
    final_coins = uniform_samples_for_final_sampling.reshape(-1).tolist()
    flat_predicts = predicts.view(-1)
    for b in range(bs):
        node = 0  # the node whose target distribution decides the next token
        last = r_index[b][0]
        accept_index[b, 0] = last
        accepted = 0
        coin = coins[b][0]
        for _level in range(1, depth):
            child = r_next[b][node]
            mass = 0.0
            tried: set[int] = set()
            while child != -1:
                token = cand[b][child]
                if token in tried:  # a repeated sibling: its mass is counted already
                    child = r_sib[b][child]
                    continue
                tried.add(token)
                p = float(target_probs[b, node, token])
                mass += p
                if coin <= mass / thr_acc or p >= thr_single:
                    flat_predicts[last] = token
                    accepted += 1
                    last = r_index[b][child]
                    accept_index[b, accepted] = last
                    node, coin = child, coins[b][child]
                    break
                draft_probs[b, node, token] = target_probs[b, node, token]
                child = r_sib[b][child]
            if child == -1:
                break
        accept_token_num[b] = accepted
        residual = (target_probs[b, node] - draft_probs[b, node]).clamp_(min=0)
        flat_predicts[last] = _sample_from(residual, final_coins[b])


def top_k_renorm_prob(probs: torch.Tensor, top_ks: torch.Tensor) -> torch.Tensor:
    """Keep each row's ``k`` largest probabilities (ties at the k-th kept), renormalise."""
    k = top_ks.reshape(-1, 1).to(torch.int64).clamp(min=1, max=probs.shape[-1])
    kth = torch.sort(probs, dim=-1, descending=True).values.gather(-1, k - 1)
    kept = torch.where(probs >= kth, probs, torch.zeros((), dtype=probs.dtype))
    return kept / kept.sum(dim=-1, keepdim=True)


def top_p_renorm_prob(probs: torch.Tensor, top_ps: torch.Tensor) -> torch.Tensor:
    """Keep the smallest set of largest probabilities whose mass reaches ``p``, renormalise."""
    ordered, order = torch.sort(probs, dim=-1, descending=True)
    before = torch.cumsum(ordered, dim=-1) - ordered  # mass strictly above each entry
    keep_sorted = before < top_ps.reshape(-1, 1).to(probs.dtype)
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    kept = torch.where(keep, probs, torch.zeros((), dtype=probs.dtype))
    return kept / kept.sum(dim=-1, keepdim=True)


def verify_uses_greedy(
    *,
    is_all_greedy: bool,
    is_cpu: bool,
    is_hip: bool,
    is_xpu: bool,
    use_rejection_sampling: bool,
) -> bool:
    """SGLang's predicate without its CPU clause: sampled CPU batches really sample.

    ``--speculative-use-rejection-sampling`` needs a Triton kernel, so on a CPU
    it would still fall back to greedy; ``config.parse`` refuses that flag at
    launch when there is no CUDA device.
    """
    if is_cpu:
        return is_all_greedy or use_rejection_sampling
    return is_all_greedy or is_xpu or (is_hip and not use_rejection_sampling)
