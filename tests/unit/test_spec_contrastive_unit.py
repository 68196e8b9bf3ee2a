"""Speculative contrastive decoding's pieces without a server
(``engine/contrastive.py``): the contrastive distribution against the
plain reference, the amateur's KV bookkeeping, the launch defaults and
refusals, and the SGLang 0.5.23 touch points of the worker."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import multi_references as ref
import numpy as np
import pytest
import torch

from sglang_ilsi.engine.scheduler import sglang_forward
from sglang_ilsi.engine.speculative import contrastive
from sglang_ilsi.methods.model_aided.contrastive_decoding_beta import contrast_beta


def test_contrast_matches_the_reference_per_row():
    gen = torch.Generator().manual_seed(0)
    expert = torch.randn(6, 50, generator=gen) * 3
    amateur = torch.randn(6, 50, generator=gen) * 3
    alpha = torch.tensor([[0.1], [0.5], [1.0], [0.01], [0.1], [0.3]])
    beta = torch.tensor([[0.5], [0.0], [2.0], [1.0], [10.0], [0.5]])
    got = contrast_beta(expert.clone(), amateur, alpha, beta).double().numpy()
    for i in range(6):
        want = ref.contrastive_decoding_beta(expert[i].double().numpy(), amateur[i].double().numpy(),
                                             float(alpha[i]), float(beta[i]))
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-5)
    # scalars too (the server-wide setting), and the expert's top token always survives
    scalar = contrast_beta(expert.clone(), amateur, 0.1, 0.5)
    assert torch.isfinite(scalar.gather(1, expert.argmax(1, keepdim=True))).all()
    np.testing.assert_allclose(scalar[0].double().numpy(), ref.contrastive_decoding_beta(
        expert[0].double().numpy(), amateur[0].double().numpy(), 0.1, 0.5), rtol=1e-5, atol=1e-5)


def test_beta_zero_keeps_the_expert_over_its_plausible_head():
    expert = torch.tensor([[4.0, 3.0, -5.0, 0.0]])
    out = contrast_beta(expert.clone(), torch.tensor([[9.0, -9.0, 9.0, 9.0]]), 0.1, 0.0)
    assert out[0, :2].tolist() == [4.0, 3.0] and torch.isinf(out[0, 2:]).all()


def test_valid_prefix_counts_leading_valid_slots():
    valid = torch.zeros(16, dtype=torch.bool)
    valid[[3, 4, 9]] = True
    assert sglang_forward.valid_prefix(valid, torch.tensor([3, 4, 5, 9])) == 2
    assert sglang_forward.valid_prefix(valid, torch.tensor([3, 4, 9])) == 3
    assert sglang_forward.valid_prefix(valid, torch.tensor([5, 3])) == 0


def _args(**kw):
    base = dict(speculative_draft_model_path="/amateur", speculative_num_steps=None,
                speculative_eagle_topk=None, speculative_num_draft_tokens=None,
                max_running_requests=None, disable_overlap_schedule=False,
                disable_cuda_graph=False)
    return SimpleNamespace(**{**base, **kw})


def test_launch_defaults_and_refusals():
    args = _args()
    contrastive.handle_server_args(args)
    assert (args.speculative_num_steps, args.speculative_eagle_topk,
            args.speculative_num_draft_tokens) == (3, 1, 4)
    assert args.disable_overlap_schedule and args.max_running_requests == 48
    kept = _args(speculative_num_steps=5, speculative_num_draft_tokens=6)
    contrastive.handle_server_args(kept)
    assert (kept.speculative_num_steps, kept.speculative_num_draft_tokens) == (5, 6)
    with pytest.raises(ValueError, match="--speculative-draft-model-path"):
        contrastive.handle_server_args(_args(speculative_draft_model_path=None))
    with pytest.raises(ValueError, match="--speculative-eagle-topk must be 1"):
        contrastive.handle_server_args(_args(speculative_eagle_topk=2))


def test_a_forward_outside_the_worker_step_is_refused():
    stage = object.__new__(contrastive.ContrastStage)
    stage.reqs = None
    batch = SimpleNamespace(forward_mode=SimpleNamespace(is_idle=lambda: False), batch_size=1)
    output = SimpleNamespace(logits_output=SimpleNamespace(next_token_logits=torch.zeros(1, 4)))
    with pytest.raises(RuntimeError, match="outside its worker's step"):
        stage.after_forward(batch, output)


_TOUCH_POINTS = """
import inspect

from sglang_ilsi.engine.cpu import portability

portability.activate()  # without CUDA, SGLang's kernels package needs the stand-in
from sglang.srt.speculative.eagle_worker_v2 import EAGLEWorkerV2
from sglang.srt.speculative.standalone_worker_v2 import StandaloneDraftWorker, StandaloneWorkerV2

from sglang_ilsi.engine.speculative.contrastive_worker import SpeculativeContrastiveWorker

assert issubclass(SpeculativeContrastiveWorker, StandaloneWorkerV2)
init = list(inspect.signature(StandaloneWorkerV2.__init__).parameters)
assert init == ["self", "server_args", "gpu_id", "nccl_port", "target_worker"], init
step = list(inspect.signature(EAGLEWorkerV2.forward_batch_generation).parameters)
assert step[:2] == ["self", "batch"], step
assert "self.draft_runner = self.draft_worker.model_runner" in inspect.getsource(
    StandaloneDraftWorker.__init__)
assert "self._draft_worker = StandaloneDraftWorker(" in inspect.getsource(
    StandaloneWorkerV2.__init__)
from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

from sglang_ilsi.engine.speculative import contrastive

contrastive.register()
scd = SpeculativeAlgorithm.from_string("SPECULATIVE_CONTRASTIVE")
assert scd.is_standalone() and scd.need_topk() and scd.has_draft_kv() and not scd.is_ngram()
assert not scd.carries_draft_hidden_states()
print("ok")
"""


def test_sglang_touch_points_of_the_worker():
    """The draft-model worker pieces SpeculativeContrastiveWorker relies on
    (SGLang 0.5.23), checked in a fresh interpreter."""
    run = subprocess.run([sys.executable, "-c", _TOUCH_POINTS], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]
