"""The request's plan: its ``ilsi`` object read once into a typed, immutable plan.

A request chooses what to do in one of three ways, in this order:

1. ``custom_params: {"ilsi": {"method": "typical", "mass": 0.9, "trace": 5}}``
   (parameters sit beside ``method``; ``"ilsi": "typical"`` is shorthand);
2. a model-name suffix, ``model="NAME+typical"`` (OpenAI clients that cannot
   send extra fields);
3. the server default (``--ilsi-default-method``).

``{"method": "none"}`` opts out of the server default. ``forced_continuation`` (a
text or token ids) makes a logits chain score a given continuation instead of
choosing one: it travels with the chain (:attr:`MethodChoice.forced`) and the
logits stage forces each token. :func:`read` validates the
whole object once (every parameter, nested ones included: a selection's
``candidates``, a tool loop's ``decoding``) and returns a :class:`Plan` whose
``kind`` follows from the named method's declared needs:

- ``plain``: SGLang's own decoding (perhaps under a named ``grammar``);
- ``logits``: a chain of logits methods (:class:`MethodChoice`), encoded as one
  JSON string under a private ``custom_params`` key so that it survives
  SGLang's IPC to the scheduler unchanged;
- ``selection``: N samples, one chosen (:class:`SelectionPlan`);
- ``tool_loop``: a generate loop that runs tool calls (:class:`ToolPlan`);
- ``program``: a prompting program whose generations run as inner requests
  (:class:`ProgramPlan`);
- ``search``: a tree of partial solutions grown step by step, perhaps scored
  by a reward model (:class:`SearchPlan`).

The HTTP side dispatches on ``kind`` (:mod:`sglang_ilsi.engine.http.api`); a plan
read by the OpenAI layer travels to it under :data:`PLAN_KEY`, so no request is
read twice.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sglang_ilsi import declaration, registry
from sglang_ilsi.config import IlsiConfig
from sglang_ilsi.declaration import kind_of
from sglang_ilsi.methods.base import Requirements
from sglang_ilsi.params import IlsiRequestError, validate_params

REQUEST_KEY = "ilsi"  # what clients send inside custom_params
ENCODED_KEY = "__ilsi"  # what travels to the scheduler
SUFFIX_KEY = "__ilsi_suffix"  # set by the OpenAI model-suffix hook
PLAN_KEY = "__ilsi_plan"  # a Plan the OpenAI layer already read (never from a client)
THEN_KEY = "then"  # further logits methods applied after the first, in order
GRAMMAR_KEYS = ("grammar", "schema")  # a named grammar from the library (see api.py)
# A continuation given by the request: its tokens are the output, each one scored
# under the chain's distribution and the model's own (teacher forcing; see logits_stage)
FORCED_KEY = "forced_continuation"
MAX_FORCED_TOKENS = 8192
RESERVED = ("method", "trace", THEN_KEY, FORCED_KEY, *GRAMMAR_KEYS)
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
    # the request's forced continuation (token ids), empty when it decodes freely
    forced: tuple[int, ...] = ()

    def steps(self) -> list[tuple[str, dict[str, Any]]]:
        return [(self.method, self.params), *self.then]

    def encode(self) -> str:
        return json.dumps({"m": self.method, "p": self.params, "t": self.trace_k,
                           "s": self.source, "n": [list(step) for step in self.then],
                           "f": list(self.forced)})

    @classmethod
    def decode(cls, text: str) -> MethodChoice:
        d = json.loads(text)
        return cls(method=d["m"], params=d["p"], trace_k=d["t"], source=d["s"],
                   then=tuple((m, p) for m, p in d.get("n", [])),
                   forced=tuple(d.get("f", ())))


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
        _refuse_reserved(custom_params)
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
    forced = _forced(raw.get(FORCED_KEY), tokenizer)
    if forced and name in (None, "none"):
        raise IlsiRequestError(FORCED_KEY, "scores a continuation under a logits-stage method: "
                               "name one (the model's own log-probabilities of a text come "
                               "from SGLang's return_logprob with logprob_start_len, in one "
                               "prefill)")
    if forced and any(key in raw for key in GRAMMAR_KEYS):
        raise IlsiRequestError(FORCED_KEY, "cannot be combined with a grammar (the continuation "
                               "is given, not generated)")
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
    return MethodChoice(name, params, trace_k, source, tuple(steps), forced)


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


def _refuse_reserved(custom_params: Any) -> None:
    """Our private keys are refused whatever else the request says (with
    ``{"ilsi": "none"}``, or a selection of plain candidates, the client's own
    value would otherwise be forwarded, unvalidated)."""
    if not isinstance(custom_params, Mapping):
        return
    for key in (ENCODED_KEY, PLAN_KEY):
        if key in custom_params and not isinstance(custom_params[key], Plan):
            raise IlsiRequestError("", f"custom_params key {key!r} is reserved")


def _not_a_logits_method(cls: type) -> str:
    kind = kind_of(cls)
    if kind == "selection":
        return (f"{cls.name!r} is a selection method: it takes the request's top-level "
                "ilsi object and cannot pick candidates, be chained or serve a batch")
    if kind == "speculative":
        return (f"{cls.name!r} is a speculative algorithm, chosen per server "
                f"({cls.launch()}), not per request")
    if kind == PROGRAM:
        return (f"{cls.name!r} is a prompting program: it takes the request's top-level ilsi "
                "object and cannot be chained or decode another method's text")
    return (f"{cls.name!r} is a {kind} method: it takes the request's top-level ilsi object "
            "and cannot be chained or decode another method's text")


def _forced(value: Any, tokenizer: Any | None) -> tuple[int, ...]:
    """``forced_continuation``: a text (tokenised without special tokens) or token ids."""
    if value is None:
        return ()
    if isinstance(value, str):
        if tokenizer is None:
            raise IlsiRequestError(FORCED_KEY, "this endpoint has no tokenizer; send token ids")
        value = tokenizer.encode(value, add_special_tokens=False)
    if not isinstance(value, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value):
        raise IlsiRequestError(FORCED_KEY, "expected a text or a list of token ids (integers "
                               ">= 0)")
    if not 1 <= len(value) <= MAX_FORCED_TOKENS:
        raise IlsiRequestError(FORCED_KEY, f"expected 1 to {MAX_FORCED_TOKENS} tokens, got "
                               f"{len(value)}")
    return tuple(value)


def _trace_k(value: Any, config: IlsiConfig) -> int:
    if isinstance(value, bool):
        value = DEFAULT_TRACE_K if value else 0
    if not isinstance(value, int):
        raise IlsiRequestError("trace", f"expected true/false or a top-k integer, got {value!r}")
    if not 0 <= value <= config.trace_max_k:
        raise IlsiRequestError("trace", f"top-k must be between 0 and {config.trace_max_k}")
    return value


def clients_own(custom_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``custom_params`` without the keys this module reads (the request's own
    keys, which travel on unchanged)."""
    return {k: v for k, v in (custom_params or {}).items()
            if k not in (REQUEST_KEY, SUFFIX_KEY, PLAN_KEY)}


def rewrite_custom_params(
    custom_params: Mapping[str, Any] | None, choice: MethodChoice | None
) -> dict[str, Any] | None:
    """The ``custom_params`` to forward: our request keys replaced by the encoded chain."""
    if custom_params is None and choice is None:
        return None
    out = clients_own(custom_params)
    if choice is not None:
        out[ENCODED_KEY] = choice.encode()
    return out



# -- the plan -------------------------------------------------------------------------

PLAIN, LOGITS, SELECTION, TOOL_LOOP = "plain", "logits", "selection", "tool_loop"
PROGRAM = declaration.PROGRAM
SEARCH = "search"


@dataclass(frozen=True)
class GrammarChoice:
    """A named grammar from the library (``ilsi.grammar``), with ``ilsi.schema``
    for the grammars that take one."""

    name: str
    schema: Any = None


@dataclass(frozen=True)
class SelectionPlan:
    rule: Any  # the selection rule's class
    params: dict[str, Any]
    candidates: Plan  # how each candidate is decoded (plain or logits)


@dataclass(frozen=True)
class ToolPlan:
    params: dict[str, Any]
    decoding: Plan  # how the text between calls is decoded (plain or logits)


@dataclass(frozen=True)
class ProgramPlan:
    program: Any  # the program's class (methods/prompting/base.py: Program)
    params: dict[str, Any]
    decoding: Plan  # how every generation of the program is decoded (plain or logits)
    # a chat request: the program's chat_messages are in the prompt, the assistant turn open
    chat: bool = False


@dataclass(frozen=True)
class SearchPlan:
    method: Any  # the search method's class (methods/search/base.py: SearchMethod)
    params: dict[str, Any]
    decoding: Plan  # how every step is decoded (plain or logits)


@dataclass(frozen=True)
class Plan:
    """Everything a request asked of sglang-ilsi, validated."""

    kind: str
    source: str = SOURCE_REQUEST
    logits: MethodChoice | None = None
    grammar: GrammarChoice | None = None
    selection: SelectionPlan | None = None
    tools: ToolPlan | None = None
    program: ProgramPlan | None = None
    search: SearchPlan | None = None

    def for_one_prompt(self) -> Plan:
        """A copy whose parameters this prompt's needs may complete in place
        (second-context ids are per prompt)."""
        if self.logits is None:
            return self
        return replace(self, logits=replace(self.logits, params=copy.deepcopy(self.logits.params),
                                            then=copy.deepcopy(self.logits.then)))


PLAIN_PLAN = Plan(PLAIN)


def read(custom_params: Mapping[str, Any] | None, config: IlsiConfig,
         tokenizer: Any | None = None) -> Plan:
    """The request's plan (see the module docstring). Raises
    :class:`IlsiRequestError` naming the parameter."""
    if isinstance(custom_params, Mapping) and isinstance(custom_params.get(PLAN_KEY), Plan):
        return custom_params[PLAN_KEY]
    _refuse_reserved(custom_params)
    raw = custom_params.get(REQUEST_KEY) if isinstance(custom_params, Mapping) else None
    source = SOURCE_REQUEST
    if raw is None and isinstance(custom_params, Mapping) and SUFFIX_KEY in custom_params:
        raw, source = {"method": custom_params[SUFFIX_KEY]}, SOURCE_SUFFIX
    if isinstance(raw, str):
        raw = {"method": raw}
    cls = registry.get(raw.get("method")) if isinstance(raw, Mapping) else None
    kind = kind_of(cls) if cls is not None else LOGITS
    if kind != LOGITS and FORCED_KEY in raw:
        raise IlsiRequestError(FORCED_KEY, f"scores a continuation under a logits-stage method; "
                               f"{cls.name!r} is a {kind} method")
    if kind == SELECTION:
        return _selection(cls, raw, source, config, tokenizer)
    if kind == TOOL_LOOP:
        return _tool_loop(cls, raw, source, config, tokenizer)
    if kind == PROGRAM:
        return _program(cls, raw, source, config, tokenizer)
    if kind == SEARCH:
        return _search(cls, raw, source, config, tokenizer)
    grammar = _grammar(raw)
    chain = resolve(custom_params, config, tokenizer)
    if chain is None:
        return Plan(PLAIN, source, grammar=grammar) if grammar is not None else PLAIN_PLAN
    return Plan(LOGITS, chain.source, logits=chain, grammar=grammar)


def _nested(raw: Any, config: IlsiConfig, tokenizer: Any | None) -> Plan:
    """A selection's candidates or a tool loop's decoding: plain or logits only
    (``None`` falls back to the server default, like a request naming nothing)."""
    name = raw if isinstance(raw, str) else raw.get("method") if isinstance(raw, Mapping) else None
    if isinstance(raw, Mapping) and FORCED_KEY in raw:
        raise IlsiRequestError(FORCED_KEY, "only at the top level of a request's ilsi object "
                               "(the loop decides its generations' text)")
    cls = registry.get(name) if isinstance(name, str) else None
    if cls is not None and kind_of(cls) not in (LOGITS,):
        raise IlsiRequestError("method", _not_a_logits_method(cls))
    return read({} if raw is None else {REQUEST_KEY: raw}, config, tokenizer)


def _grammar(raw: Any) -> GrammarChoice | None:
    if not isinstance(raw, Mapping) or "grammar" not in raw:
        if isinstance(raw, Mapping) and "schema" in raw:
            raise IlsiRequestError("schema", "only meaningful with ilsi.grammar")
        return None
    name = raw["grammar"]
    if not isinstance(name, str):
        raise IlsiRequestError("grammar", f"expected a grammar name, got {type(name).__name__}")
    return GrammarChoice(name, raw.get("schema"))


def _enabled(name: str, config: IlsiConfig) -> None:
    if not config.method_allowed(name):
        raise IlsiRequestError("method", f"method not enabled on this server {name!r}")


def _selection(rule: Any, raw: Mapping[str, Any], source: str, config: IlsiConfig,
               tokenizer: Any | None) -> Plan:
    _enabled(rule.name, config)
    params = rule.validate({k: v for k, v in raw.items()
                            if k not in ("method", "trace", rule.decoded_by)})
    candidates = raw.get(rule.decoded_by)
    if config.speculative_algorithm and "confidence" in rule.needs:
        raise IlsiRequestError("method", f"{rule.name!r} measures its candidates in the logits "
                               "stage, which SGLang skips under speculative decoding "
                               f"({config.speculative_algorithm})")
    if "reward" in rule.needs and params.get("reward", "model") == "model":
        check_reward_model(params, config)
    if config.speculative_algorithm and candidates not in (None, "none"):
        raise IlsiRequestError(rule.decoded_by, "logits-stage methods are refused under "
                               f"speculative decoding ({config.speculative_algorithm})")
    return Plan(SELECTION, source, selection=SelectionPlan(
        rule, params, _nested(candidates, config, tokenizer)))


def _tool_loop(tool_use: Any, raw: Mapping[str, Any], source: str, config: IlsiConfig,
               tokenizer: Any | None) -> Plan:
    _enabled(tool_use.name, config)
    if "grammar" in raw:
        raise IlsiRequestError("grammar", "tools cannot be combined with a named grammar")
    params = tool_use.validate(raw, config)
    decoding = _decoding(raw, tool_use.decoded_by, config, tokenizer,
                         "the text between tool calls is decoded with it")
    return Plan(TOOL_LOOP, source, tools=ToolPlan(params, decoding))


def _decoding(raw: Mapping[str, Any], key: str, config: IlsiConfig, tokenizer: Any | None,
              what: str) -> Plan:
    """The plan of ``raw[key]``, a logits method decoding a loop's generations."""
    decoding = raw.get(key)
    if decoding is not None:
        name = decoding if isinstance(decoding, str) else (
            decoding.get("method") if isinstance(decoding, Mapping) else None)
        if not isinstance(name, str):
            raise IlsiRequestError(key, 'expected a logits method like {"method": "typical"}')
        if name != "none" and registry.get(name, LOGITS) is None:
            raise IlsiRequestError(f"{key}.method", f"{name!r} is not a logits-stage "
                                   f"method ({what})")
    return _nested(decoding, config, tokenizer)


def _program(program: Any, raw: Mapping[str, Any], source: str, config: IlsiConfig,
             tokenizer: Any | None) -> Plan:
    from sglang_ilsi.methods.prompting.base import Program

    if not (isinstance(program, type) and issubclass(program, Program)):
        runs_in = getattr(program, "program", None) or "an SGLang frontend program"
        raise IlsiRequestError("method", f"{program.name!r} runs only on the client, as a "
                               f"frontend program ({runs_in}), not per request")
    _enabled(program.name, config)
    if "grammar" in raw:
        raise IlsiRequestError("grammar", "a prompting program cannot be combined with a "
                               "named grammar (its steps are free text)")
    params = program.validate(raw)
    decoding = _decoding(raw, program.decoded_by, config, tokenizer,
                         "every generation of the program is decoded with it")
    return Plan(PROGRAM, source, program=ProgramPlan(program, params, decoding))


SANDBOX_TOOL = "python"  # the tool whose sandbox runs a search's generated programs


def _search(method: Any, raw: Mapping[str, Any], source: str, config: IlsiConfig,
            tokenizer: Any | None) -> Plan:
    _enabled(method.name, config)
    if "grammar" in raw:
        raise IlsiRequestError("grammar", "a search cannot be combined with a named grammar")
    if config.speculative_algorithm and raw.get(method.decoded_by) not in (None, "none"):
        raise IlsiRequestError(method.decoded_by, "logits-stage methods are refused under "
                               f"speculative decoding ({config.speculative_algorithm})")
    params = method.validate({k: v for k, v in raw.items()
                              if k not in ("method", "trace", method.decoded_by)})
    if "reward" in method.needs:
        check_reward_model(params, config)
    if "execution" in method.needs and SANDBOX_TOOL not in config.tools:
        raise IlsiRequestError("method", f"{method.name!r} runs the programs it generates, "
                               "and this server runs no sandbox; start it with "
                               f"--ilsi-tools {SANDBOX_TOOL}")
    decoding = _decoding(raw, method.decoded_by, config, tokenizer,
                         "every step of the search is decoded with it")
    return Plan(SEARCH, source, search=SearchPlan(method, params, decoding))


METER = "confidence"  # the logits method that measures a selection's candidates


def measured_by(candidates: Plan, meter_params: Mapping[str, Any]) -> Plan:
    """``candidates`` decoded with the :data:`METER` method first in the chain
    (before any method the request named), with the given parameters."""
    meter = registry.get(METER, LOGITS)
    params = meter.prepare(validate_params(meter.params, dict(meter_params)), None)
    chain = candidates.logits
    choice = MethodChoice(METER, params, chain.trace_k if chain else 0,
                          chain.source if chain else SOURCE_REQUEST,
                          tuple(chain.steps()) if chain else ())
    return replace(candidates, kind=LOGITS, logits=choice)


# -- what a chain needs of this server ------------------------------------------------


def requirements(choice: MethodChoice) -> Requirements:
    """Everything the request's chain of methods needs, merged."""
    merged = Requirements()
    for name, params in choice.steps():
        merged = merged.merged(registry.get(name).requirements(params))
    return merged


def _param_naming(choice: MethodChoice, value: str) -> str:
    for _, params in choice.steps():
        for key, v in params.items():
            if v == value or (isinstance(v, list) and value in v):
                return key
    return "method"


def check_loaded(choice: MethodChoice, config: IlsiConfig) -> None:
    """Refuse a chain naming an auxiliary model or a datastore this server has
    not loaded (a datastore left unnamed becomes the server's only one, in place).
    The server runs this check for every request; the catalog, for each example."""
    _check_datastores(choice, config)
    for aux in requirements(choice).aux_models:
        if aux not in config.aux_models:
            loaded = sorted(config.aux_models) or "none"
            raise IlsiRequestError(
                _param_naming(choice, aux),
                f"no auxiliary model named {aux!r} is loaded on this server (loaded: "
                f"{loaded}); start it with --ilsi-aux-model {aux}=PATH",
            )


def check_reward_model(params: dict[str, Any], config: IlsiConfig) -> None:
    """Refuse a ``reward_model`` this server does not serve; an empty one becomes
    the server's only reward model, in place."""
    loaded = sorted({*config.reward_models, *config.reward_urls})
    wanted = params.get("reward_model", "")
    how = "start it with --ilsi-reward-model NAME=PATH or --ilsi-reward-url NAME=URL"
    if not wanted:
        if len(loaded) != 1:
            raise IlsiRequestError("reward_model", "name the reward model: this server has "
                                   + (f"several ({loaded})" if loaded else f"none ({how})"))
        params["reward_model"] = loaded[0]
    elif wanted not in loaded:
        raise IlsiRequestError("reward_model", f"no reward model named {wanted!r} on this "
                               f"server (loaded: {loaded or 'none'}); {how}")


def _check_datastores(choice: MethodChoice, config: IlsiConfig) -> None:
    loaded = sorted(config.datastores)
    for name, params in choice.steps():
        if "datastore" not in registry.get(name).needs:
            continue
        wanted = params.get("datastore", "")
        if not wanted:
            if len(loaded) != 1:
                raise IlsiRequestError(
                    "datastore", "name the datastore: this server loaded "
                    + (f"several ({loaded})" if loaded else
                       "none (start it with --ilsi-datastore NAME=PATH)"))
            params["datastore"] = loaded[0]
        elif wanted not in config.datastores:
            raise IlsiRequestError(
                "datastore", f"no datastore named {wanted!r} is loaded on this server (loaded: "
                f"{loaded or 'none'}); start it with --ilsi-datastore {wanted}=PATH")
        from sglang_ilsi.datastore import DatastoreError, check_heads, check_spans

        path = config.datastores[params["datastore"]]
        if int(params.get("heads", 1)) > 1:
            try:
                check_heads(_store_meta(path), int(params["heads"]))
            except DatastoreError as e:
                raise IlsiRequestError("heads", f"datastore {params['datastore']!r}: {e}"
                                       ) from None
        if params.get("knn_temperature") == 0:  # NEST's default: the keys' size (µ = 1/dim)
            params["knn_temperature"] = float(_store_meta(path)["model"]["hidden_size"])
        if registry.get(name).requirements(params).continuations:
            try:
                check_spans(_store_meta(path), path)
            except DatastoreError as e:
                raise IlsiRequestError("datastore", str(e)) from None


@functools.lru_cache(maxsize=64)
def _store_meta(path: str) -> dict[str, Any]:
    """A loaded store's ``meta.json`` (checked at launch; read once)."""
    from sglang_ilsi.datastore import read_meta

    return read_meta(path)
