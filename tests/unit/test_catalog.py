"""Unit tests of the catalog (``sglang_ilsi.catalog``) and its HTTP routes
(``sglang_ilsi.engine.http.routes``, on a bare FastAPI app)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sglang_ilsi import catalog, grammars, plan, registry
from sglang_ilsi.config import IlsiConfig
from sglang_ilsi.declaration import kind_of
from sglang_ilsi.params import IlsiRequestError
from sglang_ilsi.tools import TOOLS

AUX_NAMES = ("amateur", "expert", "anti_expert")


@pytest.fixture(scope="module")
def everything(tiny_model_path: str, tmp_path_factory: pytest.TempPathFactory) -> IlsiConfig:
    """A server that offers everything a request may name (its datastore is a real
    one: the plan reads a store's meta for NEST's defaults and span check)."""
    from sglang_ilsi import datastore

    corpus = tmp_path_factory.mktemp("catalog-corpus")
    (corpus / "a.py").write_text("def add(a, b):\n    return a + b\n")
    store = tmp_path_factory.mktemp("catalog-stores") / "stdlib"
    datastore.build(str(corpus), tiny_model_path, str(store), quiet=True)
    return IlsiConfig(tools=tuple(TOOLS), aux_models={n: "/unused" for n in AUX_NAMES},
                      datastores={"stdlib": str(store)}, reward_models={"prm": "/unused"})


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


def per_request_cards() -> list[dict[str, Any]]:
    return [c for c in catalog.catalog() if c["request"] is not None]


def test_every_name_is_listed_once():
    listed = catalog.names()
    assert len(listed) == len(set(listed))
    assert set(listed) == set(registry.entries()) | set(TOOLS) | set(grammars.names())


def test_catalog_is_json_and_complete(everything):
    cards = json.loads(json.dumps(catalog.catalog(everything)))
    kinds = [c["kind"] for c in cards]
    assert kinds == sorted(kinds, key=catalog.KIND_ORDER.index)  # grouped by kind
    for card in cards:
        for key in ("name", "kind", "family", "summary", "doc", "paper", "needs", "params",
                    "composes_with", "refuses", "chosen_by", "request", "available",
                    "unavailable_because"):
            assert key in card, (card["name"], key)
        assert card["paper"] and card["summary"] and card["chosen_by"]
        for param in card["params"]:
            assert {"name", "type", "default", "doc"} <= set(param)


def test_every_example_request_is_read_by_the_plan(tokenizer, everything):
    for card in per_request_cards():
        chosen = plan.read({"ilsi": card["request"]}, everything, tokenizer)
        assert chosen.kind != plan.PLAIN or card["kind"] == "grammar", card["name"]


def test_a_server_offering_everything_offers_every_request_name(tokenizer, everything):
    for card in catalog.catalog(everything, tokenizer):
        if card["request"] is not None:
            assert card["available"], (card["name"], card["unavailable_because"])


def test_only_speculative_algorithms_and_client_programs_are_not_per_request():
    for card in catalog.catalog():
        if card["request"] is None:
            assert card["kind"] in ("speculative", "program"), card["name"]
            refusal = card["refuses"][0]
            assert refusal["with"] == "a request's custom_params.ilsi.method"
            assert "not per request" in refusal["why"]
    lookahead = catalog.find("lookahead")
    assert lookahead["chosen_by"] == {"server_flag": registry.get("lookahead").launch()}


def test_plain_server_names_the_reason_for_what_it_lacks():
    cards = {c["name"]: c for c in catalog.catalog(IlsiConfig())}
    assert cards["typical"]["available"] and cards["typical"]["unavailable_because"] is None
    assert not cards["contrastive_decoding"]["available"]
    assert "--ilsi-aux-model amateur=PATH" in cards["contrastive_decoding"]["unavailable_because"]
    assert "--ilsi-tools" in cards["tools"]["unavailable_because"]
    assert "--ilsi-tools" in cards["calculator"]["unavailable_because"]
    calculator_only = {c["name"]: c for c in catalog.catalog(IlsiConfig(tools=("calculator",)))}
    assert calculator_only["calculator"]["available"]
    assert "not enabled" in calculator_only["python"]["unavailable_because"]
    assert "--speculative-algorithm NGRAM" in cards["speculative_ngram"]["unavailable_because"]


def test_enabled_methods_and_speculative_servers():
    only_typical = {c["name"]: c for c in catalog.catalog(IlsiConfig(methods=("typical",)))}
    assert only_typical["typical"]["available"]
    assert "not enabled" in only_typical["eta"]["unavailable_because"]
    ngram = {c["name"]: c for c in catalog.catalog(IlsiConfig(speculative_algorithm="NGRAM"))}
    assert ngram["speculative_ngram"]["available"]
    assert not ngram["lookahead"]["available"]
    assert "speculative" in ngram["typical"]["unavailable_because"]
    assert ngram["self_consistency"]["available"]  # plain candidates under speculative


def _refuses(card: dict[str, Any], what: str) -> bool:
    return any(what in r["with"] for r in card["refuses"])


def _plan_refuses(request: dict[str, Any], config: IlsiConfig, tokenizer: Any) -> bool:
    try:
        plan.read({"ilsi": request}, config, tokenizer)
    except IlsiRequestError:
        return True
    return False


def test_refusals_agree_with_the_plan(tokenizer, everything):
    """Every derived refusal is what the plan does: under a speculative server,
    with a named grammar, and named inside a selection's candidates."""
    speculative = IlsiConfig(tools=tuple(TOOLS), speculative_algorithm="NGRAM",
                             reward_models={"prm": "/unused"})
    for card in per_request_cards():
        if card["kind"] == "grammar":
            continue
        request, name = card["request"], card["name"]
        assert _plan_refuses(request, speculative, tokenizer) == _refuses(
            card, "speculative server"), name
        assert _plan_refuses({**request, "grammar": "yes-no"}, everything, tokenizer) == \
            _refuses(card, "ilsi.grammar"), name
        nested = {"method": "self_consistency", "candidates": request}
        assert _plan_refuses(nested, everything, tokenizer) == _refuses(
            card, "ilsi.candidates"), name


def test_own_loops_refuse_openai_n():
    for name, cls in registry.entries().items():
        assert _refuses(catalog.find(name), "OpenAI n") == bool(cls.decoded_by), name


def test_grammar_and_tool_cards():
    yes_no = catalog.find("yes-no")
    assert yes_no["kind"] == "grammar" and yes_no["request"] == {"grammar": "yes-no"}
    assert "logits" in yes_no["composes_with"]
    assert [p["name"] for p in catalog.find("json-object")["params"]] == ["schema"]
    calculator = catalog.find("calculator")
    assert calculator["request"] == {"method": "tools", "tools": ["calculator"]}
    assert calculator["openai_tools"][0]["function"]["name"] == "calculator"
    assert calculator["params"][0]["name"] == "expression"


def test_unknown_name_suggests_close_ones():
    with pytest.raises(KeyError) as exc:
        catalog.find("tipical")
    assert "typical" in exc.value.args[0]


def test_every_kind_has_a_card():
    kinds = {c["kind"] for c in catalog.catalog()}
    assert kinds == set(catalog.KIND_ORDER)
    assert {kind_of(cls) for cls in registry.entries().values()} <= kinds


# -- the routes, on a bare FastAPI app -------------------------------------------------------

@pytest.fixture
def configured():
    from sglang_ilsi.engine.http import api

    before = api._CONFIG
    api.configure(IlsiConfig())
    yield
    api._CONFIG = before


def test_routes_answer_the_catalog(configured):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from sglang_ilsi.engine.http import routes

    app = FastAPI()
    routes.add_routes(app, routes.catalog_routes(tokenizer_manager=None))
    client = TestClient(app)
    listed = client.get("/ilsi/methods").json()
    assert [c["name"] for c in listed] == catalog.names()
    assert all("available" in c for c in listed)
    one = client.get("/ilsi/methods/typical")
    assert one.status_code == 200 and one.json()["name"] == "typical"
    missing = client.get("/ilsi/methods/tipical")
    assert missing.status_code == 404 and "typical" in missing.json()["error"]


def test_routes_refuse_to_be_shadowed(configured):
    from fastapi import FastAPI

    from sglang_ilsi.engine.http import routes

    app = FastAPI()

    @app.get("/{anything:path}")
    async def catch_all(anything: str) -> str:
        return anything

    with pytest.raises(SystemExit, match="/ilsi/methods"):
        routes.add_routes(app, routes.catalog_routes(tokenizer_manager=None))


def test_no_entry_both_composes_with_and_refuses_a_speculative_server():
    for card in catalog.catalog():
        refused = any(r["with"].startswith("a speculative server") for r in card["refuses"])
        assert not (refused and "speculative" in card["composes_with"]), card["name"]
