"""The catalog: every name a request or a launch flag may use, in one list.

One card per registry entry (logits methods, selection rules, the tool loop,
programs, speculative algorithms: new entries appear here by registering), per
server-side tool (kind ``tool``) and per library grammar (kind ``grammar``).
A card says what the entry is (name, kind, family, summary, paper, needs,
typed params), how it is chosen (per request, model-name suffix, server
default, launch flag), what it composes with and what it refuses (derived from
the declarations: ``composes_with``, ``decoded_by``, needs and kind, never
listed per method), and gives a minimal example request (``request``: the
``ilsi`` object, with the declaration's ``example`` parameters).

Given a server's configuration (``GET /ilsi/methods``), every card also says
whether this server offers it (``available``) and, if not, why
(``unavailable_because``): a request-kind card is checked by reading its
example request with the plan, exactly as a request is read, so the reason is
the 400 the server would answer.

Used by ``sglang-ilsi methods [NAME] [--json]`` and ``GET /ilsi/methods[/NAME]``.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any

from sglang_ilsi import grammars, plan, registry
from sglang_ilsi.config import IlsiConfig
from sglang_ilsi.declaration import NEEDS, kind_of
from sglang_ilsi.params import IlsiRequestError
from sglang_ilsi.tools import TOOLS

TOOL, GRAMMAR = "tool", "grammar"
# The order kinds are shown in.
KIND_ORDER = ("logits", "selection", "search", "tool_loop", "program", "speculative", TOOL,
              GRAMMAR)
# Needs served by the scheduler's logits stage, which SGLang skips under
# speculative decoding (so the plan refuses them on such a server).
LOGITS_STAGE_NEEDS = tuple(n for n in ("logits", "aux_model", "second_context", "layer_logits",
                                       "confidence") if n in NEEDS)
GRAMMAR_PAPER = ("Geng et al. 2023, Grammar-Constrained Decoding for Structured NLP Tasks "
                 "without Finetuning (EMNLP), arXiv:2305.13971")
GRAMMAR_FAMILY = "independent/constrained"

Card = dict[str, Any]


# -- the catalog --------------------------------------------------------------------------

def catalog(config: IlsiConfig | None = None, tokenizer: Any | None = None) -> list[Card]:
    """Every card, grouped by kind (:data:`KIND_ORDER`), by name within a kind.
    With ``config`` (a server's), each card says whether that server offers it."""
    cards = ([method_card(cls) for cls in registry.entries().values()]
             + [tool_card(name) for name in sorted(TOOLS)]
             + [grammar_card(name) for name in grammars.names()])
    if config is not None:
        for card in cards:
            card.update(availability(card, config, tokenizer))
    rank = {kind: i for i, kind in enumerate(KIND_ORDER)}
    return sorted(cards, key=lambda c: (rank.get(c["kind"], len(rank)), c["name"]))


def names() -> list[str]:
    """Every name the catalog lists."""
    return [card["name"] for card in catalog()]


def find(name: str, config: IlsiConfig | None = None, tokenizer: Any | None = None) -> Card:
    """The card called ``name``; KeyError naming the closest names otherwise."""
    for card in catalog(config, tokenizer):
        if card["name"] == name:
            return card
    raise KeyError(unknown_name(name))


def unknown_name(name: str) -> str:
    close = difflib.get_close_matches(name, names(), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `sglang-ilsi methods`"
    return f"no method, tool or grammar named {name!r}{hint}"


# -- registry entries ---------------------------------------------------------------------

def method_card(cls: type) -> Card:
    """The card of one registry entry."""
    card = registry.describe(cls)
    card.update(doc=_doc(cls), chosen_by=_chosen_by(cls), refuses=_refusals(cls),
                composes_with=_composes_with(cls),
                request=_example_request(cls) if per_request(cls) else None)
    if cls.decoded_by:
        card["decoded_by"] = cls.decoded_by
    return card


# A server on which a request may name anything it can name at all: every tool enabled.
_PERMISSIVE = IlsiConfig(tools=tuple(TOOLS))


@functools.cache
def request_refusal(cls: type) -> str | None:
    """Why a request may not name ``cls`` on any server (a speculative algorithm,
    a client-side program), as the plan says it; None when a request may.
    Only the plan's refusals of the name itself count (``ilsi.method``), not of
    the example's parameters."""
    try:
        plan.read({plan.REQUEST_KEY: _example_request(cls)}, _PERMISSIVE)
    except IlsiRequestError as e:
        return str(e) if e.param == "method" else None
    return None


def per_request(cls: type) -> bool:
    """Whether a request may name ``cls`` (in ``custom_params.ilsi``)."""
    return request_refusal(cls) is None


def _doc(cls: type) -> str:
    """The method's docstring, with its module's (the formula and the paper) when
    the class itself says only one line."""
    own = inspect.getdoc(cls) or ""
    module = inspect.getdoc(sys.modules.get(cls.__module__)) or ""
    return own if "\n" in own or not module else f"{own}\n\n{module}".strip()


def _example_request(cls: type) -> dict[str, Any]:
    return {"method": cls.name, **cls.example}


def _chosen_by(cls: type) -> dict[str, str]:
    kind = kind_of(cls)
    if kind == "speculative":
        return {"server_flag": cls.launch()}
    if not per_request(cls):
        program = getattr(cls, "program", None)
        return {"frontend": program} if program else {}
    chosen = {"request": "custom_params.ilsi (OpenAI extra_body; /generate sampling_params)"}
    if not cls.example:  # the suffix names the method only: its parameters take defaults
        chosen["model_suffix"] = f"model=\"MODEL+{cls.name}\""
    if kind == plan.LOGITS:  # config.parse: the server default is a logits-stage method
        chosen["server_default"] = f"--ilsi-default-method {cls.name}"
    return chosen


def _hosts() -> list[type]:
    """The entries that decode their own generations with another method
    (``decoded_by``: a selection's candidates, a tool loop's text)."""
    return [cls for cls in registry.entries().values() if cls.decoded_by]


def _speculative() -> list[type]:
    return list(registry.entries("speculative").values())


def _composes_with(cls: type) -> list[str]:
    """What a request (or server) may combine this entry with: its own
    declaration, and every entry whose declaration names this one's kind."""
    kind = kind_of(cls)
    named = set(cls.composes_with)
    named |= {kind_of(other) for other in registry.entries().values()
              if kind in other.composes_with}
    if _refuses_speculative(cls) is not None:  # a speculative algorithm accepts its kind,
        named.discard("speculative")  # but this entry needs the logits stage
    return sorted(named)


def _refusals(cls: type) -> list[dict[str, str]]:
    """What this entry cannot be combined with, and why (each rule reads a declaration)."""
    refused: list[dict[str, str]] = []
    for rule in REFUSAL_RULES:
        found = rule(cls)
        if found is not None:
            refused.append(found)
    return refused


def _refuses_speculative(cls: type) -> dict[str, str] | None:
    kind = kind_of(cls)
    stage = sorted(set(cls.needs) & set(LOGITS_STAGE_NEEDS))
    if kind == "speculative" or not stage or "speculative" in cls.composes_with:
        return None
    return {"with": "a speculative server (--speculative-algorithm)",
            "why": f"it needs {', '.join(stage)} from the logits stage, which SGLang skips "
                   "under speculative decoding"}


def _refuses_grammar(cls: type) -> dict[str, str] | None:
    if not per_request(cls) or GRAMMAR in cls.composes_with:
        return None
    return {"with": "ilsi.grammar", "why": f"a {kind_of(cls)} entry does not declare "
            "'grammar' among what it composes with"}


def _refuses_nesting(cls: type) -> dict[str, str] | None:
    kind = kind_of(cls)
    if not per_request(cls):
        return None
    keys = {h.decoded_by for h in _hosts() if kind not in h.composes_with}
    if kind != plan.LOGITS:
        keys.add(plan.THEN_KEY)
    if not keys:
        return None
    return {"with": ", ".join(f"ilsi.{key}" for key in sorted(keys))
            + " (named inside another method)",
            "why": f"only a logits method decodes another method's text; this is a {kind} entry"}


def _refuses_own_loop_shapes(cls: type) -> dict[str, str] | None:
    if not cls.decoded_by:
        return None
    return {"with": "OpenAI n (sampling_params.n > 1), batched prompts",
            "why": "it runs its own generations for one prompt (its own parameters say how "
                   "many)"}


def _refuses_requests(cls: type) -> dict[str, str] | None:
    why = request_refusal(cls)
    return None if why is None else {"with": "a request's custom_params.ilsi.method", "why": why}


REFUSAL_RULES: tuple[Callable[[type], dict[str, str] | None], ...] = (
    _refuses_requests, _refuses_speculative, _refuses_grammar, _refuses_nesting,
    _refuses_own_loop_shapes)


# -- tools and grammars -------------------------------------------------------------------

def _tool_loop() -> type:
    """The registry entry that runs tools (kind ``tool_loop``)."""
    return next(iter(registry.entries("tool_loop").values()))


def tool_card(name: str) -> Card:
    tool, loop = TOOLS[name], _tool_loop()
    properties = tool.arguments.get("properties", {})
    required = set(tool.arguments.get("required", ()))
    return {
        "name": name, "kind": TOOL, "family": loop.family, "summary": tool.description,
        "doc": tool.description, "paper": loop.paper, "needs": ["tool"],
        "params": [_argument(key, spec, key in required) for key, spec in properties.items()],
        "composes_with": [loop.name], "refuses": _refusals(loop),  # called by the loop
        "chosen_by": {"server_flag": f"--ilsi-tools {name}",
                      "request": f"custom_params.ilsi {{\"method\": \"{loop.name}\"}}, or "
                                 "OpenAI tools naming it"},
        "request": {"method": loop.name, "tools": [name]},
        "openai_tools": [tool.openai_spec()],
    }


def _argument(name: str, spec: dict[str, Any], required: bool) -> dict[str, Any]:
    out = {"name": name, "type": spec.get("type", "any"), "default": None,
           "required": required, "doc": spec.get("description", "")}
    out.update({k: spec[k] for k in ("minimum", "maximum", "maxLength") if k in spec})
    return out


def grammar_card(name: str) -> Card:
    g = grammars.get(name)
    hosts = [kind_of(c) for c in registry.entries().values() if GRAMMAR in c.composes_with]
    refusing = sorted({kind_of(c) for c in registry.entries().values()
                       if per_request(c) and GRAMMAR not in c.composes_with})
    params = [{"name": "schema", "type": "json_schema", "default": None,
               "doc": "a JSON Schema the object must follow"}] if g.takes_schema else []
    return {
        "name": name, "kind": GRAMMAR, "family": GRAMMAR_FAMILY, "summary": g.description,
        "doc": "\n\n".join(p for p in (g.description, f"example: {g.example}", g.notes) if p),
        "paper": GRAMMAR_PAPER, "needs": [GRAMMAR], "params": params,
        "backends": list(g.backends), "composes_with": sorted({"plain", *hosts}),
        "refuses": [{"with": ", ".join(refusing), "why": "they do not declare 'grammar' "
                     "among what they compose with"}] if refusing else [],
        "chosen_by": {"request": "custom_params.ilsi.grammar"},
        "request": {"grammar": name},
    }


# -- a server's availability -------------------------------------------------------------

def availability(card: Card, config: IlsiConfig, tokenizer: Any | None = None) -> Card:
    """``{"available": bool, "unavailable_because": str | None}`` on the server
    configured by ``config``."""
    reason = _unavailable_because(card, config, tokenizer)
    return {"available": reason is None, "unavailable_because": reason}


def _unavailable_because(card: Card, config: IlsiConfig, tokenizer: Any | None) -> str | None:
    if card["kind"] == "speculative":
        cls = registry.get(card["name"])
        if (config.speculative_algorithm or "").upper() == cls.algorithm.upper():
            return None
        running = config.speculative_algorithm or "none"
        return f"this server runs speculative algorithm {running}; launch with {cls.launch()}"
    if card["request"] is None:
        return None
    try:
        _read_example(card["request"], config, tokenizer)
    except IlsiRequestError as e:
        return str(e)
    return None


def _read_example(request: dict[str, Any], config: IlsiConfig, tokenizer: Any | None) -> None:
    """Read the example as the server reads a request (a 400 raises
    :class:`IlsiRequestError`): its plan, its grammar, its auxiliary models."""
    chosen = plan.read({plan.REQUEST_KEY: request}, config, tokenizer)
    if chosen.grammar is not None:
        grammars.sampling_params_for(chosen.grammar.name, config.grammar_backend or "xgrammar",
                                     chosen.grammar.schema)
    if chosen.logits is not None:
        plan.check_loaded(chosen.logits, config)
