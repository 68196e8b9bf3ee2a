"""Unit tests of the ``sglang-ilsi`` command line (``sglang_ilsi.cli``)."""

from __future__ import annotations

import json

import pytest

from sglang_ilsi import registry
from sglang_ilsi.cli import main
from sglang_ilsi.declaration import FAMILIES, KINDS, NEEDS, kind_of

ILSI_FLAGS = ("--ilsi-methods", "--ilsi-default-method", "--ilsi-default-params",
              "--ilsi-allow-custom-logit-processor", "--ilsi-plugin", "--ilsi-trace-max-k")


def run(capsys, argv: list[str]) -> str:
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def test_methods_json_lists_every_method(capsys):
    cards = json.loads(run(capsys, ["methods", "--json"]))
    methods = registry.entries()
    assert [c["name"] for c in cards] == list(methods)
    assert {"typical", "eta", "mirostat"} <= {c["name"] for c in cards}
    for card in cards:
        cls = methods[card["name"]]
        assert card["family"] == cls.family and card["family"] in FAMILIES
        assert card["kind"] == kind_of(cls) and card["kind"] in KINDS
        assert set(card["composes_with"]) <= {*KINDS, "grammar"}
        assert card["needs"] == sorted(cls.needs) and set(card["needs"]) <= set(NEEDS)
        assert card["paper"] == cls.paper and card["paper"]
        assert isinstance(card["summary"], str) and card["summary"]
        assert [p["name"] for p in card["params"]] == [p.name for p in cls.params]
        for p, param in zip(card["params"], cls.params):
            assert p["type"] == param.kind
            assert p["default"] == param.default
            assert "doc" in p


def test_the_catalog_lists_every_kind(capsys):
    """One catalog: logits methods, selection rules, the tool loop and the
    speculative algorithms (SGLang's own included) are all listed."""
    cards = {c["name"]: c for c in json.loads(run(capsys, ["methods", "--json"]))}
    assert {c["kind"] for c in cards.values()} == set(KINDS)
    assert cards["self_consistency"]["kind"] == "selection"
    assert cards["tools"]["kind"] == "tool_loop"
    assert cards["monitor"]["kind"] == "logits"  # needs logits and tool: the logits stage
    assert cards["skeleton_of_thought"]["kind"] == "program"
    assert {"speculative_standalone", "speculative_ngram", "self_speculative", "lookahead",
            "speculative_contrastive"} <= {n for n, c in cards.items()
                                           if c["kind"] == "speculative"}


def test_methods_json_typical_card(capsys):
    cards = {c["name"]: c for c in json.loads(run(capsys, ["methods", "--json"]))}
    typical = cards["typical"]
    assert typical["family"] == "independent/sampling"
    assert typical["needs"] == ["logits"]
    mass, keep = typical["params"]
    assert mass["name"] == "mass" and mass["type"] == "float" and mass["default"] == 0.95
    assert mass["exclusive_minimum"] == 0.0 and mass["maximum"] == 1.0
    assert keep["name"] == "min_tokens_to_keep" and keep["type"] == "int" and keep["default"] == 1


def test_methods_text(capsys):
    out = run(capsys, ["methods"])
    for name, cls in registry.entries().items():
        header = (f"{name}  [{kind_of(cls)}, {cls.family}]  "
                  f"needs: {', '.join(sorted(cls.needs))}")
        assert header in out
        for p in cls.params:
            assert f"    - {p.name}: {p.kind} = {p.default!r}" in out
    assert "paper: " in out


def test_methods_text_shows_bounds(capsys):
    out = run(capsys, ["methods"])
    assert "- mass: float = 0.95 (>0, <=1)" in out
    assert "- min_tokens_to_keep: int = 1 (>=1, <=1024)" in out
    assert "- until_present: bool = False  " in out  # no bounds, no parentheses


def test_flags(capsys):
    out = run(capsys, ["flags"])
    assert "--ilsi " in out or "--ilsi\n" in out
    for flag in ILSI_FLAGS:
        assert flag in out
    assert "UNSAFE" in out


def test_no_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "command" in capsys.readouterr().err


def test_unknown_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["nosuch"])
    assert exc.value.code == 2
    assert "nosuch" in capsys.readouterr().err
