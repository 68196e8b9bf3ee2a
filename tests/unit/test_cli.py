"""Unit tests of the ``sglang-ilsi`` command line (``sglang_ilsi.cli``)."""

from __future__ import annotations

import json

import pytest

from sglang_ilsi import registry
from sglang_ilsi.catalog import KIND_ORDER
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
    assert [c["name"] for c in cards if c["name"] in methods] == sorted(
        methods, key=lambda n: (KIND_ORDER.index(kind_of(methods[n])), n))
    assert {"typical", "eta", "mirostat"} <= {c["name"] for c in cards}
    for card in (c for c in cards if c["name"] in methods):
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
    assert {c["kind"] for c in cards.values()} == {*KINDS, "tool", "grammar"}
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
    for kind in KIND_ORDER:
        assert f"== {kind} ==" in out
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


def test_method_page_shows_one_entry_with_its_example(capsys):
    out = run(capsys, ["methods", "typical"])
    assert out.startswith("typical  [logits, independent/sampling]")
    assert "Meister" in out and "- mass: float = 0.95 (>0, <=1)" in out
    assert "server_default: --ilsi-default-method typical" in out
    assert "refuses:" in out and "speculative" in out
    assert '"custom_params": {"ilsi": {"method": "typical"}}' in out  # the /generate body
    assert 'extra_body={"custom_params": {"ilsi": {"method": "typical"}}}' in out


def test_method_page_of_a_speculative_algorithm_is_a_launch(capsys):
    out = run(capsys, ["methods", "lookahead"])
    assert "--speculative-algorithm LOOKAHEAD" in out and "not per request" in out
    assert "curl" not in out


def test_method_page_of_a_tool_shows_openai_tools(capsys):
    out = run(capsys, ["methods", "calculator"])
    assert "--ilsi-tools calculator" in out and 'tools=[{"type": "function"' in out


def test_method_page_json(capsys):
    card = json.loads(run(capsys, ["methods", "mbr", "--json"]))
    assert card["name"] == "mbr" and card["kind"] == "selection"
    assert card["request"] == {"method": "mbr"}


def test_unknown_method_page_names_the_closest(capsys):
    assert main(["methods", "lookahed"]) == 2
    err = capsys.readouterr().err
    assert "lookahed" in err and "lookahead" in err
