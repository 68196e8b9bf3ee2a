"""``GET /ilsi/methods`` on the session server, walked: the catalog lists every
name (registry entries, tools, grammars), and every name it lists is what the
server does: an available one's example request answers 200, an unavailable
one's answers a 4xx naming the catalog's reason, and a name no request may use
(a speculative algorithm, a client-side program) is refused by name."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from sglang_ilsi import grammars, registry
from sglang_ilsi.tools import TOOLS

PROMPT = "The capital of France is"
# Refusals that depend on the served model's tokenizer, not on the server's
# configuration (the catalog cannot know them without a prompt): the tiny
# model's tokenizer spells " Yes" and " No" with the same first token.
MODEL_REFUSALS = {"best_of_n": "the yes and no labels start with the same token"}


@pytest.fixture(scope="module")
def cards(tiny_server) -> list[dict[str, Any]]:
    r = requests.get(tiny_server.base_url + "/ilsi/methods", timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def _generate(server, ilsi: dict[str, Any]) -> requests.Response:
    return server.post("/generate", {"text": PROMPT, "sampling_params": {
        "max_new_tokens": 4, "temperature": 0.0, "custom_params": {"ilsi": ilsi}}})


def _names_the_reason(response: requests.Response, reason: str) -> bool:
    return reason in response.text or json.dumps(reason)[1:-1] in response.text


def test_the_catalog_lists_every_name(cards):
    names = [c["name"] for c in cards]
    assert len(names) == len(set(names))
    assert set(names) == set(registry.entries()) | set(TOOLS) | set(grammars.names())
    assert all("available" in c and "unavailable_because" in c for c in cards)


def test_every_listed_name_is_what_the_server_does(tiny_server, cards):
    wrong = []
    for card in cards:
        request = card["request"]
        if request is None:  # no request may name it: refused by name, with why
            refusal = card["refuses"][0]["why"]
            r = _generate(tiny_server, {"method": card["name"]})
            ok = r.status_code == 400 and _names_the_reason(r, refusal)
        elif card["available"]:
            r = _generate(tiny_server, request)
            ok = r.status_code == 200 or (
                r.status_code == 400 and card["name"] in MODEL_REFUSALS
                and _names_the_reason(r, MODEL_REFUSALS[card["name"]]))
        else:
            r = _generate(tiny_server, request)
            ok = 400 <= r.status_code < 500 and _names_the_reason(r, card["unavailable_because"])
        if not ok:
            wrong.append((card["name"], r.status_code, r.text[:300]))
    assert not wrong, wrong


def test_one_card_and_an_unknown_name(tiny_server, cards):
    typical = requests.get(tiny_server.base_url + "/ilsi/methods/typical", timeout=60)
    assert typical.status_code == 200
    assert typical.json() == next(c for c in cards if c["name"] == "typical")
    missing = requests.get(tiny_server.base_url + "/ilsi/methods/tipical", timeout=60)
    assert missing.status_code == 404 and "typical" in missing.json()["error"]


def test_an_example_through_the_openai_client(tiny_server, cards):
    """The card's example as an OpenAI client sends it (extra_body)."""
    card = next(c for c in cards if c["name"] == "typical")
    reply = tiny_server.openai().chat.completions.create(
        model=tiny_server.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
        extra_body={"custom_params": {"ilsi": card["request"]}})
    assert reply.ilsi["method"] == "typical"
