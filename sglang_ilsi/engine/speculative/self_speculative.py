"""``--speculative-algorithm SELF_SPECULATIVE``, registered with SGLang's registry.

Self-speculative decoding (Zhang et al. 2024, Draft & Verify): the target
model with some layers skipped drafts ``k`` tokens, the full target verifies
them in one forward; lossless, no second model to train or ship. Registered
through SGLang's supported extension point
(``SpeculativeAlgorithm.register``); selected by flag like a built-in::

    python -m sglang.launch_server --model-path M --ilsi \\
        --speculative-algorithm SELF_SPECULATIVE [--ilsi-self-spec-skip 1,3,5] \\
        [--speculative-num-steps 3 --speculative-eagle-topk 1 --speculative-num-draft-tokens 4]

At launch, :func:`handle_server_args` derives the layer-skipped
draft from the target (:mod:`sglang_ilsi.engine.speculative.layer_skip`, cached) and
points ``speculative_draft_model_path`` at it; the worker is SGLang's own
draft-model worker (``StandaloneWorkerV2``), so verification, the KV cache
and the radix cache are SGLang's, and on a CPU the draft runs on
``engine/cpu/draft_attention.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sglang_ilsi.methods.speculative.self_speculative import (
    SelfSpeculative,
    default_skip,
    num_layers,
)

logger = logging.getLogger(__name__)

ALGORITHM = SelfSpeculative.algorithm
DEFAULT_SHAPE = {"speculative_num_steps": 3, "speculative_eagle_topk": 1,
                 "speculative_num_draft_tokens": 4}


def draft_for(model_path: str, skip: tuple[int, ...] | None) -> Path:
    """The layer-skipped draft folder for ``model_path`` (built on first use)."""
    from sglang_ilsi.engine.speculative import layer_skip

    target = Path(model_path)
    chosen = skip or default_skip(num_layers(target))
    return layer_skip.derive(target, chosen)


def register() -> None:
    """Register the algorithm in this process (idempotent)."""
    from sglang_ilsi.engine.speculative.algorithm_base import register_algorithm

    register_algorithm(ALGORITHM, "standalone", handle_server_args,
                       "sglang.srt.speculative.standalone_worker_v2:StandaloneWorkerV2")


def handle_server_args(server_args: Any) -> None:
    """Derive the draft from the target and set the draft-model defaults."""
    from sglang_ilsi.engine.cpu import portability
    from sglang_ilsi.engine.http import api

    if getattr(server_args, "speculative_draft_model_path", None):
        raise ValueError(
            f"--speculative-algorithm {ALGORITHM} derives its draft from the target; "
            "drop --speculative-draft-model-path (or use STANDALONE)")
    draft = draft_for(server_args.model_path, api.config().self_spec_skip or None)
    logger.info("sglang-ilsi: self-speculative draft %s", draft)
    server_args.speculative_draft_model_path = str(draft)
    for name, value in DEFAULT_SHAPE.items():
        if getattr(server_args, name, None) is None:
            setattr(server_args, name, value)
    if getattr(server_args, "max_running_requests", None) is None:
        server_args.max_running_requests = 48  # as SGLang does for STANDALONE
    if not portability.cuda_available():
        server_args.disable_overlap_schedule = True  # as SGLang does on CPU
