"""The ``LOOKAHEAD`` worker: SGLang's NGRAM worker with a Jacobi window.

SGLang touch points (checked against 0.5.23, ``speculative/ngram_worker.py``):
``NGRAMWorker._prepare_draft_tokens(batch) -> (tokens, mask)`` builds each
step's draft tree, ``forward_batch_generation`` verifies it and returns the
verify forward's ``logits_output`` (one row per tree node), and
``clear_cache_pool`` resets the pool on ``/flush_cache``. Everything else
(tree positions, KV slots, verification, the n-gram trie) is SGLang's.
The method itself is in :mod:`sglang_ilsi.engine.speculative.lookahead`.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from sglang.srt.runtime_context import get_spec
from sglang.srt.speculative.cpp_ngram.ngram_corpus import NgramCorpus
from sglang.srt.speculative.ngram_worker import NGRAMWorker

from sglang_ilsi.engine.speculative import lookahead

logger = logging.getLogger(__name__)
# verify steps between the source-of-drafts log lines
REPORT_EVERY = int(os.environ.get("SGLANG_ILSI_LOOKAHEAD_REPORT_EVERY", "64"))


class LookaheadWorker(NGRAMWorker):
    """Drafts = the pool's n-gram tree plus the request's lookahead window."""

    def __init__(self, server_args, gpu_id, nccl_port, target_worker) -> None:
        super().__init__(server_args, gpu_id, nccl_port, target_worker)
        if self.enable_overlap:
            raise ValueError(f"{lookahead.ALGORITHM} runs with the overlap scheduler disabled")
        self.shape = lookahead.shape_in_use()
        self.pool_tokens = lookahead.pool_size(self.draft_token_num, self.shape)
        spec = get_spec()
        # The pool's trie proposes the verification branch: what the window leaves.
        self.ngram_corpus = NgramCorpus(
            min_bfs_breadth=spec.speculative_ngram_min_bfs_breadth,
            max_bfs_breadth=spec.speculative_ngram_max_bfs_breadth,
            match_type=spec.speculative_ngram_match_type,
            capacity=spec.speculative_ngram_capacity,
            max_trie_depth=spec.speculative_ngram_max_trie_depth,
            draft_token_num=self.pool_tokens,
        )
        self.windows: dict[str, lookahead.JacobiWindow] = {}
        self.sources = lookahead.DraftSources(self.pool_tokens)
        self._tree: np.ndarray | None = None

    def clear_cache_pool(self) -> None:
        super().clear_cache_pool()
        self.windows.clear()

    def _window(self, req) -> lookahead.JacobiWindow:
        window = self.windows.get(req.rid)
        if window is None:
            window = lookahead.JacobiWindow(self.shape, req.origin_input_ids_unpadded)
            self.windows[req.rid] = window
        return window

    def _prepare_draft_tokens(self, batch) -> tuple[np.ndarray, np.ndarray]:
        depth = self.max_trie_depth
        contexts, lengths = [], []
        for req in batch.reqs:
            # Synchronous scheduling: output_ids already ends with the root.
            tail = list(req.origin_input_ids_unpadded[-depth:]) + list(req.output_ids[-depth:])
            contexts.append(tail[-depth:])
            lengths.append(len(req.origin_input_ids_unpadded) + len(req.output_ids))
        self.ngram_corpus.synchronize()
        pool_tokens, pool_mask = self.ngram_corpus.batch_get(
            [req.rid for req in batch.reqs], contexts, lengths)
        windows = np.array([self._window(req).tokens() for req in batch.reqs],
                           dtype=np.int64).reshape(len(batch.reqs), self.shape.nodes)
        tokens, mask = lookahead.compose_tree(pool_tokens, pool_mask, windows, self.shape)
        self._tree = (tokens, mask)
        return tokens, mask

    def forward_batch_generation(self, batch, on_publish=None, pp_proxy_tensors=None):
        verifying = batch.forward_mode.is_decode() and len(batch.reqs) > 0
        rids = [req.rid for req in batch.reqs]
        result = super().forward_batch_generation(
            batch, on_publish=on_publish, pp_proxy_tensors=pp_proxy_tensors)
        if verifying:
            self._advance_windows(rids, result.logits_output.next_token_logits,
                                  result.accept_lens)
        return result

    def _advance_windows(self, rids: list[str], logits: torch.Tensor,
                         accept_lens: torch.Tensor) -> None:
        """Jacobi step for every request; trajectories go into the pool."""
        newest = self.pool_tokens + self.shape.index(self.shape.levels - 1, 0)
        argmax = logits.argmax(dim=-1).view(len(rids), self.draft_token_num).cpu().numpy()
        if self._tree is not None:
            self.sources.count(*self._tree, argmax, accept_lens.cpu().numpy() - 1)
            if self.sources.steps % REPORT_EVERY == 0:
                logger.info("sglang-ilsi lookahead: %s", self.sources.summary())
        ngrams: list[list[int]] = []
        for rid, row in zip(rids, argmax[:, newest:newest + self.shape.window].tolist(),
                            strict=True):
            ngrams.extend(self.windows[rid].advance(row))
        if ngrams:
            self.ngram_corpus.batch_put(ngrams)
        for rid in set(self.windows) - set(rids):
            del self.windows[rid]  # finished, aborted or retracted (re-seeded on return)
