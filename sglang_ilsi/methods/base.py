"""The interface of logits-stage methods (kind ``logits``).

A logits method is a pure, batched tensor transform. It never imports SGLang: the
engine hands it the logits rows of the requests that chose it, plus a
:class:`RowContext` per row with the request's validated parameters, token
history and private state. The declaration every method carries (``Method``,
needs, kinds) is :mod:`sglang_ilsi.declaration`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from sglang_ilsi.declaration import Method


@dataclass
class RowContext:
    """What a method sees of one request at one decoding step.

    ``output_ids`` is exact (the engine records each sampled token itself, so
    it never lags behind under SGLang's overlap scheduler). ``state`` is private
    to this method and request and lives as long as the request. ``stats`` is
    merged into the response's cost report.
    """

    params: dict[str, Any]
    prompt_ids: Sequence[int]
    output_ids: Sequence[int]
    temperature: float = 1.0
    eos_token_ids: Sequence[int] = ()
    # The request's ``max_new_tokens`` (None: unbounded), so a method can tell a
    # step that only follows the request's last token (see :func:`finished`).
    max_new_tokens: int | None = None
    state: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    # This step's extra next-token logits from the engine, ``[vocab]`` each,
    # by the keys of :class:`Requirements`: ``aux_key(name)``, ``SECOND``,
    # ``layer_key(i)``. Refreshed before every call of ``apply``.
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)


SECOND = "second"
# The ``second_context`` need's interface: the parameters that describe the
# second prompt (a method declares those it takes, and a ``second_default``),
# and where the HTTP side puts the second prompt's token ids for the scheduler.
SECOND_CONTEXT_PARAMS = ("second_prompt", "remove", "prefix", "system")
SECOND_IDS = "__second_ids"  # filled in by the server, never by clients


def aux_key(name: str) -> str:
    return f"aux:{name}"


def layer_key(index: int) -> str:
    return f"layer:{index}"


def continuation_key(name: str) -> str:
    """The input holding, for each of this step's single-head neighbours in store
    ``name`` (in :func:`datastore_key`'s order), its document (the line of the store's
    corpus.jsonl) and then the tokens that followed its next token in that document:
    an int64 ``[k, 1 + length]`` tensor, −1 past the document's end."""
    return f"continuations:{name}"


def datastore_key(name: str, heads: int = 1) -> str:
    """``datastore`` need: the input holding this step's nearest neighbours in
    store ``name``, a ``[2, k]`` float32 tensor (squared L2 distances, ascending;
    then the neighbours' next-token ids), or ``[2, heads, k]`` for a multi-head
    search (each head's own neighbours in its slice of the keys)."""
    return f"datastore:{name}" if heads == 1 else f"datastore:{name}:heads={heads}"


@dataclass(frozen=True)
class Requirements:
    """The extra distributions one request needs at every step, beyond its
    own logits: auxiliary models by name, the second (disturbed) context,
    and intermediate layers (0 = embeddings, i = after i decoder layers)."""

    aux_models: tuple[str, ...] = ()
    second_context: bool = False
    layers: tuple[int, ...] = ()
    # ``datastore``: (store name, neighbours wanted, heads) searched once per step.
    datastores: tuple[tuple[str, int, int], ...] = ()
    # (store name, tokens): each single-head neighbour's continuation in its document.
    continuations: tuple[tuple[str, int], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.aux_models or self.second_context or self.layers or self.datastores)

    def merged(self, other: Requirements) -> Requirements:
        longest: dict[str, int] = {}
        for name, length in self.continuations + other.continuations:
            longest[name] = max(length, longest.get(name, 0))
        return Requirements(
            aux_models=tuple(dict.fromkeys(self.aux_models + other.aux_models)),
            second_context=self.second_context or other.second_context,
            layers=tuple(sorted(set(self.layers) | set(other.layers))),
            datastores=_most_neighbours(self.datastores + other.datastores),
            continuations=tuple(longest.items()),
        )


def _most_neighbours(wanted: tuple[tuple[str, int, int], ...]
                     ) -> tuple[tuple[str, int, int], ...]:
    most: dict[tuple[str, int], int] = {}
    for name, k, heads in wanted:
        most[name, heads] = max(k, most.get((name, heads), 0))
    return tuple((name, k, heads) for (name, heads), k in most.items())


def stacked(rows: Sequence[RowContext], key: str | Callable[[RowContext], str],
            like: torch.Tensor) -> torch.Tensor:
    """The rows' ``inputs[key]`` (``key(row)`` if callable) as one ``[n, vocab]``
    float32 tensor on ``like``'s device."""
    pick = key if callable(key) else (lambda _row: key)
    return torch.stack([r.inputs[pick(r)] for r in rows]).to(device=like.device,
                                                            dtype=torch.float32)


class LogitsMethod(Method):
    """Base class for methods that transform next-token logits.

    Subclasses set the class attributes and implement :meth:`apply`. ``apply``
    receives raw logits (before SGLang applies temperature, top-p/k/min-p):
    ``logits`` has shape ``[len(rows), vocab]``, float32, and rows may already
    hold ``-inf`` from grammar masks, which must be preserved. It returns a
    tensor of the same shape. Truncation methods compute their support on the
    temperature-scaled distribution (``logits / row.temperature``) and return
    the raw logits with the removed tokens set to ``-inf``, so SGLang's own
    temperature and filters still apply afterwards.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"logits"})
    composes_with: ClassVar[frozenset[str]] = frozenset(
        {"logits", "selection", "tool_loop", "grammar"})
    # Methods whose transform never moves the argmax can be skipped for greedy
    # rows (vLLM's is_argmax_invariant).
    argmax_invariant: ClassVar[bool] = False

    @classmethod
    def prepare(cls, params: dict[str, Any], tokenizer: Any | None) -> dict[str, Any]:
        """Called once per request on the HTTP side after validation, with the
        server's tokenizer (None where it has none). Methods that take text
        (keywords, phrases) turn it into token ids here; the result travels to
        the scheduler. Raise :class:`IlsiRequestError` for bad values."""
        return params

    @classmethod
    def requirements(cls, params: dict[str, Any]) -> Requirements:
        """The extra distributions a request with these (validated) params
        needs; methods whose ``needs`` go beyond ``logits`` override this."""
        return Requirements()

    # ``second_context``: the second prompt when a request describes none: ``{}``
    # (one of SECOND_CONTEXT_PARAMS is required), ``{"prefix": ...}``,
    # ``{"system": ...}`` or ``{"unconditional": True}``.
    second_default: ClassVar[dict[str, Any]] = {}

    @classmethod
    def second_context(cls, params: dict[str, Any]) -> dict[str, Any] | None:
        """``second_context``: the method's own description of the second prompt
        from its parameters, e.g. ``{"replace": [(old, new, parameter)]}`` (each
        ``old`` in the prompt becomes ``new``; errors name ``parameter``), or None
        to read the generic second-prompt parameters."""
        return None

    @classmethod
    def default_layers(cls, num_layers: int) -> list[int] | None:
        """``layer_logits``: the early layers used when a request lists none
        (None: the request must list them)."""
        return None

    @classmethod
    def ends_sequences(cls, params: dict[str, Any]) -> bool:
        """Whether, with these params, the method may end a request by leaving
        end-of-sequence as the only token (such a request cannot set ``ignore_eos``)."""
        return False

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def on_token(cls, row: RowContext, token_id: int) -> None:
        """Called after the engine sampled ``token_id`` for this row (before it is
        appended to ``row.output_ids``). Stateful methods (mirostat) update here."""


def finished(row: RowContext) -> bool:
    """Whether the request already ended at its latest token (an end-of-sequence
    token, or ``max_new_tokens`` reached). SGLang's overlap scheduler runs such a
    request through one more forward whose token it discards; methods that
    measure the steps (rather than only transform them) skip that step."""
    if not row.output_ids:
        return False
    if row.max_new_tokens is not None and len(row.output_ids) >= row.max_new_tokens:
        return True
    return row.output_ids[-1] in row.eos_token_ids


class Rows(list):
    """The rows of one method group as the logits stage hands them to ``apply``: a
    list of :class:`RowContext` that also keeps the per-row tensors built from them
    (parameter columns, temperatures). The stage builds a ``Rows`` when the set or
    order of its rows changes (a request admitted or finished) and hands the same
    object step after step, so :func:`column` and :func:`scaled` build each tensor
    once per batch composition (vLLM V1's persistent batch, ``update_state``)
    instead of from Python lists at every step. A plain list works as well: the
    tensors are then built at each call."""

    __slots__ = ("_tensors",)

    def __init__(self, contexts: Sequence[RowContext] = ()):
        super().__init__(contexts)
        self._tensors: dict[tuple, torch.Tensor] = {}

    def kept(self, key: tuple, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The tensor cached under ``key``, built by ``build()`` the first time. The
        tensor is shared between steps: callers never write into it."""
        t = self._tensors.get(key)
        if t is None:
            t = self._tensors[key] = build()
        return t


def on_device(values: Sequence[Any], dtype: torch.dtype | None = None,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """``torch.tensor(values, dtype=dtype, device=device)`` without waiting for the
    device: a copy from pageable host memory synchronizes the stream (it waits for
    the forward pass), so off the CPU the values go through pinned memory and are
    copied asynchronously, in stream order."""
    t = torch.tensor(values, dtype=dtype)
    kind = torch.device(device).type
    if kind == "cpu":
        return t
    if kind != "cuda":  # meta (the host-only dry run of benchmarks), other accelerators
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _kept(rows: Sequence[RowContext], key: tuple,
          build: Callable[[], torch.Tensor]) -> torch.Tensor:
    return rows.kept(key, build) if isinstance(rows, Rows) else build()


def scaled(logits: torch.Tensor, rows: Sequence[RowContext],
           out: torch.Tensor | None = None) -> torch.Tensor:
    """``logits / T`` per row, with SGLang's convention that T≈0 (greedy) is 1
    (written into ``out`` if given)."""
    temps = _kept(rows, ("temperature", logits.dtype, logits.device), lambda: on_device(
        [r.temperature if r.temperature > 1e-6 else 1.0 for r in rows],
        dtype=logits.dtype,
        device=logits.device,
    ).unsqueeze(1))
    return torch.div(logits, temps, out=out)


def column(rows: Sequence[RowContext], name: str, like: torch.Tensor,
           dtype: torch.dtype | None = None) -> torch.Tensor:
    """The per-row values of parameter ``name`` as a ``[n, 1]`` tensor on ``like``'s
    device, of ``like``'s dtype unless ``dtype`` is given (an integer dtype keeps
    integer parameters exact). Kept across steps when ``rows`` is a :class:`Rows`;
    never write into it."""
    dtype = like.dtype if dtype is None else dtype
    convert = float if dtype.is_floating_point else int
    return _kept(rows, ("param", name, dtype, like.device), lambda: on_device(
        [convert(r.params[name]) for r in rows], dtype=dtype, device=like.device
    ).unsqueeze(1))
