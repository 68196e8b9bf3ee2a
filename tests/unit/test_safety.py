"""Unit tests of the closed dill path (``sglang_ilsi.engine.safety``).

Malicious pickles are built with ``pickle.dumps`` of an instance and are never
loaded by the tests; the tests check that the code under test does not load
them either.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import shlex

import dill
import pytest

from sglang_ilsi.engine.safety import (
    ALLOWED_PROCESSORS,
    RefusedProcessorError,
    _PassThroughProcessor,
    make_safe_cache_from_str,
    processor_class,
    referenced_global,
)

# Imports SGLang (slow, ~10 s): once for the whole module.
from sglang_ilsi.engine.scheduler import logits_stage

PROTOCOLS = (2, 3, 4, 5)


class Payload:
    """Unpickling an instance runs ``command`` in a shell."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def evil_blob(marker, protocol: int = 4) -> bytes:
    return pickle.dumps(Payload(f"touch {shlex.quote(str(marker))}"), protocol=protocol)


def as_processor_str(blob: bytes) -> str:
    """SGLang's serialized-processor format."""
    return json.dumps({"callable": blob.hex()})


def disallowed_tokens_str() -> str:
    from sglang.srt.sampling.custom_logit_processor import DisallowedTokensLogitsProcessor

    return DisallowedTokensLogitsProcessor.to_str()


@pytest.fixture
def no_unpickling(monkeypatch):
    """Fail the test if anything unpickles."""

    def refuse(*a, **k):
        raise AssertionError("the code under test unpickled its input")

    monkeypatch.setattr(dill, "loads", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


# -- referenced_global ------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_by_reference_class_pickle(protocol):
    blob = pickle.dumps(collections.OrderedDict, protocol=protocol)
    assert referenced_global(blob) == ("collections", "OrderedDict")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_by_reference_nested_qualname(protocol):
    blob = pickle.dumps(json.JSONDecoder, protocol=protocol)
    assert referenced_global(blob) == ("json.decoder", "JSONDecoder")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_our_processor_pickle(protocol):
    blob = pickle.dumps(logits_stage.IlsiLogitProcessor, protocol=protocol)
    assert referenced_global(blob) == ("sglang_ilsi.engine.scheduler.logits_stage", "IlsiLogitProcessor")


def test_dill_by_reference_pickle_of_an_importable_class():
    blob = bytes.fromhex(json.loads(disallowed_tokens_str())["callable"])
    assert referenced_global(blob) == (
        "sglang.srt.sampling.custom_logit_processor", "DisallowedTokensLogitsProcessor"
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pickle_that_calls_a_function(tmp_path, protocol, no_unpickling):
    marker = tmp_path / "pwned"
    assert referenced_global(evil_blob(marker, protocol)) is None
    assert not marker.exists()


def test_pickle_that_calls_a_function_is_refused_even_with_the_call_target_global(tmp_path):
    # the payload names os.system by reference, then calls it: not a bare reference
    blob = evil_blob(tmp_path / "pwned")
    assert b"system" in blob
    assert referenced_global(blob) is None


def test_dill_by_value_class_pickle(no_unpickling):
    def make():
        class Local:
            def __call__(self, logits, custom_param_list=None):
                return logits

        return Local

    blob = dill.dumps(make())
    assert referenced_global(blob) is None


def test_pickle_of_an_instance_is_not_a_reference():
    assert referenced_global(pickle.dumps(collections.OrderedDict(a=1), protocol=4)) is None
    assert referenced_global(pickle.dumps("just a string", protocol=4)) is None
    assert referenced_global(pickle.dumps(None, protocol=4)) is None


def test_two_globals_are_not_a_single_reference():
    one = pickle.dumps(collections.OrderedDict, protocol=4)
    # PROTO 4, then two STACK_GLOBALs, then STOP
    body = b"\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93\x94"
    two = b"\x80\x04" + body + body + b"."
    assert referenced_global(one) is not None
    assert referenced_global(two) is None


@pytest.mark.parametrize("blob", [
    b"",
    b"not a pickle at all",
    b"\x00\x01\x02\x03",
    pickle.dumps(collections.OrderedDict, protocol=4)[:-1],  # no STOP
    b"\x80\x04\x93.",  # STACK_GLOBAL with an empty stack
    os.urandom(64),
])
def test_garbage_bytes(blob):
    assert referenced_global(blob) is None


# -- processor_class ---------------------------------------------------------------------


def test_allowed_processor_is_imported_by_name(no_unpickling):
    assert ("sglang_ilsi.engine.scheduler.logits_stage", "IlsiLogitProcessor") in ALLOWED_PROCESSORS
    for allow_any in (False, True):
        cls = processor_class(logits_stage.PROCESSOR_STR, allow_any=allow_any)
        assert cls is logits_stage.IlsiLogitProcessor


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_allowed_processor_in_any_protocol(protocol, no_unpickling):
    text = as_processor_str(pickle.dumps(logits_stage.IlsiLogitProcessor, protocol=protocol))
    assert processor_class(text, allow_any=False) is logits_stage.IlsiLogitProcessor


def test_non_allow_listed_class_is_refused(no_unpickling):
    with pytest.raises(RefusedProcessorError) as exc:
        processor_class(disallowed_tokens_str(), allow_any=False)
    assert "--ilsi-allow-custom-logit-processor" in str(exc.value)
    assert "custom_params.ilsi" in str(exc.value)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_malicious_pickle_is_refused_and_never_executed(tmp_path, protocol, no_unpickling):
    marker = tmp_path / "pwned"
    with pytest.raises(RefusedProcessorError):
        processor_class(as_processor_str(evil_blob(marker, protocol)), allow_any=False)
    assert not marker.exists()


def test_dill_by_value_class_is_refused(no_unpickling):
    def make():
        class Local:
            def __call__(self, logits, custom_param_list=None):
                return logits

        return Local

    text = as_processor_str(dill.dumps(make()))
    with pytest.raises(RefusedProcessorError):
        processor_class(text, allow_any=False)


@pytest.mark.parametrize("text", [
    "not json",
    json.dumps({"other": "00"}),
    json.dumps({"callable": "zz-not-hex"}),
    json.dumps(["callable"]),
])
def test_malformed_processor_string(text):
    with pytest.raises(RefusedProcessorError, match="malformed"):
        processor_class(text, allow_any=True)


def test_operator_opt_in_loads_other_processors():
    from sglang.srt.sampling.custom_logit_processor import DisallowedTokensLogitsProcessor

    cls = processor_class(disallowed_tokens_str(), allow_any=True)
    assert cls is DisallowedTokensLogitsProcessor


# -- make_safe_cache_from_str ------------------------------------------------------------


def test_safe_cache_passes_refused_strings_through(tmp_path, no_unpickling):
    from_str = make_safe_cache_from_str(False)
    marker = tmp_path / "pwned"
    assert from_str(disallowed_tokens_str()) is _PassThroughProcessor
    assert from_str(as_processor_str(evil_blob(marker))) is _PassThroughProcessor
    assert from_str("not json") is _PassThroughProcessor
    assert not marker.exists()
    assert from_str(logits_stage.PROCESSOR_STR) is logits_stage.IlsiLogitProcessor


def test_pass_through_processor_leaves_logits_alone():
    logits = object()
    assert _PassThroughProcessor()(logits, [{"a": 1}]) is logits
    assert _PassThroughProcessor()(logits) is logits


def test_safe_cache_with_opt_in():
    from sglang.srt.sampling.custom_logit_processor import DisallowedTokensLogitsProcessor

    from_str = make_safe_cache_from_str(True)
    assert from_str(disallowed_tokens_str()) is DisallowedTokensLogitsProcessor
    assert from_str(logits_stage.PROCESSOR_STR) is logits_stage.IlsiLogitProcessor
    assert from_str("not json") is _PassThroughProcessor  # malformed still does not crash


def test_safe_cache_caches():
    from_str = make_safe_cache_from_str(False)
    from_str(logits_stage.PROCESSOR_STR)
    from_str(logits_stage.PROCESSOR_STR)
    info = from_str.cache_info()
    assert info.hits == 1 and info.misses == 1
