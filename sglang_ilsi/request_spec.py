"""Turn a request's method selection into a validated, compact spec.

A request chooses a method in one of three ways, in this order:

1. ``custom_params: {"ilsi": {"method": "typical", "mass": 0.9, "trace": 5}}``
   (parameters sit beside ``method``; ``"ilsi": "typical"`` is shorthand);
2. a model-name suffix, ``model="NAME+typical"`` (OpenAI clients that cannot
   send extra fields);
3. the server default (``--ilsi-default-method``).

``{"method": "none"}`` opts out of the server default. The result is a
:class:`MethodChoice`, encoded as one JSON string under a private
``custom_params`` key so that it survives SGLang's IPC unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sglang_ilsi import registry
from sglang_ilsi.config import IlsiConfig
from sglang_ilsi.methods.base import kind_of
from sglang_ilsi.params import IlsiRequestError, validate_params

REQUEST_KEY = "ilsi"  # what clients send inside custom_params
ENCODED_KEY = "__ilsi"  # what travels to the scheduler
SUFFIX_KEY = "__ilsi_suffix"  # set by the OpenAI model-suffix hook
CHAT_SECOND_IDS_KEY = "__ilsi_second_ids"  # set by the OpenAI chat hook (second context)
THEN_KEY = "then"  # further logits methods applied after the first, in order
GRAMMAR_KEYS = ("grammar", "schema")  # a named grammar from the library (see api.py)
RESERVED = ("method", "trace", THEN_KEY, *GRAMMAR_KEYS)
MAX_CHAIN = 4
DEFAULT_TRACE_K = 5

SOURCE_REQUEST = "request"
SOURCE_SUFFIX = "model_suffix"
SOURCE_DEFAULT = "server_default"


@dataclass(frozen=True)
class MethodChoice:
    method: str
    params: dict[str, Any]
    trace_k: int
    source: str
    # (method, params) applied after the first method, in order
    then: tuple[tuple[str, dict[str, Any]], ...] = ()

    def steps(self) -> list[tuple[str, dict[str, Any]]]:
        return [(self.method, self.params), *self.then]

    def encode(self) -> str:
        return json.dumps({"m": self.method, "p": self.params, "t": self.trace_k,
                           "s": self.source, "n": [list(step) for step in self.then]})

    @classmethod
    def decode(cls, text: str) -> MethodChoice:
        d = json.loads(text)
        return cls(method=d["m"], params=d["p"], trace_k=d["t"], source=d["s"],
                   then=tuple((m, p) for m, p in d.get("n", [])))


def _explain_source(source: str) -> str:
    return {
        SOURCE_REQUEST: "chosen by the request (custom_params.ilsi)",
        SOURCE_SUFFIX: "chosen by the request's model-name suffix",
        SOURCE_DEFAULT: "server default (--ilsi-default-method); the request named no method",
    }[source]


def explain(choice: MethodChoice) -> str:
    return _explain_source(choice.source)


def resolve(
    custom_params: Mapping[str, Any] | None,
    config: IlsiConfig,
    tokenizer: Any | None = None,
) -> MethodChoice | None:
    """Validate the selection carried by ``custom_params`` (or the server
    default). Returns None for plain decoding. Raises :class:`IlsiRequestError`."""
    raw: Any = None
    source = SOURCE_REQUEST
    if custom_params is not None:
        if not isinstance(custom_params, Mapping):
            raise IlsiRequestError("", "custom_params must be a JSON object")
        # Refused whatever else the request says: with {"ilsi": "none"} the
        # client's own value would otherwise be forwarded, unvalidated.
        if ENCODED_KEY in custom_params:
            raise IlsiRequestError("", f"custom_params key {ENCODED_KEY!r} is reserved")
        raw = custom_params.get(REQUEST_KEY)
        if raw is None and SUFFIX_KEY in custom_params:
            raw, source = {"method": custom_params[SUFFIX_KEY]}, SOURCE_SUFFIX
    if raw is None:
        if config.default_method is None:
            return None
        return MethodChoice(config.default_method, dict(config.default_params), 0, SOURCE_DEFAULT)

    if isinstance(raw, str):
        raw = {"method": raw}
    if not isinstance(raw, Mapping):
        raise IlsiRequestError("", "expected an object like {\"method\": \"typical\", ...} or a method name")
    name = raw.get("method")
    trace_k = _trace_k(raw.get("trace", 0), config)
    if name is None:
        if "grammar" in raw and set(raw) <= {"trace", *GRAMMAR_KEYS}:
            # only a grammar: the method is the server default, if any
            if config.default_method is None:
                return None
            return MethodChoice(config.default_method, dict(config.default_params), trace_k,
                                SOURCE_DEFAULT)
        raise IlsiRequestError("method", "missing; name one of the server's methods")
    if name == "none":
        extra = [k for k in raw if k not in ("method", "trace", *GRAMMAR_KEYS)]
        if extra:
            raise IlsiRequestError(extra[0], "method 'none' takes no parameters")
        return None
    name, params = _logits_method(raw, config, tokenizer, "method")
    then = raw.get(THEN_KEY, [])
    if not isinstance(then, list) or len(then) > MAX_CHAIN:
        raise IlsiRequestError(THEN_KEY, f"expected a list of at most {MAX_CHAIN} methods")
    steps = []
    for i, step in enumerate(then):
        label = f"{THEN_KEY}[{i}]"
        if isinstance(step, str):
            step = {"method": step}
        if not isinstance(step, Mapping) or "method" not in step:
            raise IlsiRequestError(label, "expected an object like {\"method\": ..., ...}")
        extra = [k for k in step if k in RESERVED and k != "method"]
        if extra:
            raise IlsiRequestError(f"{label}.{extra[0]}", "only allowed at the top level")
        steps.append(_logits_method(step, config, tokenizer, f"{label}.method"))
    return MethodChoice(name, params, trace_k, source, tuple(steps))


def _logits_method(raw: Mapping[str, Any], config: IlsiConfig, tokenizer: Any | None,
                   label: str) -> tuple[str, dict[str, Any]]:
    """Validate one logits-stage method selection: ``(name, prepared params)``."""
    name = raw.get("method")
    if not isinstance(name, str):
        raise IlsiRequestError(label, f"expected a string, got {type(name).__name__}")
    other = registry.get(name)
    if other is not None and kind_of(other) != "logits":
        raise IlsiRequestError(label, _not_a_logits_method(other))
    cls = registry.get(name, "logits")
    if cls is None or not config.method_allowed(name):
        enabled = sorted(m for m in registry.entries() if config.method_allowed(m))
        why = "unknown method" if cls is None else "method not enabled on this server"
        raise IlsiRequestError(label, f"{why} {name!r}; enabled: {enabled}")
    if config.speculative_algorithm and "speculative" not in cls.composes_with:
        raise IlsiRequestError(
            label,
            f"{name!r} runs in the logits stage, which SGLang skips under speculative "
            f"decoding ({config.speculative_algorithm}); this server cannot apply it",
        )
    params = validate_params(cls.params, {k: v for k, v in raw.items() if k not in RESERVED})
    return name, cls.prepare(params, tokenizer)


def _not_a_logits_method(cls: type) -> str:
    kind = kind_of(cls)
    if kind == "selection":
        return (f"{cls.name!r} is a selection method: it takes the request's top-level "
                "ilsi object and cannot pick candidates, be chained or serve a batch")
    if kind == "speculative":
        return (f"{cls.name!r} is a speculative algorithm, chosen per server "
                f"({cls.launch()}), not per request")
    return (f"{cls.name!r} is a {kind} method: it takes the request's top-level ilsi object "
            "and cannot be chained or decode another method's text")


def _trace_k(value: Any, config: IlsiConfig) -> int:
    if isinstance(value, bool):
        value = DEFAULT_TRACE_K if value else 0
    if not isinstance(value, int):
        raise IlsiRequestError("trace", f"expected true/false or a top-k integer, got {value!r}")
    if not 0 <= value <= config.trace_max_k:
        raise IlsiRequestError("trace", f"top-k must be between 0 and {config.trace_max_k}")
    return value


def rewrite_custom_params(
    custom_params: Mapping[str, Any] | None, choice: MethodChoice | None
) -> dict[str, Any] | None:
    """The ``custom_params`` to forward: our request keys replaced by the encoded spec."""
    if custom_params is None and choice is None:
        return None
    out = {k: v for k, v in (custom_params or {}).items()
           if k not in (REQUEST_KEY, SUFFIX_KEY, CHAT_SECOND_IDS_KEY)}
    if choice is not None:
        out[ENCODED_KEY] = choice.encode()
    return out

