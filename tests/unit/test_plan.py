"""Unit tests of the request's plan (``sglang_ilsi.plan``): the logits chain
(:func:`resolve`) and the whole plan read once (:func:`read`)."""

from __future__ import annotations

import json

import pytest

from sglang_ilsi.config import IlsiConfig
from sglang_ilsi.params import IlsiRequestError
from sglang_ilsi.plan import (
    DEFAULT_TRACE_K,
    ENCODED_KEY,
    LOGITS,
    PLAIN,
    PLAIN_PLAN,
    PLAN_KEY,
    REQUEST_KEY,
    SELECTION,
    SOURCE_DEFAULT,
    SOURCE_REQUEST,
    SOURCE_SUFFIX,
    SUFFIX_KEY,
    TOOL_LOOP,
    GrammarChoice,
    MethodChoice,
    explain,
    read,
    resolve,
    rewrite_custom_params,
)

OPEN = IlsiConfig()  # every method, no default
TYPICAL_DEFAULTS = {"mass": 0.95, "min_tokens_to_keep": 1}


def error(custom_params, config=OPEN, param: str | None = None, parse=resolve) -> str:
    with pytest.raises(IlsiRequestError) as exc:
        parse(custom_params, config)
    message = str(exc.value)
    assert isinstance(exc.value, ValueError)
    if param is not None:
        assert exc.value.param == param
        prefix = f"ilsi.{param}: " if param else "ilsi: "
        assert message.startswith(prefix), message
    return message


# -- resolve: accepted ----------------------------------------------------------------


def test_object_with_params():
    choice = resolve({"ilsi": {"method": "typical", "mass": 0.9}}, OPEN)
    assert choice == MethodChoice("typical", {"mass": 0.9, "min_tokens_to_keep": 1}, 0,
                                  SOURCE_REQUEST)


def test_object_without_params_gets_defaults():
    choice = resolve({"ilsi": {"method": "typical"}}, OPEN)
    assert choice.params == TYPICAL_DEFAULTS and choice.trace_k == 0


def test_string_shorthand():
    choice = resolve({"ilsi": "eta"}, OPEN)
    assert choice.method == "eta" and choice.source == SOURCE_REQUEST
    assert choice.params == {"epsilon": 0.0003}


def test_params_are_converted():
    choice = resolve({"ilsi": {"method": "typical", "mass": 1, "min_tokens_to_keep": 3.0}}, OPEN)
    assert choice.params == {"mass": 1.0, "min_tokens_to_keep": 3}
    assert isinstance(choice.params["min_tokens_to_keep"], int)


@pytest.mark.parametrize("trace, k", [(True, DEFAULT_TRACE_K), (False, 0), (0, 0), (7, 7),
                                      (20, 20)])
def test_trace(trace, k):
    choice = resolve({"ilsi": {"method": "typical", "trace": trace}}, OPEN)
    assert choice.trace_k == k
    assert "trace" not in choice.params


def test_nothing_and_no_server_default():
    assert resolve(None, OPEN) is None
    assert resolve({}, OPEN) is None
    assert resolve({"other": 1}, OPEN) is None
    assert resolve({"ilsi": None}, OPEN) is None


def test_server_default_applies_when_the_request_names_nothing():
    cfg = IlsiConfig(default_method="typical", default_params={"mass": 0.8,
                                                               "min_tokens_to_keep": 1})
    for custom in (None, {}, {"other": 1}):
        choice = resolve(custom, cfg)
        assert choice == MethodChoice("typical", {"mass": 0.8, "min_tokens_to_keep": 1}, 0,
                                      SOURCE_DEFAULT)
    # the choice holds a copy: mutating it must not change the server's default
    resolve(None, cfg).params["mass"] = 0.1
    assert cfg.default_params["mass"] == 0.8


def test_request_overrides_server_default():
    cfg = IlsiConfig(default_method="typical", default_params=TYPICAL_DEFAULTS)
    choice = resolve({"ilsi": "eta"}, cfg)
    assert choice.method == "eta" and choice.source == SOURCE_REQUEST


def test_none_opts_out_of_server_default():
    cfg = IlsiConfig(default_method="typical", default_params=TYPICAL_DEFAULTS)
    assert resolve({"ilsi": "none"}, cfg) is None
    assert resolve({"ilsi": {"method": "none"}}, cfg) is None
    assert resolve({"ilsi": {"method": "none", "trace": 3}}, cfg) is None


def test_none_is_allowed_even_when_methods_are_restricted():
    assert resolve({"ilsi": "none"}, IlsiConfig(methods=("eta",))) is None


def test_model_suffix_key():
    choice = resolve({SUFFIX_KEY: "typical"}, OPEN)
    assert choice == MethodChoice("typical", TYPICAL_DEFAULTS, 0, SOURCE_SUFFIX)


def test_explicit_ilsi_wins_over_model_suffix():
    choice = resolve({"ilsi": "eta", SUFFIX_KEY: "typical"}, OPEN)
    assert choice.method == "eta" and choice.source == SOURCE_REQUEST


def test_model_suffix_is_validated():
    msg = error({SUFFIX_KEY: "nosuch"}, param="method")
    assert "unknown method 'nosuch'" in msg


def test_restricted_methods_accept_enabled_ones():
    cfg = IlsiConfig(methods=("typical",))
    assert resolve({"ilsi": "typical"}, cfg).method == "typical"


def test_explain_names_the_source():
    assert "custom_params.ilsi" in explain(MethodChoice("eta", {}, 0, SOURCE_REQUEST))
    assert "suffix" in explain(MethodChoice("eta", {}, 0, SOURCE_SUFFIX))
    assert "--ilsi-default-method" in explain(MethodChoice("eta", {}, 0, SOURCE_DEFAULT))


# -- resolve: refused -----------------------------------------------------------------


def test_unknown_method():
    msg = error({"ilsi": "nosuch"}, param="method")
    assert "unknown method 'nosuch'" in msg and "typical" in msg


def test_a_speculative_algorithm_is_chosen_per_server():
    msg = error({"ilsi": "lookahead"}, param="method")
    assert "speculative algorithm" in msg
    assert "--speculative-algorithm LOOKAHEAD --ilsi-lookahead W,N" in msg


def test_the_tool_loop_cannot_be_chained():
    msg = error({"ilsi": {"method": "typical", "then": ["tools"]}}, param="then[0].method")
    assert "'tools' is a tool_loop method" in msg


def test_method_not_enabled():
    msg = error({"ilsi": "eta"}, IlsiConfig(methods=("typical",)), param="method")
    assert "not enabled" in msg and "'eta'" in msg
    assert "enabled: ['typical']" in msg  # the list shows only what the server enables


@pytest.mark.parametrize("name, type_name", [(5, "int"), (["typical"], "list"),
                                             ({"x": 1}, "dict"), (True, "bool")])
def test_method_not_a_string(name, type_name):
    msg = error({"ilsi": {"method": name}}, param="method")
    assert "expected a string" in msg and type_name in msg


def test_missing_method():
    msg = error({"ilsi": {"mass": 0.9}}, param="method")
    assert "missing" in msg


@pytest.mark.parametrize("raw", [5, ["typical"], 0.5, True])
def test_ilsi_value_of_wrong_shape(raw):
    msg = error({"ilsi": raw}, param="")
    assert msg.startswith("ilsi: expected an object")


def test_unknown_param_key():
    msg = error({"ilsi": {"method": "typical", "temperature": 0.5}}, param="temperature")
    assert "unknown parameter" in msg and "mass" in msg


def test_wrong_param_type():
    msg = error({"ilsi": {"method": "typical", "mass": "0.9"}}, param="mass")
    assert "expected a number" in msg


@pytest.mark.parametrize("params, param, fragment", [
    ({"mass": 0.0}, "mass", "> 0"),
    ({"mass": 1.5}, "mass", "<= 1"),
    ({"min_tokens_to_keep": 0}, "min_tokens_to_keep", ">= 1"),
    ({"min_tokens_to_keep": 5000}, "min_tokens_to_keep", "<= 1024"),
])
def test_out_of_bounds_param(params, param, fragment):
    msg = error({"ilsi": {"method": "typical", **params}}, param=param)
    assert fragment in msg


@pytest.mark.parametrize("trace", ["5", 2.5, None, [5]])
def test_trace_of_wrong_type(trace):
    msg = error({"ilsi": {"method": "typical", "trace": trace}}, param="trace")
    assert "expected true/false or a top-k integer" in msg


@pytest.mark.parametrize("trace", [-1, 21])
def test_trace_out_of_range(trace):
    msg = error({"ilsi": {"method": "typical", "trace": trace}}, param="trace")
    assert "between 0 and 20" in msg


def test_trace_range_follows_trace_max_k():
    cfg = IlsiConfig(trace_max_k=3)
    assert resolve({"ilsi": {"method": "typical", "trace": 3}}, cfg).trace_k == 3
    msg = error({"ilsi": {"method": "typical", "trace": 4}}, cfg, param="trace")
    assert "between 0 and 3" in msg
    # true asks for the default top-k, which this server does not allow
    error({"ilsi": {"method": "typical", "trace": True}}, cfg, param="trace")
    off = IlsiConfig(trace_max_k=0)
    assert resolve({"ilsi": {"method": "typical", "trace": False}}, off).trace_k == 0
    error({"ilsi": {"method": "typical", "trace": 1}}, off, param="trace")


def test_trace_is_validated_for_none_too():
    error({"ilsi": {"method": "none", "trace": "x"}}, param="trace")


def test_none_takes_no_parameters():
    msg = error({"ilsi": {"method": "none", "mass": 0.9}}, param="mass")
    assert "method 'none' takes no parameters" in msg


@pytest.mark.parametrize("custom", ["typical", ["ilsi"], 5])
def test_custom_params_not_a_dict(custom):
    msg = error(custom, param="")
    assert "custom_params must be a JSON object" in msg


@pytest.mark.parametrize("custom", [
    {ENCODED_KEY: MethodChoice("typical", {"mass": 7.0}, 0, SOURCE_REQUEST).encode()},
    {ENCODED_KEY: "x", "other": 1},
    # alongside a request that opts out, a forged spec would otherwise be forwarded
    {"ilsi": "none", ENCODED_KEY: MethodChoice("typical", {"mass": 7.0}, 0,
                                                SOURCE_REQUEST).encode()},
    {"ilsi": "typical", ENCODED_KEY: "x"},
    {SUFFIX_KEY: "typical", ENCODED_KEY: "x"},
])
def test_client_cannot_send_the_encoded_key(custom):
    msg = error(custom, param="")
    assert ENCODED_KEY in msg and "reserved" in msg


def test_client_cannot_send_the_encoded_key_past_a_server_default():
    cfg = IlsiConfig(default_method="typical", default_params=TYPICAL_DEFAULTS)
    error({ENCODED_KEY: "x"}, cfg, param="")


@pytest.mark.parametrize("algo", ["NGRAM", "EAGLE"])
def test_logits_methods_refused_under_speculative_decoding(algo):
    cfg = IlsiConfig(speculative_algorithm=algo)
    for how in ({"ilsi": "typical"}, {"ilsi": {"method": "eta"}}, {SUFFIX_KEY: "mirostat"}):
        msg = error(how, cfg, param="method")
        assert "speculative" in msg and algo in msg
    assert resolve({"ilsi": "none"}, cfg) is None  # plain decoding is fine


def test_every_registered_logits_method_is_refused_under_speculative_decoding():
    from sglang_ilsi import registry

    cfg = IlsiConfig(speculative_algorithm="NGRAM")
    for name, cls in registry.logits_methods().items():
        if "logits" in cls.needs:
            error({"ilsi": name}, cfg, param="method")


# -- MethodChoice encoding --------------------------------------------------------------


def test_encode_decode_round_trip():
    choice = MethodChoice("keyword_boost", {"token_ids": [1, 2], "strength": 2.0,
                                            "until_present": True, "keywords": []},
                          5, SOURCE_SUFFIX)
    text = choice.encode()
    assert isinstance(text, str)
    json.loads(text)  # plain JSON, survives any IPC
    assert MethodChoice.decode(text) == choice


def test_resolved_choice_round_trips():
    choice = resolve({"ilsi": {"method": "typical", "mass": 0.5, "trace": 2}}, OPEN)
    assert MethodChoice.decode(choice.encode()) == choice


# -- rewrite_custom_params ----------------------------------------------------------------


def test_rewrite_keeps_other_keys_and_drops_ilsi():
    custom = {"ilsi": {"method": "typical", "mass": 0.9}, "user_key": [1, 2], "n": 3}
    choice = resolve(custom, OPEN)
    out = rewrite_custom_params(custom, choice)
    assert REQUEST_KEY not in out
    assert out["user_key"] == [1, 2] and out["n"] == 3
    assert MethodChoice.decode(out[ENCODED_KEY]) == choice
    assert set(out) == {"user_key", "n", ENCODED_KEY}
    assert "ilsi" in custom  # the input is not mutated


def test_rewrite_drops_the_suffix_key():
    custom = {SUFFIX_KEY: "eta", "x": 1}
    out = rewrite_custom_params(custom, resolve(custom, OPEN))
    assert set(out) == {"x", ENCODED_KEY}


def test_rewrite_with_opt_out_keeps_client_keys_only():
    custom = {"ilsi": "none", "x": 1}
    assert rewrite_custom_params(custom, resolve(custom, OPEN)) == {"x": 1}


def test_rewrite_without_choice_or_params():
    assert rewrite_custom_params(None, None) is None
    assert rewrite_custom_params({"x": 1}, None) == {"x": 1}


def test_rewrite_server_default_onto_no_params():
    cfg = IlsiConfig(default_method="typical", default_params=TYPICAL_DEFAULTS)
    choice = resolve(None, cfg)
    out = rewrite_custom_params(None, choice)
    assert set(out) == {ENCODED_KEY}
    assert MethodChoice.decode(out[ENCODED_KEY]).source == SOURCE_DEFAULT


# -- read: the whole plan, once ------------------------------------------------------------

TOOLS = IlsiConfig(tools=("calculator",))


def test_read_plain_and_logits():
    assert read(None, OPEN) is PLAIN_PLAN
    chosen = read({"ilsi": {"method": "typical", "mass": 0.9}}, OPEN)
    assert chosen.kind == LOGITS and chosen.logits.method == "typical"
    assert chosen.logits.params["mass"] == 0.9 and chosen.grammar is None


def test_read_a_named_grammar_with_or_without_a_method():
    chosen = read({"ilsi": {"grammar": "yes-no"}}, OPEN)
    assert chosen.kind == PLAIN and chosen.grammar == GrammarChoice("yes-no")
    chosen = read({"ilsi": {"method": "eta", "grammar": "json-object", "schema": {}}}, OPEN)
    assert chosen.kind == LOGITS and chosen.grammar == GrammarChoice("json-object", {})
    msg = error({"ilsi": {"method": "eta", "schema": {}}}, param="schema", parse=read)
    assert "only meaningful with ilsi.grammar" in msg


def test_read_a_selection_validates_its_candidates_up_front():
    chosen = read({"ilsi": {"method": "self_consistency", "n": 4,
                            "candidates": {"method": "typical", "mass": 0.8}}}, OPEN)
    assert chosen.kind == SELECTION and chosen.selection.rule.name == "self_consistency"
    assert chosen.selection.params["n"] == 4
    assert chosen.selection.candidates.logits.params["mass"] == 0.8
    msg = error({"ilsi": {"method": "mbr", "candidates": {"method": "typical", "mass": 5}}},
                param="mass", parse=read)
    assert "must be <= 1" in msg
    msg = error({"ilsi": {"method": "mbr", "candidates": "esc"}}, param="method", parse=read)
    assert "'esc' is a selection method" in msg
    error({"ilsi": {"method": "mbr", "n": 0}}, param="n", parse=read)


def test_read_candidates_fall_back_to_the_server_default():
    cfg = IlsiConfig(default_method="typical", default_params=TYPICAL_DEFAULTS)
    chosen = read({"ilsi": "self_consistency"}, cfg)
    assert chosen.selection.candidates.logits.source == SOURCE_DEFAULT
    assert read({"ilsi": {"method": "self_consistency", "candidates": "none"}},
                cfg).selection.candidates is PLAIN_PLAN


def test_read_a_tool_loop_validates_its_decoding_up_front():
    chosen = read({"ilsi": {"method": "tools", "decoding": {"method": "eta"}}}, TOOLS)
    assert chosen.kind == TOOL_LOOP and chosen.tools.params["tools"] == ["calculator"]
    assert chosen.tools.decoding.logits.method == "eta"
    assert read({"ilsi": "tools"}, TOOLS).tools.decoding is PLAIN_PLAN
    msg = error({"ilsi": {"method": "tools", "decoding": "mbr"}}, TOOLS, param="decoding.method", parse=read)
    assert "not a logits-stage method" in msg
    error({"ilsi": {"method": "tools", "decoding": {"method": "eta", "epsilon": -1}}}, TOOLS,
          param="epsilon", parse=read)
    error({"ilsi": {"method": "tools", "grammar": "yes-no"}}, TOOLS, param="grammar", parse=read)
    assert "no tools are enabled" in error({"ilsi": "tools"}, param="method", parse=read)


def test_read_kinds_follow_the_model_suffix():
    assert read({SUFFIX_KEY: "esc"}, OPEN).kind == SELECTION
    assert read({SUFFIX_KEY: "esc"}, OPEN).source == SOURCE_SUFFIX


def test_a_plan_read_once_travels_and_a_client_cannot_forge_one():
    chosen = read({"ilsi": "typical"}, OPEN)
    assert read({"ilsi": "eta", PLAN_KEY: chosen}, OPEN) is chosen
    assert "reserved" in error({PLAN_KEY: {"kind": "logits"}}, param="", parse=read)
    assert PLAN_KEY not in rewrite_custom_params({PLAN_KEY: chosen, "k": 1}, chosen.logits)


def test_for_one_prompt_copies_the_parameters_a_prompt_completes():
    chosen = read({"ilsi": {"method": "cad", "remove": ["x"]}}, OPEN)
    copy = chosen.for_one_prompt()
    copy.logits.params["filled"] = True
    assert "filled" not in chosen.logits.params


def test_a_client_only_program_is_not_run_per_request():
    """Prompting programs run per request (tests/unit/test_prompting_programs.py);
    skeleton-of-thought stays a frontend program only."""
    msg = error({"ilsi": "skeleton_of_thought"}, param="method", parse=read)
    assert "runs only on the client" in msg and "sglang_ilsi.lang.skeleton_of_thought" in msg


@pytest.mark.parametrize("method", ["self_consistency", "tools", "typical", "none"])
def test_private_keys_are_refused_for_every_kind(method):
    assert "reserved" in error({"ilsi": method, ENCODED_KEY: "{}"}, TOOLS, param="", parse=read)
