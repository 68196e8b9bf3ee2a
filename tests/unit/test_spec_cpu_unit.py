"""Unit tests for speculative decoding on CPU: the sampled verify step, its
top-k/top-p renormalisation, the per-branch draft tables, and the touch points.

The sampled verify step is tested statistically on a small vocabulary: over
many independent trials, every emitted token must follow the target
distribution of the node it was sampled at (chi-square goodness of fit),
whatever the drafts proposed.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
from scipy.stats import chisquare

from sglang_ilsi.engine import patches
from sglang_ilsi.engine.cpu import draft_attention, portability, verify_sampling

VOCAB = 6
N = 4  # root, two sibling children (tokens A, B), and a grandchild C under A
A, B, C = 2, 4, 1
TRIALS = 20000


def _tree(bs: int):
    candidates = torch.tensor([[0, A, B, C]] * bs)
    index = torch.arange(bs * N).view(bs, N)
    next_token = torch.tensor([[1, 3, -1, -1]] * bs)
    next_sibling = torch.tensor([[-1, 2, -1, -1]] * bs)
    return candidates, index, next_token, next_sibling


def _run(target: torch.Tensor, bs: int, seed: int, **thresholds):
    g = torch.Generator().manual_seed(seed)
    candidates, index, next_token, next_sibling = _tree(bs)
    predicts = torch.zeros(bs * N, dtype=torch.int32)
    accept_index = torch.full((bs, 3), -1, dtype=torch.int32)
    accepted = torch.empty(bs, dtype=torch.int32)
    probs = target.expand(bs, N, VOCAB).clone()
    verify_sampling.tree_speculative_sampling_target_only(
        predicts, accept_index, accepted, candidates, index, next_token, next_sibling,
        torch.rand(bs, N, generator=g), torch.rand(bs, generator=g), probs,
        torch.zeros_like(probs), **thresholds,
    )
    return predicts.view(bs, N), accept_index, accepted


def _target(seed: int) -> torch.Tensor:
    """Per-node target distributions; the drafts A, B (root) and C (under A)
    are likely but not certain, and node 2 gives one token probability 0."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([
        [0.05, 0.10, 0.35, 0.10, 0.25, 0.15],
        [0.10, 0.40, 0.10, 0.20, 0.10, 0.10],
        [0.30, 0.00, 0.20, 0.10, 0.20, 0.20],
        [0.15, 0.15, 0.20, 0.20, 0.10, 0.20],
    ])
    noisy = base * (1 + 0.2 * torch.rand(N, VOCAB, generator=g))
    return noisy / noisy.sum(-1, keepdim=True)


def _fits(samples: torch.Tensor, probs: torch.Tensor) -> float:
    counts = torch.bincount(samples.to(torch.int64), minlength=VOCAB).double()
    expected = probs.double() / probs.double().sum() * counts.sum()
    keep = expected > 0
    assert counts[~keep].sum() == 0, "a token of probability 0 was emitted"
    return float(chisquare(counts[keep].numpy(), expected[keep].numpy()).pvalue)


@pytest.mark.parametrize("seed", [0, 1])
def test_sampled_verify_follows_the_target_distribution(seed):
    target = _target(seed)
    predicts, accept_index, accepted = _run(target, TRIALS, seed)
    first = predicts[:, 0]  # the token after the root, whatever was drafted
    assert _fits(first, target[0]) > 1e-3
    # accepted A: the next token follows A's distribution (node 1) ...
    took_a = first == A
    assert took_a.any() and (accepted[took_a] >= 1).all()
    second = predicts[took_a, 1]
    assert _fits(second, target[1]) > 1e-3
    # ... and after accepting C under A, C's distribution (node 3)
    took_c = took_a.clone()
    took_c[took_a] = second == C
    assert took_c.sum() > 100
    assert (accepted[took_c] == 2).all()
    assert _fits(predicts[took_c, 3], target[3]) > 1e-3
    # B accepted (sibling after A was rejected) follows node 2's distribution
    took_b = first == B
    assert (accepted[took_b] == 1).all()
    assert _fits(predicts[took_b, 2], target[2]) > 1e-3
    # neither child: no draft accepted, accept_index holds only the root
    neither = (first != A) & (first != B)
    assert (accepted[neither] == 0).all()
    assert (accept_index[neither, 1] == -1).all()
    assert (accept_index[:, 0] == torch.arange(TRIALS) * N).all()


def test_acceptance_rate_equals_the_target_mass_of_the_drafts():
    target = _target(3)
    _, _, accepted = _run(target, TRIALS, 3)
    rate = float((accepted >= 1).double().mean())
    expected = float(target[0, A] + target[0, B])
    assert abs(rate - expected) < 4 * (expected * (1 - expected) / TRIALS) ** 0.5 + 1e-3


def test_repeated_siblings_as_ngram_pads_them_keep_the_target_distribution():
    # NGRAM pads a short match with token 0: root children A, 0, 0 (one per slot).
    bs = TRIALS
    candidates = torch.tensor([[0, A, 0, 0]] * bs)
    index = torch.arange(bs * N).view(bs, N)
    next_token = torch.tensor([[1, -1, -1, -1]] * bs)
    next_sibling = torch.tensor([[-1, 2, 3, -1]] * bs)
    target = torch.tensor([0.30, 0.10, 0.20, 0.10, 0.20, 0.10]).expand(bs, N, VOCAB).clone()
    g = torch.Generator().manual_seed(5)
    predicts = torch.zeros(bs * N, dtype=torch.int32)
    accepted = torch.empty(bs, dtype=torch.int32)
    verify_sampling.tree_speculative_sampling_target_only(
        predicts, torch.full((bs, 2), -1, dtype=torch.int32), accepted, candidates, index,
        next_token, next_sibling, torch.rand(bs, N, generator=g), torch.rand(bs, generator=g),
        target, torch.zeros_like(target),
    )
    first = predicts.view(bs, N)[:, 0]
    # counting token 0's mass once per copy would emit it with up to 0.6, not 0.3
    assert _fits(first, target[0, 0]) > 1e-3
    assert abs(float((first == 0).double().mean()) - 0.30) < 0.02


def test_threshold_single_accepts_confident_drafts():
    # threshold_single = 0: any draft with p >= 0 is accepted (SGLang's lossy knob)
    target = _target(4)
    predicts, _, accepted = _run(target, 200, 4, threshold_single=0.0)
    assert (accepted == 2).all()
    assert (predicts[:, 0] == A).all() and (predicts[:, 1] == C).all()


def _top_k_reference(probs, k):
    out = torch.zeros_like(probs)
    for r in range(probs.shape[0]):
        kth = sorted(probs[r].tolist(), reverse=True)[min(int(k[r]), probs.shape[1]) - 1]
        out[r] = torch.where(probs[r] >= kth, probs[r], 0.0)
    return out / out.sum(-1, keepdim=True)


def _top_p_reference(probs, p):
    out = torch.zeros_like(probs)
    for r in range(probs.shape[0]):
        mass = 0.0
        for i in torch.argsort(probs[r], descending=True).tolist():
            if mass >= float(p[r]):
                break
            out[r, i] = probs[r, i]
            mass += float(probs[r, i])
    return out / out.sum(-1, keepdim=True)


def test_top_k_and_top_p_renormalisation():
    g = torch.Generator().manual_seed(5)
    probs = torch.softmax(torch.randn(7, 11, generator=g, dtype=torch.float64), -1)
    k = torch.tensor([1, 2, 3, 5, 11, 20, 4])
    p = torch.tensor([0.1, 0.5, 0.9, 1.0, 0.01, 0.75, 0.3], dtype=torch.float64)
    assert torch.allclose(verify_sampling.top_k_renorm_prob(probs, k), _top_k_reference(probs, k))
    assert torch.allclose(verify_sampling.top_p_renorm_prob(probs, p), _top_p_reference(probs, p))


def test_cpu_batches_sample_unless_all_greedy():
    flags = {"is_cpu": True, "is_hip": False, "is_xpu": False, "use_rejection_sampling": False}
    assert verify_sampling.verify_uses_greedy(is_all_greedy=True, **flags)
    assert not verify_sampling.verify_uses_greedy(is_all_greedy=False, **flags)
    flags.update(is_cpu=False, is_xpu=True)
    assert verify_sampling.verify_uses_greedy(is_all_greedy=False, **flags)


@pytest.mark.parametrize("topk", [2, 3])
def test_branch_tables_list_prefix_then_the_branchs_draft_slots(topk):
    sys.path.insert(0, portability.SHIM_DIR)
    try:
        g = torch.Generator().manual_seed(topk)
        steps, pool_len = 3, 40
        req_to_token = torch.randint(1, 500, (6, pool_len), generator=g, dtype=torch.int32)
        rows, lens = torch.tensor([4, 1]), torch.tensor([7, 12])
        table, index = draft_attention.branch_tables(req_to_token, rows, lens, topk, steps)
    finally:
        sys.path.remove(portability.SHIM_DIR)
    assert index.tolist() == list(range(2 * topk))
    for q in range(2 * topk):
        b, t = divmod(q, topk)
        row, length = int(rows[b]), int(lens[b])
        # what draft step i of branch t reads: the prefix, then its own slots
        expected = (req_to_token[row, :length].tolist()
                    + req_to_token[row, length + t * steps: length + (t + 1) * steps].tolist())
        assert table[q, :length + steps].tolist() == expected


def test_branch_tables_topk1_is_the_request_table():
    req_to_token = torch.arange(60, dtype=torch.int32).view(3, 20)
    rows = torch.tensor([2, 0])
    table, index = draft_attention.branch_tables(req_to_token, rows, torch.tensor([3, 5]), 1, 4)
    assert table is req_to_token and index is rows


def test_provide_fills_only_missing_attributes():
    module = types.ModuleType("sglang_ilsi_test_provide")
    module.missing, module.present = None, len
    sys.modules[module.__name__] = module
    try:
        patches._provide(module.__name__ + ".missing", max)
        assert module.missing is max
        with pytest.raises(RuntimeError, match="already provides"):
            patches._provide(module.__name__ + ".present", max)
    finally:
        del sys.modules[module.__name__]


@pytest.mark.skipif(portability.cuda_available(), reason="CPU-only touch points")
def test_cpu_touch_points_cover_draft_and_sampling():
    targets = {tp.target: tp.kind for tp in patches._cpu_only_touch_points()}
    assert targets[patches.EAGLE_UTILS + "_verify_uses_greedy"] == "REPLACE"
    for name in ("tree_speculative_sampling_target_only", "top_k_renorm_prob", "top_p_renorm_prob"):
        assert targets[patches.EAGLE_UTILS + name] == patches.PROVIDE
    assert "sglang.srt.speculative.draft_utils.DraftBackendFactory._create_backend" in targets
