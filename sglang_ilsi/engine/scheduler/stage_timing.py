"""The logits stage on synthetic batches, without a model or SGLang's scheduler.

Builds rows the way SGLang hands them to :class:`.logits_stage.IlsiLogitProcessor`
(one ``custom_params`` dict per row, with the request under ``__req__``), each
request choosing one method with parameters that need no server (a fake
tokenizer; random tensors for the extra distributions a method needs), and times
:func:`.logits_stage.apply_methods` step after step. Used by
``benchmarks/logits_overhead.py --stage`` and ``scripts/gpu_check.py``; needs only
torch (SGLang is optional).

The time reported is the stage's *host* time per step: on a CUDA device the
kernels run asynchronously, so the timed region ends when ``apply_methods``
returns, and the device is synchronized outside it (before the next step), so
that one step's kernels never queue behind the next step's host work.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sglang_ilsi import registry
from sglang_ilsi.engine.scheduler import logits_stage
from sglang_ilsi.methods.base import SECOND_IDS, LogitsMethod, RowContext, column, scaled
from sglang_ilsi.methods.common import discard_stats
from sglang_ilsi.params import Param, validate_params
from sglang_ilsi.plan import ENCODED_KEY, MethodChoice

# Parameters beyond the defaults that a method needs to run without a server.
EXTRA_PARAMS: dict[str, dict[str, Any]] = {
    "keyword_boost": {"keywords": ["return", "self"]},
    "keyword_decay": {"keywords": ["return", "self"]},
    "lexical_constraints": {"include": ["return"], "exclude": ["lambda"]},
    "dola": {"layers": [2]},
    "sled": {"layers": [2]},
    "linear_combination": {"models": ["amateur"], "weights": [-0.5]},
    "cad": {SECOND_IDS: [5, 6, 7]},
    "cfg": {SECOND_IDS: [5, 6, 7]},
    "instructive_decoding": {SECOND_IDS: [5, 6, 7]},
    "pmi_decode": {SECOND_IDS: [5, 6, 7]},
    "rose": {SECOND_IDS: [5, 6, 7]},
}
TEMPERATURES = (0.0, 0.7, 1.0, 1.3)


class FakeTokenizer:
    """Text in 3-character chunks, each a token id from 10 upward."""

    def __init__(self, size: int = 1000):
        self.size = size
        self.vocab: dict[str, int] = {}

    def __len__(self) -> int:
        return self.size

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        chunks = [text[i:i + 3] for i in range(0, len(text), 3)]
        return [self.vocab.setdefault(c, 10 + len(self.vocab)) for c in chunks]


class StageProbe(LogitsMethod):
    """Not a method (never registered): reads one parameter column and the rows'
    temperatures, as every threshold method does, and returns the logits. The
    stage's time on it is its own bookkeeping, without a method's tensor math."""

    name = "stage_probe"
    family = "independent/sampling"
    paper = "none (a probe of the logits stage's own cost, 2026)"
    params = (Param("weight", "float", 1.0, "read and unused", minimum=0.0),)

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        column(rows, "weight", logits)
        scaled(logits[:, :1], rows)
        return logits


def _method(method: str | type[LogitsMethod]) -> type[LogitsMethod]:
    cls = registry.get(method) if isinstance(method, str) else method
    assert cls is not None and issubclass(cls, LogitsMethod), method
    return cls


def method_params(method: str | type[LogitsMethod]) -> dict[str, Any]:
    """Validated, prepared parameters of ``method`` for a synthetic request."""
    cls = _method(method)
    name = cls.name
    extra = dict(EXTRA_PARAMS.get(name, {}))
    internal = {k: extra.pop(k) for k in list(extra) if k.startswith("__")}
    raw = {**getattr(cls, "example", {}), **extra}
    params = cls.prepare(validate_params(cls.params, raw), FakeTokenizer())
    return {**params, **internal}


@dataclass
class SyntheticBatch:
    """``n`` requests of one method, their rows' ``custom_params`` and the logits."""

    method: str
    params_list: list[dict[str, Any]]
    logits: torch.Tensor
    reqs: list[Any] = field(default_factory=list)

    def fill_inputs(self) -> None:
        """Random extra distributions for the requests whose methods need them
        (what the companion stage provides in a server)."""
        vocab, device = self.logits.shape[-1], self.logits.device
        g = torch.Generator().manual_seed(7)
        for params in self.params_list:
            state = logits_stage.state_of(params)
            if state is None or not state.input_keys:
                continue
            for key in state.input_keys:
                state.inputs[key] = (torch.randn(vocab, generator=g) * 3).to(device)
            for name, k in getattr(state.requirements, "datastores", ()):
                distances = torch.rand(k, generator=g).sort().values * 10
                tokens = torch.randint(0, vocab, (k,), generator=g).float()
                state.inputs[f"datastore:{name}"] = torch.stack([distances, tokens]).to(device)
            state.ready = True


def fake_request(params: dict[str, Any], temperature: float, prompt_len: int = 16,
                 output: list[int] | None = None) -> Any:
    """What the stage reads of an SGLang ``Req``."""
    sampling = SimpleNamespace(temperature=temperature, max_new_tokens=4096,
                               custom_params=params)
    return SimpleNamespace(sampling_params=sampling, output_ids=list(output or []),
                           origin_input_ids=list(range(1, prompt_len + 1)),
                           eos_token_ids={0}, customized_info=None,
                           extend_end=prompt_len)


def make_batch(method: str | type[LogitsMethod], n: int, vocab: int,
               device: str | torch.device = "cpu", seed: int = 0,
               mask_every: int = 0) -> SyntheticBatch:
    """``n`` requests of ``method`` (mixed temperatures) and ``[n, vocab]`` logits,
    drawn on the CPU (the same for every device); with ``mask_every``, every such
    row has every 7th token removed (-inf), as a grammar would."""
    cls = _method(method)
    params = method_params(cls)
    choice = MethodChoice(method=cls.name, params=params, trace_k=0, source="request")
    encoded = choice.encode()
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(1.0, 4.0, n).unsqueeze(1)
    logits = torch.randn(n, vocab, generator=g) * scale
    if mask_every:
        logits[::mask_every, ::7] = float("-inf")
    logits = logits.to(device)
    batch = SyntheticBatch(cls.name, [], logits)
    for i in range(n):
        row_params: dict[str, Any] = {ENCODED_KEY: encoded}
        req = fake_request(row_params, TEMPERATURES[i % len(TEMPERATURES)],
                           output=[11 + (i + j) % 50 for j in range(8)])
        row_params["__req__"] = req
        if registry.get(cls.name) is not cls:  # not registered: the stage cannot look it up
            setattr(req, logits_stage.STATE_ATTR, logits_stage.RequestState(choice, [cls], req))
        batch.params_list.append(row_params)
        batch.reqs.append(req)
    batch.fill_inputs()
    return batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_stage(batch: SyntheticBatch, steps: int = 5, warmup: int = 1,
               apply: Callable[[torch.Tensor, list], torch.Tensor] | None = None,
               record: bool = False) -> dict[str, float]:
    """Host µs per step of ``apply`` (default :func:`logits_stage.apply_methods`) on
    ``batch``: the median and min over ``steps`` steps after ``warmup``, and the
    median until the device finished the step's work (``with_device_us``). With
    ``record``, each row's greedy token is appended to its state between steps, as
    the sampler hook does (its cost is not timed)."""
    run = apply or logits_stage.apply_methods
    device = batch.logits.device
    host: list[float] = []
    total: list[float] = []
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        out = run(batch.logits, list(batch.params_list))
        elapsed = time.perf_counter() - start
        _sync(device)
        if i >= warmup:
            host.append(elapsed * 1e6)
            total.append((time.perf_counter() - start) * 1e6)
        if record:
            logits_stage.record_tokens(batch.params_list, range(len(batch.params_list)),
                                       out.argmax(dim=-1))
    return {"median_us": round(statistics.median(host), 1), "min_us": round(min(host), 1),
            "with_device_us": round(statistics.median(total), 1)}


def logits_method_names() -> list[str]:
    return sorted(registry.logits_methods())


def apply_rebuilt(logits: torch.Tensor, custom_params: Sequence[Any]) -> torch.Tensor:
    """The stage as it was before its layouts were kept (issue #17), for the
    benchmark's side-by-side figure: members, groups and row indices found anew at
    every step, and plain lists handed to ``apply`` (so every parameter column and
    the temperatures are built from Python lists at every call). Same results
    (without the optional per-token trace)."""
    members = []
    for row, params in enumerate(custom_params):
        state = logits_stage.state_of(params)
        if state is not None and not logits_stage.in_chunked_prefill(params):
            if state.ready:
                members.append((row, state))
            else:
                state.skip()
    if not members:
        return logits
    start = time.perf_counter()
    work = logits.float()
    depth = 0
    while True:
        groups: dict[type[LogitsMethod], tuple[list[int], list[RowContext]]] = {}
        for row, state in members:
            if depth < len(state.steps):
                method, ctx = state.steps[depth]
                rows, contexts = groups.setdefault(method, ([], []))
                rows.append(row)
                contexts.append(ctx)
        if not groups:
            break
        for method, (rows, contexts) in groups.items():
            if len(rows) == work.shape[0]:
                work = method.apply(work, contexts)
            else:
                index = torch.tensor(rows, device=work.device)
                work.index_copy_(0, index, method.apply(work.index_select(0, index), contexts))
        depth += 1
    per_row = (time.perf_counter() - start) / len(members)
    for _, state in members:
        state.stage_seconds += per_row
        cost = state.summary["cost"]
        cost["steps"] += 1
        cost["stage_ms"] = round(state.stage_seconds * 1000.0, 4)
        if state.requirements:
            cost["extra_distributions_ms"] = round(state.companion_seconds * 1000.0, 4)
        state.reports.append(state.summary)
    return work if work.dtype == logits.dtype else work.to(logits.dtype)


class _OpCounter(TorchDispatchMode):
    """Counts the ATen operators dispatched (on a GPU, about one kernel launch each)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self.count += 1
        return func(*args, **(kwargs or {}))


def _dry_run(method: str | type[LogitsMethod], n: int, vocab: int, steps: int
             ) -> tuple[int, str | None]:
    """``steps`` steps of the stage for ``n`` rows of ``method`` on PyTorch's ``meta``
    device, whose tensors have shapes but no values, so that any read back raises.
    Each step records token 11 for every row (reading the sampled token is the
    sampler's read); the deferred stats are dropped. Returns the operators the last
    step dispatched and what was read (None if nothing)."""
    batch = make_batch(method, n, vocab, "meta")
    counter = _OpCounter()
    try:
        for i in range(steps):
            with counter if i == steps - 1 else contextlib.nullcontext():
                logits_stage.apply_methods(batch.logits, list(batch.params_list))
            discard_stats()
            for params in batch.params_list:
                state = logits_stage.state_of(params, create=False)
                if state is not None:
                    state.record(11)
    except (NotImplementedError, RuntimeError) as e:
        discard_stats()
        return counter.count, f"{type(e).__name__}: {e}"[:160]
    return counter.count, None


def device_read(method: str | type[LogitsMethod], n: int = 4, vocab: int = 4096,
                steps: int = 3) -> str | None:
    """What the stage with ``method`` reads back from the device during a step (on an
    accelerator, each read is a host-device sync), or None if nothing (a dry run on
    the ``meta`` device)."""
    return _dry_run(method, n, vocab, steps)[1]


def device_ops(method: str | type[LogitsMethod], n: int, vocab: int = 4096,
               steps: int = 3) -> int | None:
    """ATen operators one step of the stage dispatches for ``n`` rows of ``method``
    on a device (its accelerator path, a dry run on ``meta``), or None if the step
    reads from the device (:func:`device_read`). A count that does not grow with
    ``n`` means the host time does not either."""
    count, read = _dry_run(method, n, vocab, steps)
    return None if read else count
