"""The ``SPECULATIVE_CONTRASTIVE`` worker: SGLang's draft-model worker whose
draft is also the amateur.

SGLang touch points (checked against 0.5.23, ``speculative/standalone_worker_v2.py``
and ``eagle_worker_v2.py``): ``StandaloneWorkerV2(server_args, gpu_id,
nccl_port, target_worker)`` loads the draft into ``draft_worker.draft_runner``
(the KV pools come later, so the stage opens at the first step);
``forward_batch_generation(batch, ...)`` runs one scheduler step (a prefill,
or draft + verify + draft extend) with ``batch.reqs`` in row order. The worker
opens the :class:`~sglang_ilsi.engine.speculative.contrastive.ContrastStage` on the
draft's weights and tells it the step's requests; the stage does the rest
after each target forward. Drafting, verification, the KV cache and the radix
cache are SGLang's.
"""

from __future__ import annotations

from typing import Any

from sglang.srt.speculative.standalone_worker_v2 import StandaloneWorkerV2

from sglang_ilsi.engine.speculative import contrastive


class SpeculativeContrastiveWorker(StandaloneWorkerV2):
    """Draft with the amateur; verify against the contrastive distribution."""

    def __init__(self, server_args, gpu_id, nccl_port, target_worker) -> None:
        super().__init__(server_args, gpu_id, nccl_port, target_worker)
        self.contrast: contrastive.ContrastStage | None = None

    def forward_batch_generation(self, batch: Any, *args: Any, **kwargs: Any) -> Any:
        if self.contrast is None:  # the KV pools exist once the scheduler runs
            self.contrast = contrastive.open_stage(
                self.target_worker.model_runner, self.draft_worker.draft_runner)
        reqs = list(getattr(batch, "reqs", None) or [])
        self.contrast.reqs = reqs
        try:
            result = super().forward_batch_generation(batch, *args, **kwargs)
        finally:
            self.contrast.reqs = None
        self.contrast.cover_next_tokens(reqs, self.speculative_num_draft_tokens)
        return result
