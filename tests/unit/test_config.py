"""Unit tests of the launch configuration (``sglang_ilsi.config``)."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest

from sglang_ilsi import config as cfgmod
from sglang_ilsi import registry
from sglang_ilsi.config import (
    ENV_ARGS,
    ENV_CONFIG,
    ENV_ENABLE,
    IlsiConfig,
    IlsiConfigError,
    from_environment,
    parse,
    split_argv,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in (ENV_CONFIG, ENV_ENABLE, ENV_ARGS):
        monkeypatch.delenv(name, raising=False)


def parse_error(ours, sglang_argv=None) -> str:
    with pytest.raises(IlsiConfigError) as exc:
        parse(ours, sglang_argv)
    assert isinstance(exc.value, SystemExit)
    message = str(exc.value)
    assert message == exc.value.code
    assert message.startswith("sglang-ilsi: ")
    return message


# -- split_argv -----------------------------------------------------------------------


def test_split_argv_separates_flags_and_values():
    argv = [
        "--model-path", "m", "--ilsi", "--port", "30000",
        "--ilsi-methods", "typical,eta", "--ilsi-default-method", "typical",
        "--ilsi-default-params", '{"mass": 0.9}', "--ilsi-plugin", "a.py",
        "--ilsi-trace-max-k", "7", "--ilsi-allow-custom-logit-processor", "--tp", "1",
    ]
    ours, rest = split_argv(argv)
    assert ours == [
        "--ilsi", "--ilsi-methods", "typical,eta", "--ilsi-default-method", "typical",
        "--ilsi-default-params", '{"mass": 0.9}', "--ilsi-plugin", "a.py",
        "--ilsi-trace-max-k", "7", "--ilsi-allow-custom-logit-processor",
    ]
    assert rest == ["--model-path", "m", "--port", "30000", "--tp", "1"]


def test_split_argv_equals_forms_do_not_swallow_the_next_argument():
    argv = ["--ilsi-methods=typical", "--port", "1", "--ilsi-trace-max-k=3", "--host", "h"]
    ours, rest = split_argv(argv)
    assert ours == ["--ilsi-methods=typical", "--ilsi-trace-max-k=3"]
    assert rest == ["--port", "1", "--host", "h"]


def test_split_argv_leaves_similar_sglang_flags_alone():
    ours, rest = split_argv(["--ilsix", "--enable-ilsi", "x"])
    assert ours == []
    assert rest == ["--ilsix", "--enable-ilsi", "x"]


def test_split_argv_value_flag_at_the_end():
    ours, rest = split_argv(["--port", "1", "--ilsi-methods"])
    assert ours == ["--ilsi-methods"] and rest == ["--port", "1"]
    msg = parse_error(ours)  # argparse then reports the missing value
    assert "--ilsi-methods" in msg


def test_split_argv_then_parse_equals_forms():
    ours, rest = split_argv(["--ilsi-methods=typical,eta", "--ilsi-default-method=eta",
                             '--ilsi-default-params={"epsilon": 0.001}', "--port", "1"])
    cfg = parse(ours, rest)
    assert cfg.methods == ("typical", "eta")
    assert cfg.default_method == "eta"
    assert cfg.default_params == {"epsilon": 0.001}


# -- parse: accepted ------------------------------------------------------------------


def test_parse_defaults():
    cfg = parse(["--ilsi"])
    assert cfg == IlsiConfig()
    assert cfg.methods == () and cfg.default_method is None and cfg.default_params == {}
    assert cfg.allow_custom_logit_processor is False
    assert cfg.trace_max_k == 20 and cfg.speculative_algorithm is None
    assert cfg.method_allowed("typical") and cfg.method_allowed("anything")


def test_parse_full_flag_set():
    cfg = parse([
        "--ilsi", "--ilsi-methods", " typical , eta ,", "--ilsi-default-method", "typical",
        "--ilsi-default-params", '{"mass": 0.9}', "--ilsi-trace-max-k", "0",
        "--ilsi-allow-custom-logit-processor",
    ])
    assert cfg.methods == ("typical", "eta")
    assert cfg.default_method == "typical"
    # validated and filled with defaults
    assert cfg.default_params == {"mass": 0.9, "min_tokens_to_keep": 1}
    assert cfg.trace_max_k == 0
    assert cfg.allow_custom_logit_processor is True
    assert cfg.method_allowed("eta") and not cfg.method_allowed("mirostat")


def test_parse_default_method_without_params_gets_schema_defaults():
    cfg = parse(["--ilsi-default-method", "typical"])
    assert cfg.default_params == {"mass": 0.95, "min_tokens_to_keep": 1}


@pytest.mark.parametrize("value", ["all", "", "  "])
def test_parse_all_methods(value):
    assert parse(["--ilsi-methods", value]).methods == ()


def test_parse_default_method_none_is_no_default():
    cfg = parse(["--ilsi-methods", "typical", "--ilsi-default-method", "none"])
    assert cfg.default_method is None and cfg.default_params == {}


def test_parse_trace_max_k_bounds_accepted():
    assert parse(["--ilsi-trace-max-k", "1000"]).trace_max_k == 1000
    assert parse(["--ilsi-trace-max-k=0"]).trace_max_k == 0


@pytest.mark.parametrize("sglang_argv", [
    ["--model-path", "m", "--speculative-algorithm", "NGRAM"],
    ["--speculative-algorithm=ngram", "--port", "1"],
])
def test_parse_picks_up_speculative_algorithm(sglang_argv):
    assert parse(["--ilsi"], sglang_argv).speculative_algorithm == "NGRAM"


def test_parse_without_speculative_algorithm():
    assert parse(["--ilsi"], ["--model-path", "m"]).speculative_algorithm is None
    assert parse(["--ilsi"], ["--speculative-algorithm"]).speculative_algorithm is None


# -- parse: refused -------------------------------------------------------------------


def test_unknown_ilsi_flag():
    msg = parse_error(["--ilsi-foo"])
    assert "unrecognized arguments" in msg and "--ilsi-foo" in msg


def test_abbreviated_flag_is_not_accepted():
    msg = parse_error(["--ilsi-meth", "typical"])
    assert "--ilsi-meth" in msg


def test_unknown_method_in_methods():
    msg = parse_error(["--ilsi-methods", "typical,nosuch"])
    assert "--ilsi-methods" in msg and "'nosuch'" in msg and "typical" in msg
    assert "'typical'" not in msg.split("known:")[0]  # only the unknown one is reported


def test_unknown_default_method():
    msg = parse_error(["--ilsi-default-method", "nosuch"])
    assert "--ilsi-default-method" in msg and "unknown method 'nosuch'" in msg


def test_default_method_not_among_methods():
    msg = parse_error(["--ilsi-methods", "eta", "--ilsi-default-method", "typical"])
    assert "'typical' is not among --ilsi-methods ['eta']" in msg


def test_default_params_without_default_method():
    msg = parse_error(["--ilsi-default-params", '{"mass": 0.9}'])
    assert "--ilsi-default-params needs --ilsi-default-method" in msg
    msg = parse_error(["--ilsi-default-method", "none", "--ilsi-default-params", "{}"])
    assert "needs --ilsi-default-method" in msg


def test_default_params_invalid_json():
    msg = parse_error(["--ilsi-default-method", "typical", "--ilsi-default-params", "{mass: 1"])
    assert "--ilsi-default-params: not valid JSON" in msg


@pytest.mark.parametrize("text", ["[0.9]", "0.9", '"mass"', "null"])
def test_default_params_not_an_object(text):
    msg = parse_error(["--ilsi-default-method", "typical", "--ilsi-default-params", text])
    assert "--ilsi-default-params: expected a JSON object" in msg


@pytest.mark.parametrize("params, fragment", [
    ('{"mass": 7}', "ilsi.mass: must be <= 1"),
    ('{"mass": 0}', "ilsi.mass: must be > 0"),
    ('{"mass": "high"}', "ilsi.mass: expected a number"),
    ('{"masss": 0.5}', "ilsi.masss: unknown parameter"),
])
def test_default_params_violate_schema(params, fragment):
    msg = parse_error(["--ilsi-default-method", "typical", "--ilsi-default-params", params])
    assert msg.startswith("sglang-ilsi: --ilsi-default-params: ")
    assert fragment in msg


def test_missing_plugin_file(tmp_path):
    missing = tmp_path / "nope.py"
    msg = parse_error(["--ilsi-plugin", str(missing)])
    assert "--ilsi-plugin" in msg and "no such file" in msg and str(missing) in msg


@pytest.mark.parametrize("value", ["-1", "1001"])
def test_trace_max_k_out_of_range(value):
    msg = parse_error(["--ilsi-trace-max-k", value])
    assert "--ilsi-trace-max-k: must be between 0 and 1000" in msg


def test_trace_max_k_not_an_int():
    msg = parse_error(["--ilsi-trace-max-k", "many"])
    assert "--ilsi-trace-max-k" in msg and "invalid int value" in msg


# -- plugin files ---------------------------------------------------------------------


@pytest.fixture
def isolated_registry(monkeypatch):
    """Let a test register methods without leaking them into other tests."""
    registry.load()
    monkeypatch.setattr(registry, "_ENTRIES", dict(registry._ENTRIES))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("sglang_ilsi_plugin_"):
            del sys.modules[name]


def test_plugin_file_registers_a_method(tmp_path, isolated_registry):
    plugin = tmp_path / "ilsi_test_cfg_plugin.py"
    plugin.write_text(textwrap.dedent("""
        from sglang_ilsi.methods.base import LogitsMethod
        from sglang_ilsi.registry import register

        @register
        class Identity(LogitsMethod):
            \"\"\"Leaves the logits alone.\"\"\"
            name = "cfg_test_identity"
            family = "independent/sampling"
            paper = "none"

            @classmethod
            def apply(cls, logits, rows):
                return logits
    """))
    cfg = parse(["--ilsi-plugin", str(plugin), "--ilsi-methods", "cfg_test_identity,typical",
                 "--ilsi-default-method", "cfg_test_identity"])
    assert cfg.methods == ("cfg_test_identity", "typical")
    assert cfg.default_method == "cfg_test_identity" and cfg.default_params == {}
    assert cfg.plugin_files == (os.path.abspath(str(plugin)),)
    assert os.path.isabs(cfg.plugin_files[0])


# -- JSON round trip ------------------------------------------------------------------


def test_json_round_trip():
    cfg = IlsiConfig(
        methods=("typical", "eta"), default_method="typical",
        default_params={"mass": 0.9, "min_tokens_to_keep": 2},
        allow_custom_logit_processor=True, plugin_files=("/a/b.py",), trace_max_k=3,
        speculative_algorithm="NGRAM",
    )
    text = cfg.to_json()
    assert isinstance(json.loads(text), dict)
    back = IlsiConfig.from_json(text)
    assert back == cfg
    assert isinstance(back.methods, tuple) and isinstance(back.plugin_files, tuple)


def test_logits_default_method_with_speculative_decoding_is_refused():
    with pytest.raises(IlsiConfigError, match="speculative"):
        parse(["--ilsi-default-method", "typical"], ["--speculative-algorithm", "NGRAM"])


def test_json_round_trip_of_defaults():
    assert IlsiConfig.from_json(IlsiConfig().to_json()) == IlsiConfig()


# -- from_environment -----------------------------------------------------------------


def test_disabled_when_nothing_is_set():
    argv = ["--model-path", "m", "--port", "30000"]
    cfg, rest = from_environment(list(argv))
    assert cfg is None
    assert rest == argv


@pytest.mark.parametrize("value", ["0", "", "no", "false"])
def test_disabled_by_falsy_enable_variable(monkeypatch, value):
    monkeypatch.setenv(ENV_ENABLE, value)
    cfg, rest = from_environment(["--port", "1"])
    assert cfg is None and rest == ["--port", "1"]


def test_enabled_by_argv_flags():
    cfg, rest = from_environment([
        "--model-path", "m", "--ilsi", "--ilsi-methods", "typical",
        "--speculative-algorithm", "NGRAM",
    ])
    assert cfg is not None
    assert cfg.methods == ("typical",)
    assert cfg.speculative_algorithm == "NGRAM"
    assert rest == ["--model-path", "m", "--speculative-algorithm", "NGRAM"]


def test_argv_flags_are_validated():
    with pytest.raises(IlsiConfigError, match="unknown method"):
        from_environment(["--ilsi-methods", "nosuch"])


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_enabled_by_environment_variable(monkeypatch, value):
    monkeypatch.setenv(ENV_ENABLE, value)
    cfg, rest = from_environment(["--model-path", "m"])
    assert cfg == IlsiConfig()
    assert rest == ["--model-path", "m"]


def test_environment_args(monkeypatch):
    monkeypatch.setenv(ENV_ENABLE, "1")
    monkeypatch.setenv(
        ENV_ARGS,
        "--ilsi-methods typical,eta --ilsi-default-method eta "
        "--ilsi-default-params '{\"epsilon\": 0.001}' --ilsi-trace-max-k=4",
    )
    cfg, rest = from_environment(["--model-path", "m"])
    assert cfg is not None
    assert cfg.methods == ("typical", "eta")
    assert cfg.default_method == "eta" and cfg.default_params == {"epsilon": 0.001}
    assert cfg.trace_max_k == 4
    assert rest == ["--model-path", "m"]


def test_environment_args_reject_sglang_flags(monkeypatch):
    monkeypatch.setenv(ENV_ENABLE, "1")
    monkeypatch.setenv(ENV_ARGS, "--ilsi-methods typical --port 30000")
    with pytest.raises(IlsiConfigError) as exc:
        from_environment([])
    assert ENV_ARGS in str(exc.value)
    assert "only --ilsi-* flags" in str(exc.value) and "--port" in str(exc.value)


def test_environment_args_are_validated(monkeypatch):
    monkeypatch.setenv(ENV_ENABLE, "1")
    monkeypatch.setenv(ENV_ARGS, "--ilsi-default-method typical --ilsi-default-params '{\"mass\": 7}'")
    with pytest.raises(IlsiConfigError, match="ilsi.mass"):
        from_environment([])


def test_environment_args_ignored_unless_enabled(monkeypatch):
    monkeypatch.setenv(ENV_ARGS, "--ilsi-methods typical")
    cfg, _ = from_environment([])
    assert cfg is None


def test_child_process_reads_exported_config(monkeypatch):
    parent = parse(["--ilsi-methods", "typical,eta", "--ilsi-default-method", "typical",
                    "--ilsi-default-params", '{"mass": 0.8}', "--ilsi-trace-max-k", "9"],
                   ["--model-path", "m"])
    monkeypatch.setenv(ENV_CONFIG, parent.to_json())
    # the child's argv may still carry the flags: they are stripped, not re-parsed
    cfg, rest = from_environment(["--ilsi-methods", "nosuch", "--port", "1"])
    assert cfg == parent
    assert rest == ["--port", "1"]


def test_exported_config_wins_over_enable_variable(monkeypatch):
    exported = IlsiConfig(methods=("eta",), trace_max_k=2)
    monkeypatch.setenv(ENV_CONFIG, exported.to_json())
    monkeypatch.setenv(ENV_ENABLE, "1")
    monkeypatch.setenv(ENV_ARGS, "--port 1")  # would be refused if it were read
    cfg, rest = from_environment([])
    assert cfg == exported and rest == []


# -- help ------------------------------------------------------------------------------


def test_flag_help_lists_every_flag():
    text = cfgmod.flag_help()
    for flag in ("--ilsi", "--ilsi-methods", "--ilsi-default-method", "--ilsi-default-params",
                 "--ilsi-allow-custom-logit-processor", "--ilsi-plugin", "--ilsi-trace-max-k"):
        assert flag in text


def test_aux_models_follow_tensor_and_data_parallel_but_refuse_pipeline_stages(tmp_path):
    aux = tmp_path / "aux"
    aux.mkdir()
    (aux / "config.json").write_text('{"vocab_size": 10}')
    for flags in (["--tp-size", "2"], ["--dp-size", "2"], ["--tp-size", "2", "--dp-size", "2"]):
        cfg = parse(["--ilsi-aux-model", f"small={aux}"], flags)
        assert cfg.aux_models == {"small": str(aux)}
    with pytest.raises(IlsiConfigError) as e:
        parse(["--ilsi-aux-model", f"small={aux}"], ["--pp-size", "2"])
    assert "cannot be combined with --pp-size 2" in str(e.value)


# -- --ilsi-self-spec-skip ------------------------------------------------------------

SELF_SPEC = ["--speculative-algorithm", "SELF_SPECULATIVE"]


def test_self_spec_skip_parsed_and_checked_against_the_target(tiny_model_path):
    cfg = parse(["--ilsi-self-spec-skip", "1, 1"], [*SELF_SPEC, "--model-path", tiny_model_path])
    assert cfg.self_spec_skip == (1,)
    assert IlsiConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("value, sglang, fragment", [
    ("1", [], "needs --speculative-algorithm SELF_SPECULATIVE"),
    ("1", ["--speculative-algorithm", "NGRAM"], "needs --speculative-algorithm"),
    ("one", SELF_SPEC, "comma-separated layer numbers"),
    ("", SELF_SPEC, "no layer to skip"),
    ("9", None, "do not exist"),
    ("0,1", None, "skipping all 2 layers"),
])
def test_self_spec_skip_bad_values(value, sglang, fragment, tiny_model_path):
    argv = sglang if sglang is not None else [*SELF_SPEC, "--model-path", tiny_model_path]
    with pytest.raises(IlsiConfigError, match=fragment) as e:
        parse(["--ilsi-self-spec-skip", value], argv)
    assert "--ilsi-self-spec-skip" in str(e.value)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="refused only without CUDA")
def test_rejection_sampling_flag_is_refused_without_cuda():
    with pytest.raises(IlsiConfigError, match="--speculative-use-rejection-sampling"):
        parse(["--ilsi"], ["--speculative-algorithm", "STANDALONE",
                           "--speculative-use-rejection-sampling"])


# -- --ilsi-lookahead ----------------------------------------------------------------

LOOKAHEAD = ["--speculative-algorithm", "LOOKAHEAD"]


def test_lookahead_window_parsed():
    cfg = parse(["--ilsi-lookahead", "5, 4"], [*LOOKAHEAD, "--speculative-num-draft-tokens", "17"])
    assert cfg.lookahead == (5, 4)
    assert IlsiConfig.from_json(cfg.to_json()) == cfg
    assert parse(["--ilsi"], LOOKAHEAD).lookahead == ()  # the default shape


@pytest.mark.parametrize("value, sglang, fragment", [
    ("4,3", [], "needs --speculative-algorithm LOOKAHEAD"),
    ("4,3", ["--speculative-algorithm", "NGRAM"], "needs --speculative-algorithm LOOKAHEAD"),
    ("4", LOOKAHEAD, "expected W,N"),
    ("a,b", LOOKAHEAD, "expected W,N"),
    ("0,3", LOOKAHEAD, "window must be between 1 and 64"),
    ("4,1", LOOKAHEAD, "n-gram size must be between 2 and 16"),
    ("4,3", [*LOOKAHEAD, "--speculative-num-draft-tokens", "9"], "leaves 1 for the n-gram pool"),
])
def test_lookahead_bad_values(value, sglang, fragment):
    with pytest.raises(IlsiConfigError, match=fragment) as e:
        parse(["--ilsi-lookahead", value], sglang)
    assert "--ilsi-lookahead" in str(e.value)


def test_lookahead_default_window_checked_against_the_draft_budget():
    with pytest.raises(IlsiConfigError, match="needs at least 10"):
        parse(["--ilsi"], [*LOOKAHEAD, "--speculative-num-draft-tokens", "8"])


# -- SPECULATIVE_CONTRASTIVE --------------------------------------------------------

SCD = ["--speculative-algorithm", "SPECULATIVE_CONTRASTIVE",
       "--speculative-draft-model-path", "/models/amateur"]


def test_speculative_contrastive_flags_parsed():
    cfg = parse(["--ilsi-scd-alpha", "0.2", "--ilsi-scd-beta", "1.5"], SCD)
    assert (cfg.scd_alpha, cfg.scd_beta) == (0.2, 1.5)
    assert IlsiConfig.from_json(cfg.to_json()) == cfg
    defaults = parse(["--ilsi"], [*SCD, "--speculative-eagle-topk", "1"])
    assert (defaults.scd_alpha, defaults.scd_beta) == (None, None)
    assert defaults.speculative_algorithm == "SPECULATIVE_CONTRASTIVE"


@pytest.mark.parametrize("ours, sglang, fragment", [
    (["--ilsi-scd-beta", "1"], [], "--ilsi-scd-beta needs --speculative-algorithm "
     "SPECULATIVE_CONTRASTIVE"),
    (["--ilsi-scd-alpha", "0.1"], ["--speculative-algorithm", "STANDALONE"],
     "--ilsi-scd-alpha needs --speculative-algorithm SPECULATIVE_CONTRASTIVE"),
    (["--ilsi-scd-alpha", "0"], SCD, "--ilsi-scd-alpha: must be in"),
    (["--ilsi-scd-alpha", "nan"], SCD, "--ilsi-scd-alpha: must be in"),
    (["--ilsi-scd-beta", "-1"], SCD, "--ilsi-scd-beta: must be between 0 and 10"),
    (["--ilsi-scd-beta", "x"], SCD, "--ilsi-scd-beta"),
    (["--ilsi"], SCD[:2], "needs the amateur as --speculative-draft-model-path"),
    (["--ilsi"], [*SCD, "--speculative-eagle-topk", "2"], "--speculative-eagle-topk must be 1"),
])
def test_speculative_contrastive_bad_flags(ours, sglang, fragment):
    assert fragment in parse_error(ours, sglang)


# -- several ranks on CPU ---------------------------------------------------------------

def test_parallel_ranks_counts_tp_dp_and_pp_under_every_spelling():
    from sglang_ilsi.config import parallel_ranks

    assert parallel_ranks([]) == 1
    assert parallel_ranks(["--tp-size", "2"]) == 2
    assert parallel_ranks(["--tensor-parallel-size=2", "--dp-size", "3"]) == 6
    assert parallel_ranks(["--tp", "2", "--data-parallel-size", "2", "--pp-size", "2"]) == 8
    assert parallel_ranks(["--tp-size", "two"]) == 1  # SGLang's parser names the bad value


def test_thread_binding_splits_the_cores_among_the_ranks():
    from sglang_ilsi.engine.cpu.portability import thread_binding

    assert thread_binding([0, 1], 2) == "0|1"
    assert thread_binding([3, 0, 1, 2, 4], 2) == "0,1,2|3,4"
    assert thread_binding(list(range(8)), 4) == "0,1|2,3|4,5|6,7"
    assert thread_binding([0, 1], 4) == "0|1|0|1"  # more ranks than cores: shared round-robin


def test_bind_threads_keeps_the_operators_choice(monkeypatch):
    from sglang_ilsi.engine.cpu import portability

    monkeypatch.setattr(portability, "needed", lambda: True)
    monkeypatch.setenv(portability.THREADS_BIND_ENV, "0-1|0-1")
    assert portability.bind_threads(2) is None
    monkeypatch.delenv(portability.THREADS_BIND_ENV)
    assert portability.bind_threads(1) is None  # one rank: SGLang needs nothing
    value = portability.bind_threads(2)
    assert value is not None and value.count("|") == 1
    assert portability.os.environ[portability.THREADS_BIND_ENV] == value
