"""``--speculative-algorithm SPECULATIVE_CONTRASTIVE``, registered with SGLang's registry.

Speculative contrastive decoding (Yuan, Lu, Huang, Yuan & Zhou, ACL 2024,
arXiv:2311.08981): one small LM is both the speculative **draft** and the
contrastive **amateur**. It drafts ``γ`` tokens; the target verifies them in
one forward, not against its own distribution but against the contrastive one
(O'Brien & Lewis 2023's CD_β, with the expert's α-plausibility head)::

    s_cd(x) = (1 + β) · s_e(x) − β · s_a(x)    if s_e(x) ≥ log α + max_w s_e(w),
              −inf                              otherwise

at every verified position, the bonus position included. Verification is
SGLang's own (greedy: the argmax of ``s_cd``; sampled: target-only tree
speculative sampling of ``softmax(s_cd / T)``), so the output is exactly
contrastive decoding's: greedy tokens equal greedy CD's, sampled tokens follow
``softmax(s_cd / T)``, at speculative speed.

Usage::

    python -m sglang.launch_server --model-path EXPERT --ilsi \\
        --speculative-algorithm SPECULATIVE_CONTRASTIVE --speculative-draft-model-path AMATEUR \\
        [--ilsi-scd-alpha 0.1 --ilsi-scd-beta 0.5] [--speculative-num-steps 3]

How it runs in SGLang (0.5.23):

* the worker is SGLang's draft-model worker (``StandaloneWorkerV2``, the
  algorithm answers ``is_standalone``), with a chain of drafts
  (``--speculative-eagle-topk 1``, as in the paper);
* after every target forward of the worker (the prefill, whose last position
  gives the first token, and each verify), :class:`ContrastStage` runs the
  amateur's weights on the same tokens, positions and KV slot indices, and
  replaces the forward's logits with ``s_cd`` before SGLang samples or
  verifies. The amateur gets a KV pool of its own for this (the draft's KV
  follows SGLang's EAGLE layout, shifted one token left, so it cannot give the
  amateur's distribution over the full sequence); ``valid`` marks the slots
  whose amateur KV belongs to the token the target holds there, so a prefix
  the radix cache shares is not recomputed;
* every response's ``meta_info.ilsi`` (and the OpenAI ``ilsi`` field) names
  the method, α and β, and its cost: the tokens the amateur ran for the
  request and its share of the stage's time;
* the overlap scheduler is off (the stage reads each request's tokens as the
  scheduler recorded them), and so are CUDA graphs (the amateur runs eagerly).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from sglang_ilsi.engine.scheduler import sglang_forward
from sglang_ilsi.engine.scheduler.logits_stage import META_KEY
from sglang_ilsi.methods.model_aided.contrastive_decoding_beta import contrast_beta
from sglang_ilsi.methods.speculative.speculative_contrastive import SpeculativeContrastive

logger = logging.getLogger(__name__)

ALGORITHM = SpeculativeContrastive.algorithm
METHOD = "speculative_contrastive_decoding"  # as reported in meta_info.ilsi
DEFAULT_SHAPE = {"speculative_num_steps": 3, "speculative_eagle_topk": 1,
                 "speculative_num_draft_tokens": 4}
DEFAULT_ALPHA = 0.1
DEFAULT_BETA = 0.5


class ContrastStage:
    """The amateur beside one target ``ModelRunner``: after each target
    forward of the worker, ``next_token_logits`` become ``s_cd``."""

    def __init__(self, target_runner: Any, amateur_runner: Any, alpha: float, beta: float):
        self.runner = target_runner
        self.model = amateur_runner.model
        if amateur_runner.model_config.vocab_size != target_runner.model_config.vocab_size:
            raise ValueError(f"{ALGORITHM}: the amateur's vocabulary differs from the target's")
        self.pool, self.backend, self.valid, kv_bytes = sglang_forward.kv_cache_beside(
            amateur_runner.model_config, target_runner)
        self.alpha = alpha
        self.beta = beta
        self.reqs: list[Any] | None = None  # the batch's requests, row order
        logger.info("sglang-ilsi: %s alpha=%g beta=%g; amateur KV pool %.1f MB",
                    ALGORITHM, alpha, beta, kv_bytes / 2**20)

    # -- the hook ---------------------------------------------------------------
    def after_forward(self, forward_batch: Any, output: Any) -> None:
        mode = forward_batch.forward_mode
        logits_output = getattr(output, "logits_output", None)
        target = getattr(logits_output, "next_token_logits", None)
        if mode.is_idle() or target is None or forward_batch.batch_size == 0:
            return
        if self.reqs is None or len(self.reqs) != forward_batch.batch_size:
            raise RuntimeError(f"sglang-ilsi: {ALGORITHM} saw a target forward outside its "
                               "worker's step; the contrastive distribution cannot be formed")
        start = time.perf_counter()
        self._invalidate(forward_batch.out_cache_loc)
        if mode.is_target_verify():
            amateur = self._verify(forward_batch)
        else:
            amateur = self._extend(forward_batch)
        logits_output.next_token_logits = contrast_beta(
            target.float(), amateur.to(target.device), self.alpha, self.beta).to(target.dtype)
        share = (time.perf_counter() - start) * 1000.0 / forward_batch.batch_size
        for req in self.reqs:
            cost = self.report(req)["cost"]
            cost["contrast_ms"] = round(cost["contrast_ms"] + share, 4)

    # -- per-request reports ------------------------------------------------------
    def report(self, req: Any) -> dict[str, Any]:
        """The request's ``meta_info.ilsi`` report (live; created on first use)."""
        info = req.customized_info if req.customized_info is not None else {}
        reports = info.get(META_KEY)
        if reports:
            return reports[0]
        summary = {
            "method": METHOD,
            "family": "model-aided/draft",
            "params": {"alpha": self.alpha, "beta": self.beta},
            "source": "server",
            "why": f"the server decodes every request with --speculative-algorithm {ALGORITHM}: "
                   "the draft model is also the contrastive amateur",
            "cost": {"aux_model_tokens": 0, "contrast_ms": 0.0},
        }
        info[META_KEY] = [summary]
        req.customized_info = info
        return summary

    def cover_next_tokens(self, reqs: list[Any], tokens_per_step: int) -> None:
        """SGLang slices ``customized_info`` per output token: one reference to
        the live report for every token the request has, or may get this step."""
        for req in reqs:
            info = req.customized_info or {}
            reports = info.get(META_KEY)
            if reports:
                want = len(req.output_ids) + tokens_per_step + 1
                if len(reports) < want:
                    reports.extend([reports[0]] * (want - len(reports)))

    # -- the amateur's forwards ---------------------------------------------------
    def _invalidate(self, loc: torch.Tensor | None) -> None:
        """The target writes new tokens into these slots: their amateur KV is stale."""
        if loc is not None:
            self.valid[loc.to(self.valid.device).long()] = False

    def _tokens(self, row: int, length: int) -> list[int]:
        req = self.reqs[row]
        tokens = [*req.origin_input_ids, *req.output_ids][:length]
        if len(tokens) < length:
            raise RuntimeError(f"sglang-ilsi: {ALGORITHM}: request {req.rid} has "
                               f"{len(tokens)} tokens recorded for a sequence of {length}")
        return tokens

    def _catch_up(self, fb: Any, lengths: list[int], keep_last: bool) -> torch.Tensor | None:
        """Amateur KV for each row's first ``lengths[b]`` tokens, computing only
        what is not already valid; with ``keep_last`` the last token is always
        computed and the ``[bs, vocab]`` logits after it are returned."""
        jobs = [(int(fb.req_pool_indices[b]), length,
                 lambda b=b, length=length: self._tokens(b, length))
                for b, length in enumerate(lengths)]
        logits, computed = sglang_forward.extend_stale(
            fb, self.model, self.backend, self.valid,
            self.runner.req_to_token_pool.req_to_token, jobs, keep_last)
        for req, count in zip(self.reqs, computed, strict=True):
            self.report(req)["cost"]["aux_model_tokens"] += count
        return logits

    def _extend(self, fb: Any) -> torch.Tensor:
        """Prefill (or a plain step): the amateur's logits after each row's last token."""
        lengths = [int(x) for x in _cpu(fb.seq_lens).tolist()]
        logits = self._catch_up(fb, lengths, keep_last=True)
        assert logits is not None
        return logits

    def _verify(self, fb: Any) -> torch.Tensor:
        """Verify: the amateur's logits at every draft position (``[bs * n, vocab]``)."""
        self._catch_up(fb, [int(x) for x in _cpu(fb.seq_lens).tolist()], keep_last=False)
        view = sglang_forward.all_positions_view(fb)
        logits = sglang_forward.run_forward(self.model, self.backend, view)
        self.valid[fb.out_cache_loc.to(self.valid.device).long()] = True
        n = int(fb.spec_info.draft_token_num)
        for req in self.reqs:
            self.report(req)["cost"]["aux_model_tokens"] += n
        return logits


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t if t.device.type == "cpu" else t.cpu()


_STAGE: ContrastStage | None = None


def open_stage(target_runner: Any, amateur_runner: Any) -> ContrastStage:
    """Create this process's stage (the worker calls it once it has both models)."""
    from sglang_ilsi.engine.http import api

    global _STAGE
    config = api.config()
    _STAGE = ContrastStage(target_runner, amateur_runner,
                           config.scd_alpha if config.scd_alpha is not None else DEFAULT_ALPHA,
                           config.scd_beta if config.scd_beta is not None else DEFAULT_BETA)
    return _STAGE


def after_forward(runner: Any, forward_batch: Any, output: Any) -> None:
    """Called after every ``ModelRunner.forward`` (``engine/patches.py``)."""
    current = _STAGE
    if current is not None and runner is current.runner:
        current.after_forward(forward_batch, output)


def register() -> None:
    """Register the algorithm in this process (idempotent)."""
    from sglang_ilsi.engine.speculative.algorithm_base import register_algorithm

    register_algorithm(ALGORITHM, "standalone", handle_server_args,
                       "sglang_ilsi.engine.speculative.contrastive_worker:SpeculativeContrastiveWorker")


def handle_server_args(server_args: Any) -> None:
    """The draft-model defaults, a chain of drafts, run synchronously and eagerly."""
    from sglang_ilsi.engine.cpu import portability

    if not getattr(server_args, "speculative_draft_model_path", None):
        raise ValueError(f"--speculative-algorithm {ALGORITHM} needs the amateur as "
                         "--speculative-draft-model-path")
    for name, value in DEFAULT_SHAPE.items():
        if getattr(server_args, name, None) is None:
            setattr(server_args, name, value)
    if server_args.speculative_eagle_topk != 1:
        raise ValueError(f"--speculative-algorithm {ALGORITHM} verifies a chain of drafts: "
                         "--speculative-eagle-topk must be 1")
    if getattr(server_args, "max_running_requests", None) is None:
        server_args.max_running_requests = 48  # as SGLang does for STANDALONE
    server_args.disable_overlap_schedule = True
    if portability.cuda_available() and not server_args.disable_cuda_graph:
        logger.warning("sglang-ilsi: %s runs the amateur eagerly; CUDA graphs disabled "
                       "(this path is verified on CPU only)", ALGORITHM)
        server_args.disable_cuda_graph = True
