"""Unit tests of the typed parameter schemas (``sglang_ilsi.params``)."""

from __future__ import annotations

import math

import pytest

from sglang_ilsi.params import KINDS, IlsiRequestError, Param, validate_params


def check_error(exc: pytest.ExceptionInfo[IlsiRequestError], param: str, *fragments: str) -> None:
    assert exc.value.param == param
    text = str(exc.value)
    assert text.startswith(f"ilsi.{param}: "), text
    for fragment in fragments:
        assert fragment in text, text


# -- the error type -----------------------------------------------------------------


def test_error_is_a_400_value_error_naming_the_parameter():
    e = IlsiRequestError("mass", "must be > 0")
    assert isinstance(e, ValueError)
    assert e.status_code == 400
    assert e.param == "mass"
    assert str(e) == "ilsi.mass: must be > 0"
    assert str(IlsiRequestError("", "bad")) == "ilsi: bad"


def test_unknown_kind_is_rejected_at_declaration():
    with pytest.raises(ValueError, match="unknown kind 'complex'"):
        Param("x", "complex", 0, "doc")
    for kind in KINDS:  # every declared kind is constructible
        Param("x", kind, None, "doc")


# -- float ----------------------------------------------------------------------------


def test_float_accepts_numbers_and_converts_ints():
    p = Param("x", "float", 0.5, "doc")
    assert p.validate(0.25) == 0.25
    out = p.validate(3)
    assert out == 3.0 and isinstance(out, float)


@pytest.mark.parametrize("value, type_name", [("0.5", "str"), (None, "null"), ([1.0], "list"),
                                              ({"a": 1}, "dict")])
def test_float_rejects_non_numbers(value, type_name):
    with pytest.raises(IlsiRequestError) as exc:
        Param("x", "float", 0.5, "doc").validate(value)
    check_error(exc, "x", "expected a number", type_name)


@pytest.mark.parametrize("value", [True, False])
def test_bool_is_not_a_float(value):
    with pytest.raises(IlsiRequestError) as exc:
        Param("x", "float", 0.5, "doc").validate(value)
    check_error(exc, "x", "expected a number", "bool")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_float_rejects_non_finite(value):
    with pytest.raises(IlsiRequestError) as exc:
        Param("x", "float", 0.5, "doc").validate(value)
    check_error(exc, "x", "finite")


def test_float_rejects_an_int_too_large_for_a_float():
    # JSON carries arbitrary integers; this must be a 400, not an OverflowError.
    with pytest.raises(IlsiRequestError) as exc:
        Param("x", "float", 0.5, "doc").validate(10**400)
    check_error(exc, "x", "finite")


# -- int ------------------------------------------------------------------------------


def test_int_accepts_ints_and_integer_valued_floats():
    p = Param("k", "int", 1, "doc")
    assert p.validate(7) == 7
    out = p.validate(7.0)
    assert out == 7 and isinstance(out, int)
    out = p.validate(-2.0)
    assert out == -2 and isinstance(out, int)


@pytest.mark.parametrize("value, type_name", [(7.5, "float"), ("7", "str"), (None, "null"),
                                              (math.nan, "float"), (math.inf, "float")])
def test_int_rejects_non_integers(value, type_name):
    with pytest.raises(IlsiRequestError) as exc:
        Param("k", "int", 1, "doc").validate(value)
    check_error(exc, "k", "expected an integer", type_name)


@pytest.mark.parametrize("value", [True, False])
def test_bool_is_not_an_int(value):
    with pytest.raises(IlsiRequestError) as exc:
        Param("k", "int", 1, "doc").validate(value)
    check_error(exc, "k", "expected an integer", "bool")


def test_int_valued_float_is_bounds_checked_after_conversion():
    p = Param("k", "int", 1, "doc", minimum=1, maximum=10)
    assert p.validate(10.0) == 10
    with pytest.raises(IlsiRequestError) as exc:
        p.validate(11.0)
    check_error(exc, "k", "<= 10", "11")


# -- bool / str -----------------------------------------------------------------------


def test_bool():
    p = Param("b", "bool", False, "doc")
    assert p.validate(True) is True
    assert p.validate(False) is False
    for bad in (1, 0, "true", None):
        with pytest.raises(IlsiRequestError) as exc:
            p.validate(bad)
        check_error(exc, "b", "expected a boolean")


def test_str_type_and_max_length():
    p = Param("s", "str", "", "doc", max_length=5)
    assert p.validate("abcde") == "abcde"
    with pytest.raises(IlsiRequestError) as exc:
        p.validate("abcdef")
    check_error(exc, "s", "at most 5 characters")
    with pytest.raises(IlsiRequestError) as exc:
        p.validate(5)
    check_error(exc, "s", "expected a string", "int")


def test_str_default_max_length_is_256():
    p = Param("s", "str", "", "doc")
    assert p.validate("a" * 256) == "a" * 256
    with pytest.raises(IlsiRequestError):
        p.validate("a" * 257)


# -- bounds ---------------------------------------------------------------------------


def test_inclusive_bounds():
    p = Param("x", "float", 0.5, "doc", minimum=0.0, maximum=1.0)
    assert p.validate(0.0) == 0.0
    assert p.validate(1.0) == 1.0
    with pytest.raises(IlsiRequestError) as exc:
        p.validate(-0.001)
    check_error(exc, "x", "must be >= 0")
    with pytest.raises(IlsiRequestError) as exc:
        p.validate(1.001)
    check_error(exc, "x", "must be <= 1")


def test_exclusive_bounds():
    p = Param("x", "float", 0.5, "doc", minimum=0.0, maximum=1.0,
              exclusive_minimum=True, exclusive_maximum=True)
    assert p.validate(1e-9) == 1e-9
    assert p.validate(0.999999) == 0.999999
    with pytest.raises(IlsiRequestError) as exc:
        p.validate(0.0)
    check_error(exc, "x", "must be > 0")
    with pytest.raises(IlsiRequestError) as exc:
        p.validate(1.0)
    check_error(exc, "x", "must be < 1")


def test_one_sided_bounds():
    lo = Param("x", "int", 0, "doc", minimum=0)
    assert lo.validate(10**12) == 10**12
    with pytest.raises(IlsiRequestError):
        lo.validate(-1)
    hi = Param("x", "float", 0.0, "doc", maximum=-1.5)
    assert hi.validate(-1e9) == -1e9
    with pytest.raises(IlsiRequestError) as exc:
        hi.validate(-1.0)
    check_error(exc, "x", "<= -1.5")


# -- choices --------------------------------------------------------------------------


def test_choices_for_str_and_int():
    s = Param("mode", "str", "a", "doc", choices=("a", "b"))
    assert s.validate("b") == "b"
    with pytest.raises(IlsiRequestError) as exc:
        s.validate("c")
    check_error(exc, "mode", "must be one of ['a', 'b']", "'c'")
    i = Param("n", "int", 1, "doc", choices=(1, 2, 4))
    assert i.validate(4.0) == 4
    with pytest.raises(IlsiRequestError) as exc:
        i.validate(3)
    check_error(exc, "n", "must be one of [1, 2, 4]")


# -- lists ----------------------------------------------------------------------------


def test_lists_of_each_scalar_kind():
    assert Param("l", "int_list", [], "doc").validate([1, 2.0, 3]) == [1, 2, 3]
    out = Param("l", "float_list", [], "doc").validate((1, 2.5))
    assert out == [1.0, 2.5] and isinstance(out, list)
    assert Param("l", "str_list", [], "doc").validate(["a", "b"]) == ["a", "b"]
    assert Param("l", "int_list", [], "doc").validate([]) == []


@pytest.mark.parametrize("value, type_name", [("abc", "str"), (3, "int"), ({"a": 1}, "dict"),
                                              (None, "null")])
def test_list_rejects_non_lists(value, type_name):
    with pytest.raises(IlsiRequestError) as exc:
        Param("l", "int_list", [], "doc").validate(value)
    check_error(exc, "l", "expected a list", type_name)


def test_list_max_items():
    p = Param("l", "int_list", [], "doc", max_items=3)
    assert p.validate([1, 2, 3]) == [1, 2, 3]
    with pytest.raises(IlsiRequestError) as exc:
        p.validate([1, 2, 3, 4])
    check_error(exc, "l", "at most 3 items", "got 4")


def test_list_elements_are_validated_and_labelled_by_index():
    p = Param("ids", "int_list", [], "doc", minimum=0)
    with pytest.raises(IlsiRequestError) as exc:
        p.validate([0, 5, -1])
    check_error(exc, "ids[2]", "must be >= 0")
    with pytest.raises(IlsiRequestError) as exc:
        p.validate([0, True])
    check_error(exc, "ids[1]", "expected an integer", "bool")
    with pytest.raises(IlsiRequestError) as exc:
        Param("f", "float_list", [], "doc").validate([1.0, math.nan])
    check_error(exc, "f[1]", "finite")
    with pytest.raises(IlsiRequestError) as exc:
        Param("s", "str_list", [], "doc", max_length=2).validate(["ab", "abc"])
    check_error(exc, "s[1]", "at most 2 characters")
    with pytest.raises(IlsiRequestError) as exc:
        Param("s", "str_list", [], "doc", choices=("x",)).validate(["x", "y"])
    check_error(exc, "s[1]", "must be one of")


# -- validate_params ------------------------------------------------------------------

SCHEMA = (
    Param("mass", "float", 0.95, "doc", minimum=0.0, maximum=1.0, exclusive_minimum=True),
    Param("k", "int", 1, "doc", minimum=1),
    Param("ids", "int_list", [7, 8], "doc"),
)


def test_validate_params_fills_defaults():
    assert validate_params(SCHEMA, {}) == {"mass": 0.95, "k": 1, "ids": [7, 8]}
    assert validate_params(SCHEMA, {"k": 3.0}) == {"mass": 0.95, "k": 3, "ids": [7, 8]}


def test_validate_params_copies_list_defaults():
    out = validate_params(SCHEMA, {})
    out["ids"].append(9)
    assert SCHEMA[2].default == [7, 8]
    assert validate_params(SCHEMA, {})["ids"] == [7, 8]


def test_validate_params_rejects_unknown_keys():
    with pytest.raises(IlsiRequestError) as exc:
        validate_params(SCHEMA, {"mas": 0.9})
    check_error(exc, "mas", "unknown parameter", "['ids', 'k', 'mass']")


def test_validate_params_reserved_keys_are_allowed_and_dropped():
    out = validate_params(SCHEMA, {"method": "typical", "mass": 0.5}, reserved=("method",))
    assert out == {"mass": 0.5, "k": 1, "ids": [7, 8]}
    with pytest.raises(IlsiRequestError) as exc:
        validate_params(SCHEMA, {"bogus": 1}, reserved=("method",))
    check_error(exc, "bogus", "'method'")


def test_validate_params_propagates_value_errors():
    with pytest.raises(IlsiRequestError) as exc:
        validate_params(SCHEMA, {"mass": 0})
    check_error(exc, "mass", "must be > 0")


# -- describe -------------------------------------------------------------------------


def test_describe_scalar_with_inclusive_bounds():
    p = Param("k", "int", 1, "how many", minimum=1, maximum=1024)
    assert p.describe() == {"name": "k", "type": "int", "default": 1, "minimum": 1,
                            "maximum": 1024, "doc": "how many"}


def test_describe_exclusive_bounds_and_choices():
    p = Param("x", "float", 0.5, "d", minimum=0.0, maximum=1.0,
              exclusive_minimum=True, exclusive_maximum=True)
    d = p.describe()
    assert d["exclusive_minimum"] == 0.0 and d["exclusive_maximum"] == 1.0
    assert "minimum" not in d and "maximum" not in d
    c = Param("mode", "str", "a", "d", choices=("a", "b")).describe()
    assert c == {"name": "mode", "type": "str", "default": "a", "choices": ["a", "b"], "doc": "d"}


def test_describe_lists_have_max_items():
    d = Param("ids", "int_list", [], "d", max_items=8).describe()
    assert d == {"name": "ids", "type": "int_list", "default": [], "max_items": 8, "doc": "d"}
    assert "max_items" not in Param("b", "bool", False, "d").describe()
