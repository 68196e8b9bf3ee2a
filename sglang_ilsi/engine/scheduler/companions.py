"""Extra next-token distributions, batched across requests, in lockstep with
the target: the ``aux_model``, ``second_context`` and ``layer_logits``
capabilities.

After each target forward (a hook around ``ModelRunner.forward``), the rows of
the batch whose methods need more than their own logits get, for this step:

- **aux_model** — every auxiliary model a row names runs one batched EXTEND
  forward over the tokens of the row's sequence it has not yet seen. The aux
  model's KV pool has the target's slot count, so it writes at the target's
  own slot indices: no allocation, and a prefix the radix cache shares with an
  earlier aux request is reused (``AuxModel.valid`` marks which slots hold aux
  KV of the token the target has there; slots the target writes anew are
  cleared first). A decoding step is one aux token per row.
- **second_context** — the target model itself runs on the row's second
  sequence (its disturbed prompt, then the tokens the request generated). The
  second sequence has its own row in SGLang's request-to-token table and KV
  slots from SGLang's allocator (inside the server's KV budget); its leading
  tokens that equal the request's prompt point at the request's own slots, so
  the shared prefix is neither recomputed nor stored twice. Freed with the
  request (a hook on ``ReqToTokenPool.free``), including on retraction.
- **layer_logits** — forward hooks on the chosen decoder layers keep the
  residual stream during the target forward (only when a row of the batch
  asked), and the rows' last positions go through the final norm and LM head.
- **datastore** — the hidden state a store is keyed by (its layer's residual
  stream, or the final normed hidden state the logits processor receives) is
  kept the same way; the last positions of all rows using one store go to faiss
  as **one** batched search per step (k = the largest any of them asked for),
  and each row gets its neighbours (distances, next tokens).

The results land in the request's :class:`~sglang_ilsi.methods.base.RowContext`
``inputs``; the logits stage then applies the methods. Requests whose methods
need nothing extra pay nothing: no hook, no copy, no extra forward.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch

from sglang_ilsi.engine.scheduler import sglang_forward
from sglang_ilsi.engine.scheduler.logits_stage import (
    STATE_ATTR,
    RequestState,
    in_chunked_prefill,
    state_of,
)
from sglang_ilsi.methods.base import (
    SECOND,
    aux_key,
    continuation_key,
    datastore_key,
    layer_key,
)

logger = logging.getLogger(__name__)


@dataclass
class SecondSequence:
    """The second context of one request inside SGLang's pools."""

    row: int  # its own row of the request-to-token table
    prompt_ids: list[int]
    done: int = 0  # tokens in its KV cache
    owned: list[torch.Tensor] = field(default_factory=list)  # slots we allocated
    shared: int = 0  # leading slots borrowed from the request's own row


class CompanionStage:
    """One per target ``ModelRunner`` (i.e. per scheduler process)."""

    def __init__(self, runner: Any, aux_models: dict[str, sglang_forward.AuxModel],
                 datastores: dict[str, Any] | None = None):
        self.runner = runner
        self.aux = aux_models
        self.stores = datastores or {}  # name → sglang_ilsi.datastore.Store
        self.num_layers = int(runner.model_config.num_hidden_layers) if self.stores else 0
        self._warned: set[str] = set()

    # -- the step ---------------------------------------------------------------
    def members(self, forward_batch: Any) -> list[tuple[int, Any, RequestState]]:
        info = getattr(forward_batch, "sampling_info", None)
        params_list = getattr(info, "custom_params", None)
        if not params_list:
            return []
        out = []
        for row, params in enumerate(params_list):
            state = state_of(params)
            if state is None or not state.requirements:
                continue
            state.ready = False
            if in_chunked_prefill(params):
                continue  # a middle chunk of a chunked prefill: nothing is sampled
            out.append((row, params["__req__"], state))
        return out

    def around_forward(self, original: Any, runner: Any, forward_batch: Any,
                       *args: Any, **kwargs: Any) -> Any:
        members = self.members(forward_batch)
        if not members:
            result = original(runner, forward_batch, *args, **kwargs)
            self._invalidate_aux(forward_batch)
            return result
        layers = {i for _, _, s in members for i in s.requirements.layers}
        store_layers = {self.stores[name].layer for _, _, s in members
                        for name, *_ in s.requirements.datastores if name in self.stores}
        layers |= {i for i in store_layers if i < self.num_layers}
        captured: dict[int, torch.Tensor] = {}
        with ExitStack() as stack:
            for index in sorted(layers):
                stack.callback(self._capture(index, captured).remove)
            if self.num_layers and self.num_layers in store_layers:
                stack.callback(sglang_forward.capture_final_hidden(
                    self.runner.model, self.num_layers, captured).remove)
            result = original(runner, forward_batch, *args, **kwargs)
        start = time.perf_counter()
        try:
            self._after_forward(forward_batch, members, captured)
        except Exception:  # never take the scheduler down: the rows fall back
            logger.exception("sglang-ilsi: extra distributions failed for this step")
        per_row = (time.perf_counter() - start) / len(members)
        for _, _, state in members:
            state.companion_seconds += per_row
        return result

    def _capture(self, index: int, captured: dict[int, torch.Tensor]) -> Any:
        return sglang_forward.capture_stream_before(self.runner.model, index, captured)

    def _after_forward(self, fb: Any, members: list[tuple[int, Any, RequestState]],
                       captured: dict[int, torch.Tensor]) -> None:
        last_pos = self._last_positions(fb)
        seq_lens = fb.seq_lens_cpu.tolist() if fb.seq_lens_cpu is not None \
            else fb.seq_lens.tolist()
        self._invalidate_aux(fb)
        rows: list[tuple[int, Any, RequestState, list[int]]] = []
        for row, req, state in members:
            state.inputs.clear()
            tokens = list(req.origin_input_ids) + list(state.output_ids)
            seq_len = int(seq_lens[row])
            if len(tokens) < seq_len:
                self._warn_once("history", "sglang-ilsi: token history shorter than the "
                                "sequence; extra distributions skipped for a row")
                continue
            rows.append((row, req, state, tokens[:seq_len]))
        self._layer_logits(rows, captured, last_pos)
        self._datastores(rows, captured, last_pos)
        self._aux_models(fb, rows)
        self._second_contexts(fb, rows)
        for _, _, state, _ in rows:
            state.ready = all(k in state.inputs for k in state.input_keys) and all(
                datastore_key(name, heads) in state.inputs
                for name, _, heads in state.requirements.datastores)

    def _invalidate_aux(self, fb: Any) -> None:
        """The target wrote new KV into this forward's slots: whatever aux KV
        they held belongs to another token now."""
        loc = getattr(fb, "out_cache_loc", None)
        if loc is not None and self.aux:
            for aux in self.aux.values():
                aux.valid[loc.to(aux.valid.device).long()] = False

    @staticmethod
    def _last_positions(fb: Any) -> list[int]:
        if fb.forward_mode.is_decode():
            return list(range(fb.batch_size))
        ends = torch.cumsum(fb.extend_seq_lens.to("cpu", torch.int64), 0) - 1
        return ends.tolist()

    # -- layer_logits -----------------------------------------------------------------
    def _layer_logits(self, rows: list, captured: dict[int, torch.Tensor],
                      last_pos: list[int]) -> None:
        vocab = self.runner.model_config.vocab_size
        for index, hidden in captured.items():
            users = [(row, state) for row, _, state, _ in rows
                     if index in state.requirements.layers]
            if not users:
                continue
            positions = torch.tensor([last_pos[row] for row, _ in users], device=hidden.device)
            logits = sglang_forward.early_exit_logits(self.runner.model,
                                                      hidden.index_select(0, positions), vocab)
            for i, (_, state) in enumerate(users):
                state.inputs[layer_key(index)] = logits[i]

    # -- datastore ---------------------------------------------------------------------
    def _datastores(self, rows: list, captured: dict[int, torch.Tensor],
                    last_pos: list[int]) -> None:
        """One batched search per store and head count, for all the rows using it."""
        for name, store in self.stores.items():
            hidden = captured.get(store.layer)
            by_heads: dict[int, list[tuple[int, RequestState, int]]] = {}
            for row, _, state, _ in rows:
                for wanted, k, heads in state.requirements.datastores:
                    if wanted == name:
                        by_heads.setdefault(heads, []).append((row, state, k))
            if hidden is None:
                continue
            for heads, users in sorted(by_heads.items()):
                positions = torch.tensor([last_pos[row] for row, _, _ in users],
                                         device=hidden.device)
                queries = hidden.index_select(0, positions).float().cpu().numpy()
                most = max(k for _, _, k in users)
                # NEST: each neighbour's continuation in its document, for the rows asking
                length = max((n for _, state, _ in users
                              for wanted, n in state.requirements.continuations
                              if wanted == name), default=0) if heads == 1 else 0
                following = None
                if heads == 1 and length:
                    distances, tokens, entries = store.search_entries(queries, most)
                    following = store.continuations(entries, length)
                elif heads == 1:
                    distances, tokens = store.search(queries, most)
                else:
                    distances, tokens = store.head_search(queries, most, heads)
                for i, (_, state, k) in enumerate(users):
                    state.inputs[datastore_key(name, heads)] = torch.stack([
                        torch.from_numpy(distances[i, ..., :k]),
                        torch.from_numpy(tokens[i, ..., :k].astype("float32"))])
                    if following is not None:
                        state.inputs[continuation_key(name)] = torch.from_numpy(
                            following[i, :k])
                    cost = state.summary["cost"]
                    cost["datastore_searches"] = cost.get("datastore_searches", 0) + 1

    # -- aux_model ---------------------------------------------------------------------
    def _aux_models(self, fb: Any, rows: list) -> None:
        table = self.runner.req_to_token_pool.req_to_token
        for name, aux in self.aux.items():
            users = [(row, req, state, seq) for row, req, state, seq in rows
                     if name in state.requirements.aux_models]
            if not users:
                continue
            # Aux KV is reused wherever it is valid for the request's slots: a
            # prefix the radix cache shares, and the request's own earlier steps.
            # Checked every step, because SGLang may re-point a row's slots to
            # identical tokens cached in the tree.
            jobs = [(int(req.kv.req_pool_idx), len(seq), lambda seq=seq: seq)
                    for _, req, _, seq in users]
            logits, computed = sglang_forward.extend_stale(
                fb, aux.model, aux.attn_backend, aux.valid, table, jobs)
            for i, (_, _, state, _) in enumerate(users):
                state.inputs[aux_key(name)] = logits[i]
                state.summary["cost"]["aux_model_tokens"] += computed[i]

    # -- second_context -----------------------------------------------------------------
    def _second_contexts(self, fb: Any, rows: list) -> None:
        users = [(row, req, state, seq) for row, req, state, seq in rows
                 if state.requirements.second_context]
        if not users:
            return
        pool = self.runner.req_to_token_pool
        allocator = self.runner.token_to_kv_pool_allocator
        jobs = []
        for _, req, state, seq in users:
            second = state.second
            if second is None:
                second = self._open_second(req, state, seq)
                if second is None:
                    continue
            elif second.shared:
                # the request's own slots for the shared prefix, as of now
                # (SGLang may re-point them to identical cached tokens)
                main_row = int(req.kv.req_pool_idx)
                pool.req_to_token[second.row, :second.shared] = \
                    pool.req_to_token[main_row, :second.shared]
            generated = seq[len(req.origin_input_ids):]
            target = second.prompt_ids + generated
            pending = target[second.done:]
            if not pending:
                continue
            slots = allocator.alloc(len(pending))
            if slots is None:
                self._fail(req, state, "out of KV cache for the second context")
                continue
            second.owned.append(slots)
            pool.req_to_token[second.row, second.done:second.done + len(pending)] = \
                slots.to(pool.req_to_token.dtype)
            jobs.append((state, second, pending, slots))
        if not jobs:
            return
        batch = sglang_forward.extend_batch(
            fb, req_pool_indices=[s.row for _, s, _, _ in jobs],
            prefix_lens=[s.done for _, s, _, _ in jobs],
            token_lists=[p for _, _, p, _ in jobs],
            out_cache_loc=torch.cat([slots for _, _, _, slots in jobs]))
        logits = sglang_forward.run_forward(self.runner.model, self.runner.attn_backend, batch)
        for i, (state, second, pending, _) in enumerate(jobs):
            second.done += len(pending)
            state.inputs[SECOND] = logits[i]
            state.summary["cost"]["extra_forward_tokens"] += len(pending)

    def _open_second(self, req: Any, state: RequestState, seq: list[int]) -> SecondSequence | None:
        pool = self.runner.req_to_token_pool
        rows = pool.alloc_rows(1)
        if not rows:
            self._fail(req, state, "no free request slot for the second context")
            return None
        prompt_ids = list(state.second_ids)
        prompt = list(req.origin_input_ids)
        shared = 0
        limit = min(len(prompt_ids) - 1, len(prompt), len(seq))
        while shared < limit and prompt_ids[shared] == prompt[shared]:
            shared += 1
        second = SecondSequence(row=rows[0], prompt_ids=prompt_ids, done=shared, shared=shared)
        if shared:
            main_row = int(req.kv.req_pool_idx)
            pool.req_to_token[second.row, :shared] = pool.req_to_token[main_row, :shared]
        state.second = second
        state.summary["cost"]["shared_prefix_tokens"] = shared
        return second

    def _fail(self, req: Any, state: RequestState, why: str) -> None:
        """The request cannot get its extra distribution: it is aborted with a
        message rather than silently decoded without its method."""
        from sglang.srt.managers.schedule_batch import FINISH_ABORT

        message = f"sglang-ilsi: {why}; retry with fewer concurrent requests"
        logger.warning("%s (request %s)", message, getattr(req, "rid", "?"))
        state.summary["error"] = message
        req.to_finish = FINISH_ABORT(message)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)

    # -- release ---------------------------------------------------------------------
    def release(self, req: Any) -> None:
        """Give back the request's second-context slots and row (its KV row is
        being freed: finished, aborted or retracted), so that a resumed request
        starts its second context afresh."""
        state = getattr(req, STATE_ATTR, None)
        second = getattr(state, "second", None)
        if second is None:
            return
        if second.owned:
            self.runner.token_to_kv_pool_allocator.free(torch.cat(second.owned))
        self.runner.req_to_token_pool.free_rows([second.row])
        state.second = None


_STAGE: CompanionStage | None = None


def stage() -> CompanionStage | None:
    return _STAGE


def on_runner_ready(runner: Any, aux_paths: dict[str, str],
                    datastore_paths: dict[str, str] | None = None) -> None:
    """After the target ``ModelRunner`` built its pools and attention backend:
    load the auxiliary models and datastores and create this process's stage."""
    global _STAGE
    if getattr(runner, "is_draft_worker", False):
        return
    aux = {name: _load_aux_model(name, path, runner) for name, path in aux_paths.items()}
    stores = {name: load_datastore(name, path, runner)
              for name, path in (datastore_paths or {}).items()}
    _STAGE = CompanionStage(runner, aux, stores)


def _load_aux_model(name: str, path: str, runner: Any) -> sglang_forward.AuxModel:
    """Load one aux model on this rank; any failure stops the launch with a
    message naming the flag, the model and the rank (under --tp-size every
    rank loads its shard, and one failing rank takes the server down)."""
    try:
        return sglang_forward.load_aux_model(name, path, runner)
    except SystemExit as e:
        message = str(e)
    except Exception as e:
        message = (f"sglang-ilsi: --ilsi-aux-model {name}: could not load {path} on TP rank "
                   f"{getattr(runner, 'tp_rank', 0)}: {type(e).__name__}: {e}")
    # Logged first: when one rank of several fails, SGLang kills the others (and
    # may kill this one) before a SystemExit's own message reaches stderr.
    logger.error(message)
    raise SystemExit(message)


def load_datastore(name: str, path: str, runner: Any) -> Any:
    """A store checked at launch (``config._datastores``: checksums), loaded here
    and checked against the served model and tokenizer (again: the offline
    ``Engine`` has no ``--model-path`` flag for the launcher to read); a store
    built for another model stops the launch."""
    from sglang_ilsi.datastore import DatastoreError, Store, check_model

    try:
        store = Store(path, checksums=False)
        check_model(store.meta, path, runner.model_config.model_path)
    except DatastoreError as e:
        raise SystemExit(f"sglang-ilsi: --ilsi-datastore {name}: {e}") from None
    config = runner.model_config
    if store.dim != int(config.hidden_size) or store.layer > int(config.num_hidden_layers):
        raise SystemExit(
            f"sglang-ilsi: --ilsi-datastore {name}: keys of size {store.dim} at layer "
            f"{store.layer} do not fit this model (hidden size {config.hidden_size}, "
            f"{config.num_hidden_layers} layers)")
    logger.info("sglang-ilsi: datastore %r loaded from %s (%d entries, layer %d, %s index)",
                name, path, store.meta["entries"], store.layer, store.meta["index"]["kind"])
    return store


def around_forward(original: Any, runner: Any, forward_batch: Any, *args: Any,
                   **kwargs: Any) -> Any:
    current = _STAGE
    if current is None or runner is not current.runner:
        return original(runner, forward_batch, *args, **kwargs)
    return current.around_forward(original, runner, forward_batch, *args, **kwargs)


def before_free(pool: Any, req: Any, *args: Any, **kwargs: Any) -> None:
    current = _STAGE
    if current is not None and pool is current.runner.req_to_token_pool:
        current.release(req)
