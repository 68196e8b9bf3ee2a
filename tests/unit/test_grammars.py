"""The grammars library (``grammars/``, :mod:`sglang_ilsi.grammars`), checked offline.

For every grammar, every backend it claims must accept its valid strings and
reject its invalid ones, using that backend's own matcher on a real tokenizer
(the embedded tiny model's byte-level BPE), exactly as SGLang builds them:

- xgrammar: ``GrammarCompiler`` (``compile_grammar`` / ``compile_regex`` /
  ``compile_json_schema(any_whitespace=True)``, as SGLang's xgrammar backend
  calls them) and a ``GrammarMatcher`` fed the string's token ids; a string is
  accepted when every token is accepted and then the stop token is too, leaving
  the matcher terminated. The byte-level ``accept_string`` path must agree.
- outlines (regex and JSON schema kinds): SGLang's outlines backend path:
  ``build_regex_from_schema`` (outlines_core, default whitespace pattern) for
  schemas, then ``RegexGuide.from_regex`` over ``TransformerTokenizer``; a
  string is accepted when each token is among the guide's allowed tokens and
  EOS is allowed at the end.

Valid strings are also checked with a real parser (json, ast, sqlglot, csv,
datetime, float); nothing is ever evaluated. EBNF grammars are further sampled
(random derivations) and each sample must pass xgrammar and the real parser;
regex grammars are compared with Python's ``re`` and the real parser on random
near-miss strings.
"""

from __future__ import annotations

import ast
import calendar
import csv
import io
import json
import keyword
import random
import re
import string
import sys
import warnings
from datetime import date, datetime
from pathlib import Path

import pytest

from sglang_ilsi import grammars
from sglang_ilsi.cli import main
from sglang_ilsi.params import IlsiRequestError

xgr = pytest.importorskip("xgrammar")
sqlglot = pytest.importorskip("sqlglot")

REQUIRED = {
    "json-value": "ebnf", "json-object": "json_schema", "arithmetic": "ebnf",
    "sql-select": "ebnf", "csv": "ebnf", "iso-date": "regex", "iso-datetime": "regex",
    "yes-no": "regex", "number": "regex", "function-call": "json_schema",
    "python-expression": "ebnf",
}

# name -> (valid, invalid). Each grammar's header example is added to its valid strings.
CASES: dict[str, tuple[list[str], list[str]]] = {
    "json-value": (
        ["[]", "null", "-0.5e10", '"caf\\u00e9 \\"q\\" \\\\ ok"', '"日本語"',
         ' {"a" : [true, false, {}], "b": {"c": []}} ', '[1, 2.5, -3E-2, "x"]',
         '{\n  "nested": {"deep": [[[]]]}\n}'],
        ["{'a': 1}", "[1, 2,]", '{"a" 1}', "01", "NaN", '"unterminated', "tru",
         '{"a": 1}}', '"tab\there"', "", ".5"],
    ),
    "json-object": (
        ["{}", '{"a": 1}', '{"a": {"b": [1, 2]}, "c": null}', '{"city":"Paris","n":-2.5}',
         '{"x": "y", "t": true}'],
        ["[]", '"obj"', '{"a": }', "{a: 1}", '{"a": 1,}', '{"a": 1} extra', "null", ""],
    ),
    "function-call": (
        ['{"name": "get_weather", "arguments": {}}',
         '{"name": "math.sqrt", "arguments": {"x": 2}}',
         '{"name": "f", "arguments": {"q": "a b", "n": [1, 2], "ok": true}}',
         '{"name":"_private-tool","arguments":{"nested":{"k":null}}}',
         '{"name": "search", "arguments": {"query": "sglang", "top_k": 5}}'],
        ['{"arguments": {}, "name": "f"}', '{"name": "f"}', '{"name": "f", "arguments": []}',
         '{"name": "1f", "arguments": {}}', '{"name": "f", "arguments": {}, "extra": 1}',
         '{"name": "", "arguments": {}}', '[{"name": "f", "arguments": {}}]'],
    ),
    "arithmetic": (
        ["1", "0.5", "((2))", "10-3*4/2", "-(-7)", "1 + 2 + 3.25", "0 / 0"],
        ["1 +", "(1", "2 ** 3", "012", ".5", "1..2", "x + 1", " 1", "1  + 2", "1 % 2", ""],
    ),
    "csv": (
        ["a", "name,age\nAda,36", "a,b\r\nc,d\r\n", '"x","y, z"\n"he said ""hi""",\n',
         ",b\n1,", 'h1\n"multi\nline"\n', "id,note\n1,caf\u00e9 au lait\n"],
        ["", "a,b\n\nc,d", '"unterminated', 'a,"b"c', 'ab"c', '"a""', "a,b\n\n", "\n"],
    ),
    "sql-select": (
        ["SELECT * FROM t",
         "select a, b from db.users where a != 'x' and b is not null order by a asc, b desc limit 0;",
         "SELECT DISTINCT city FROM people WHERE NOT (age < 18 OR age > 65)",
         "SELECT name\nFROM people\nWHERE name LIKE 'A%' AND note = 'it''s'\nLIMIT 5",
         "SELECT t.a FROM t WHERE t.a <> -1.5",
         "SELECT id FROM orders WHERE total>=100 ORDER BY total DESC"],
        ["SELECT FROM t", "SELECT * FROM select", "SELECT a FROM t WHERE",
         "SELECT a FROM t LIMIT 5 ORDER BY a", "SELECT a FROM t GROUP BY a",
         "Select a From t", 'SELECT a FROM t WHERE a = "x"', "SELECT a FROM t LIMIT -1",
         "DELETE FROM t", "SELECT a FROM t; DROP TABLE t", "SELECT a, FROM t"],
    ),
    "iso-date": (
        ["2000-02-29", "0001-01-01", "9999-12-31", "2023-04-30", "1999-11-30", "2400-02-29"],
        ["2023-02-29", "1900-02-29", "2024-13-01", "2024-04-31", "0000-01-01", "2024-1-01",
         "20240229", "2024-02-29T00:00", "2024-00-10", " 2024-01-01"],
    ),
    "iso-datetime": (
        ["2024-01-01T00:00", "1999-12-31T23:59:59Z", "2024-02-29T12:30:05.123456-05:30",
         "2000-01-01T00:00:00+00:00", "2021-06-15T08:05:09.5"],
        ["2024-01-01", "2024-01-01 12:00", "2024-01-01T24:00", "2024-01-01T12:60",
         "2024-01-01T12:00:60", "2023-02-29T00:00", "2024-01-01T12:00:00.1234567",
         "2024-01-01T12:00+5:00", "2024-01-01t12:00"],
    ),
    "yes-no": (
        ["yes", "no", "Yes", "No", "YES", "NO"],
        ["y", "yes.", " yes", "yEs", "nope", "yesno", "", "true"],
    ),
    "number": (
        ["0", "-12", "+6.02e23", "3.25", "1E-9", "-0.0", "42e+3"],
        [".5", "5.", "01", "1e", "--1", "1,000", "0x10", "nan", "1_000", "", "+"],
    ),
    "python-expression": (
        ["x", "f(1, 'a', key=None)", '[1, 2.5e-3, "s\\n"][0]', "a.b.c(d)[1:2, ::3]",
         "not (x is not None) or y in {'k': (1,), \"v\": []}", "-x ** -2 // 3 % 4", "()",
         "(1, 2,)", "_tmp + match", "'caf\\u00e9' != \"\\x41\"", "x[:]", "~a != b <= c",
         "f([1])"],
        ["lambda: 1", "x if y else z", "__import__('os')", "x.__class__", "f(a=1, 2)", "1 +",
         " x", "x.if", "f(True=1)", "import os", "[i for i in x]", "x = 1", 'f"{x}"',
         "1.real", "a and", '"unterminated', "2x", "{1, 2}", "f(*args)", "x  + 1"],
    ),
}


# -- real parsers (valid strings only; nothing is evaluated) ---------------------------------

def _parse_python(s: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SyntaxWarnings count as failures too
        ast.parse(s, mode="eval")


def _parse_csv(s: str) -> None:
    rows = list(csv.reader(io.StringIO(s, newline=""), strict=True))
    assert rows and all(len(r) >= 1 for r in rows), rows


def _parse_sql(s: str) -> None:
    tree = sqlglot.parse_one(s)
    assert isinstance(tree, sqlglot.exp.Select), type(tree)


def _parse_function_call(s: str) -> None:
    obj = json.loads(s)
    assert list(obj) == ["name", "arguments"] and isinstance(obj["arguments"], dict)


def _parse_object(s: str) -> None:
    assert isinstance(json.loads(s), dict)


def _parse_datetime(s: str) -> None:
    datetime.fromisoformat(s.replace("Z", "+00:00"))  # Python 3.10 lacks "Z"


def _parse_yes_no(s: str) -> None:
    assert s.lower() in ("yes", "no")


PARSERS = {
    "json-value": json.loads, "json-object": _parse_object,
    "function-call": _parse_function_call, "arithmetic": _parse_python,
    "python-expression": _parse_python, "sql-select": _parse_sql, "csv": _parse_csv,
    "iso-date": date.fromisoformat, "iso-datetime": _parse_datetime, "yes-no": _parse_yes_no,
    "number": float,
}


# -- backend matchers ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from sglang_ilsi_lab.models import tiny

    return AutoTokenizer.from_pretrained(str(tiny.ensure()))


class XGrammarChecker:
    """SGLang's xgrammar backend, offline: compile as it does, match token by token."""

    def __init__(self, tok):
        self.tok = tok
        self.eos = tok.eos_token_id
        info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok),
                                                  stop_token_ids=[self.eos])
        self.compiler = xgr.GrammarCompiler(info, max_threads=1)
        self._cache: dict = {}

    def compile(self, key: str, text: str):
        if (key, text) not in self._cache:
            if key == "ebnf":
                ctx = self.compiler.compile_grammar(text)
            elif key == "regex":
                ctx = self.compiler.compile_regex(text)
            else:
                assert key == "json_schema"
                ctx = self.compiler.compile_json_schema(text, any_whitespace=True)
            self._cache[key, text] = ctx
        return self._cache[key, text]

    def accepts(self, params: dict[str, str], s: str) -> bool:
        ((key, text),) = params.items()
        ctx = self.compile(key, text)
        ids = self.tok.encode(s, add_special_tokens=False)
        assert self.tok.decode(ids) == s
        m = xgr.GrammarMatcher(ctx)
        by_tokens = (all(m.accept_token(i) for i in ids) and m.accept_token(self.eos)
                     and m.is_terminated())
        m = xgr.GrammarMatcher(ctx)
        by_bytes = m.accept_string(s) and m.accept_token(self.eos) and m.is_terminated()
        assert by_tokens == by_bytes, (s, by_tokens, by_bytes)
        return by_tokens


class OutlinesChecker:
    """SGLang's outlines backend, offline: the same regex and RegexGuide, walked by token."""

    def __init__(self, tok):
        from outlines.models.transformers import TransformerTokenizer

        self.tok = tok
        self.otok = TransformerTokenizer(tok)
        self._cache: dict = {}

    def regex(self, key: str, text: str) -> str:
        if key == "regex":
            return text
        assert key == "json_schema"
        try:
            from outlines.fsm.json_schema import build_regex_from_schema
        except ImportError:
            from outlines_core.fsm.json_schema import build_regex_from_schema
        return build_regex_from_schema(text, None)

    def guide(self, key: str, text: str):
        from outlines.fsm.guide import RegexGuide

        if (key, text) not in self._cache:
            self._cache[key, text] = RegexGuide.from_regex(self.regex(key, text), self.otok)
        return self._cache[key, text]

    def accepts(self, params: dict[str, str], s: str) -> bool:
        ((key, text),) = params.items()
        if key == "ebnf":
            raise AssertionError("outlines cannot compile EBNF")
        guide = self.guide(key, text)
        state = guide.initial_state
        for i in self.tok.encode(s, add_special_tokens=False):
            if i not in self.allowed(guide, state):
                return False
            state = guide.get_next_state(state, i)
        return self.tok.eos_token_id in self.allowed(guide, state)

    @staticmethod
    def allowed(guide, state) -> set[int]:
        """The tokens SGLang's outlines backend leaves unmasked in ``state``."""
        tokens = guide.get_next_instruction(state).tokens
        return {int(t) for t in tokens}


@pytest.fixture(scope="module")
def checkers(tokenizer):
    return {"xgrammar": XGrammarChecker(tokenizer), "outlines": OutlinesChecker(tokenizer)}


@pytest.fixture(scope="module")
def library():
    return grammars.load_library()


# -- the library itself -------------------------------------------------------------------

def test_library_has_the_required_grammars(library):
    for name, kind in REQUIRED.items():
        assert name in library, name
        assert library[name].kind == kind, name
    assert set(CASES) == set(library), "every grammar needs test cases"
    for name, g in library.items():
        assert g.name == name and g.description and g.example and g.backends
        assert "xgrammar" in g.backends
        if g.kind == "ebnf":
            assert g.backends == ("xgrammar",)
        else:
            assert set(g.backends) == {"xgrammar", "outlines"}
        valid, invalid = CASES[name]
        assert len(valid) >= 5 and len(invalid) >= 5
        assert not set(valid) & set(invalid)
    assert grammars.names() == sorted(library)


def test_library_is_found_in_the_source_tree():
    assert grammars.find_grammar_dir() == Path(grammars.__file__).resolve().parent.parent / \
        "grammars"
    assert grammars.grammar_dirs()[1] == Path(sys.prefix) / "share" / "sglang-ilsi" / "grammars"
    readme = (grammars.find_grammar_dir() / "README.md").read_text()
    for name in REQUIRED:
        assert f"`{name}`" in readme, name


def test_installed_data_files_are_the_fallback(tmp_path, monkeypatch, library):
    import shutil

    share = tmp_path / "prefix" / "share" / "sglang-ilsi" / "grammars"
    shutil.copytree(grammars.find_grammar_dir(), share)
    # As in a wheel install: no grammars next to the package, data files under sys.prefix.
    monkeypatch.setattr(grammars, "__file__", str(tmp_path / "site" / "sglang_ilsi" / "g.py"))
    monkeypatch.setattr(grammars.sys, "prefix", str(tmp_path / "prefix"))
    assert grammars.find_grammar_dir() == share
    assert grammars.load_library() == library
    monkeypatch.setattr(grammars.sys, "prefix", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="grammars folder not found"):
        grammars.find_grammar_dir()


def test_pyproject_ships_the_grammars_as_data_files():
    tomllib = pytest.importorskip("tomllib")
    pyproject = Path(grammars.__file__).resolve().parent.parent / "pyproject.toml"
    data = tomllib.loads(pyproject.read_text())
    files = data["tool"]["setuptools"]["data-files"]
    assert files["share/sglang-ilsi/grammars"] == ["grammars/*"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_grammar_accepts_valid_and_rejects_invalid(name, library, checkers):
    g = library[name]
    valid, invalid = CASES[name]
    valid = [*valid, g.example]
    parse = PARSERS[name]
    for s in valid:
        parse(s)  # the real parser agrees that the valid strings are valid
    for backend in g.backends:
        params = grammars.sampling_params_for(name, backend)
        checker = checkers[backend]
        wrongly_rejected = [s for s in valid if not checker.accepts(params, s)]
        wrongly_accepted = [s for s in invalid if checker.accepts(params, s)]
        assert not wrongly_rejected, f"{name} on {backend} rejects {wrongly_rejected}"
        assert not wrongly_accepted, f"{name} on {backend} accepts {wrongly_accepted}"


def test_header_parsing_and_sampling_params(library):
    g = library["iso-date"]
    assert grammars.sampling_params_for("iso-date", "outlines") == {"regex": g.text}
    assert not g.text.startswith("#") and "\n" not in g.text
    ebnf = grammars.sampling_params_for("sql-select", "xgrammar")
    assert list(ebnf) == ["ebnf"] and ebnf["ebnf"].startswith("root ::=")
    assert "# description" not in ebnf["ebnf"]
    schema = json.loads(grammars.sampling_params_for("function-call", "xgrammar")["json_schema"])
    assert "$comment" not in schema and "examples" not in schema and schema["type"] == "object"
    assert library["csv"].example.count("\n") == 3  # a JSON-string example
    assert grammars.get("yes-no") == library["yes-no"]
    cards = grammars.describe()
    assert [c["name"] for c in cards] == sorted(library)
    assert {c["name"] for c in cards if c["takes_schema"]} == {"json-object"}


# -- errors ---------------------------------------------------------------------------

def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(IlsiRequestError) as info:
        fn(*args, **kwargs)
    assert info.value.param == "grammar"
    assert str(info.value).startswith("ilsi.grammar: ")
    return str(info.value)


def test_unknown_grammar_names_are_request_errors():
    msg = _error(grammars.get, "sql-delete")
    assert "unknown grammar 'sql-delete'" in msg and "sql-select" in msg
    _error(grammars.sampling_params_for, "nope", "xgrammar")
    _error(grammars.get, None)


@pytest.mark.parametrize("name", ["json-value", "arithmetic", "sql-select", "csv",
                                  "python-expression"])
def test_outlines_cannot_compile_ebnf(name):
    msg = _error(grammars.sampling_params_for, name, "outlines")
    assert "ebnf" in msg and "'outlines'" in msg and "--grammar-backend xgrammar" in msg


def test_other_backends():
    assert "--grammar-backend none" in _error(grammars.sampling_params_for, "number", "none")
    assert "unknown grammar backend" in _error(grammars.sampling_params_for, "number", "lark")
    # llguidance could compile the kind, but nothing here is verified on it.
    assert "not verified" in _error(grammars.sampling_params_for, "number", "llguidance")


def test_json_object_schema_argument(checkers):
    schema = {"type": "object", "properties": {"city": {"type": "string"},
                                               "zip": {"type": "integer"}},
              "required": ["city", "zip"], "additionalProperties": False}
    for backend in ("xgrammar", "outlines"):
        params = grammars.sampling_params_for("json-object", backend, schema=schema)
        assert json.loads(params["json_schema"]) == schema
        ok = ['{"city": "Paris", "zip": 75001}', '{"city":"Lyon","zip":69001}']
        bad = ['{"city": "Paris"}', '{"zip": 1, "city": "x"}', '{"city": 1, "zip": 2}', "{}",
               '{"city": "a", "zip": 1.5}']
        assert all(checkers[backend].accepts(params, s) for s in ok), backend
        assert not any(checkers[backend].accepts(params, s) for s in bad), backend
    as_text = grammars.sampling_params_for("json-object", "xgrammar", schema=json.dumps(schema))
    assert json.loads(as_text["json_schema"]) == schema


@pytest.mark.parametrize("bad", [[1, 2], "[1]", "not json", 5, True, {}, {"type": "array"},
                                 {"type": ["object", "null"]},
                                 {"properties": {"a": {"type": "string"}}}])
def test_json_object_rejects_non_object_schemas(bad):
    msg = _error(grammars.sampling_params_for, "json-object", "xgrammar", schema=bad)
    assert "schema" in msg


def test_json_object_rejects_large_schemas():
    props = {f"field_{i}": {"type": "string", "description": "x" * 40} for i in range(600)}
    msg = _error(grammars.sampling_params_for, "json-object", "outlines",
                 schema={"type": "object", "properties": props})
    assert "too large" in msg and str(grammars.MAX_SCHEMA_BYTES) in msg
    small = {"type": "object", "properties": dict(list(props.items())[:50])}
    assert grammars.sampling_params_for("json-object", "outlines", schema=small)


def test_schema_only_for_json_object():
    msg = _error(grammars.sampling_params_for, "function-call", "xgrammar",
                 schema={"type": "object"})
    assert "takes no schema" in msg


def test_schema_features_the_backend_would_ignore():
    v = pytest.importorskip("sglang.srt.constrained.json_schema_validation")
    if not hasattr(v, "validate_xgrammar_json_schema"):
        pytest.skip("this SGLang has no schema feature check")
    schema = {"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 3}}}
    assert "xgrammar" in _error(grammars.sampling_params_for, "json-object", "xgrammar",
                                schema=schema)


def test_malformed_grammar_files(tmp_path):
    (tmp_path / "ok.regex").write_text("# description: d\n# backends: xgrammar\n"
                                       "# example: a\na+\n")
    assert grammars.load_library(tmp_path)["ok"].text == "a+"
    (tmp_path / "two.regex").write_text("# description: d\n# backends: xgrammar\n"
                                        "# example: a\na\nb\n")
    with pytest.raises(grammars.GrammarFileError, match="one pattern"):
        grammars.load_library(tmp_path)
    (tmp_path / "two.regex").unlink()
    (tmp_path / "bad.ebnf").write_text("# description: d\n# backends: outlines\n"
                                       "# example: a\nroot ::= \"a\"\n")
    with pytest.raises(grammars.GrammarFileError, match="cannot compile ebnf"):
        grammars.load_library(tmp_path)
    (tmp_path / "bad.ebnf").write_text("# description: d\n# backends: xgrammar\n"
                                       "root ::= \"a\"\n")
    with pytest.raises(grammars.GrammarFileError, match="example"):
        grammars.load_library(tmp_path)


# -- generated identifier rules ------------------------------------------------------------

def test_generated_blocks_are_current(library):
    assert set(keyword.kwlist) <= set(grammars.PYTHON_KEYWORDS)
    for name in grammars.GENERATED:
        assert grammars.generated_block(name) in library[name].path.read_text(), (
            f"run: python -m sglang_ilsi.grammars --regenerate ({name})")


def test_python_names_are_never_keywords_or_dunders(checkers):
    params = grammars.sampling_params_for("python-expression", "xgrammar")
    acc = checkers["xgrammar"].accepts
    for kw in keyword.kwlist:
        assert acc(params, kw) == (kw in ("True", "False", "None")), kw
        assert not acc(params, f"x.{kw}"), kw
        assert not acc(params, f"f({kw}=1)"), kw
        assert acc(params, f"{kw}_"), kw
        assert acc(params, f"x.{kw}x"), kw
        assert acc(params, kw[:-1]) == (kw[:-1] not in keyword.kwlist and kw[:-1] != ""), kw
    for soft in ("match", "case", "type", "_", "_x", "_1", "x__y", "print"):
        assert acc(params, soft), soft
        _parse_python(soft)
    for dunder in ("__import__", "__x", "x.__dict__", "f(__x=1)", "__"):
        assert not acc(params, dunder), dunder


def test_sql_identifiers_are_never_keywords(checkers):
    params = grammars.sampling_params_for("sql-select", "xgrammar")
    acc = checkers["xgrammar"].accepts
    for kw in grammars.SQL_KEYWORDS:
        for word in (kw, kw.upper(), kw.capitalize()):
            assert not acc(params, f"SELECT {word} FROM t"), word
            assert not acc(params, f"SELECT a FROM {word}"), word
        assert acc(params, f"SELECT {kw}s FROM {kw}_t"), kw
        _parse_sql(f"SELECT {kw}s FROM {kw}_t")


def test_sql_keywords_cover_what_sqlglot_refuses_as_names():
    """Any sqlglot keyword outside SQL_KEYWORDS must work as a bare name everywhere
    the grammar puts names (otherwise add it and regenerate)."""
    from sqlglot.tokens import Tokenizer

    words = {k.lower() for k in Tokenizer.KEYWORDS if re.fullmatch(r"[A-Za-z_]+", k)}
    refused = []
    for w in sorted(words - set(grammars.SQL_KEYWORDS)):
        for q in (f"SELECT {w} FROM t", f"SELECT a FROM {w}", f"SELECT a FROM t WHERE {w} = 1",
                  f"SELECT a FROM t ORDER BY {w} DESC",
                  f"SELECT t.{w}, b FROM s.{w} WHERE {w} IS NULL AND NOT {w} LIKE 'a' LIMIT 1"):
            try:
                _parse_sql(q)
            except Exception:  # noqa: BLE001
                refused.append(w)
                break
    assert not refused, f"add to SQL_KEYWORDS: {refused}"


# -- sampled strings and near misses --------------------------------------------------------

class EbnfSampler:
    """Random strings from an XGrammar EBNF grammar (the subset our files use)."""

    POOL = string.printable + "éß日本€😀"
    DEPTH = 40  # past this rule depth, or once BUDGET rule expansions are spent,
    BUDGET = 400  # take the shortest way out


    def __init__(self, text: str, rng: random.Random):
        self.rng = rng
        self.rules = {}
        for line in text.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                name, _, rhs = line.partition("::=")
                self.src, self.pos = rhs.strip(), 0
                self.rules[name.strip()] = self._alt()
                assert self.pos == len(self.src), line
        self.height = dict.fromkeys(self.rules, float("inf"))
        for _ in range(len(self.rules) + 1):
            for name, node in self.rules.items():
                self.height[name] = 1 + self._h(node)

    # parsing
    def _peek(self) -> str:
        while self.pos < len(self.src) and self.src[self.pos] == " ":
            self.pos += 1
        return self.src[self.pos:self.pos + 1]

    def _alt(self):
        seqs = [self._seq()]
        while self._peek() == "|":
            self.pos += 1
            seqs.append(self._seq())
        return ("alt", seqs)

    def _seq(self):
        items = []
        while self._peek() not in ("", "|", ")"):
            items.append(self._postfix())
        return ("seq", items)

    def _postfix(self):
        node = self._atom()
        while True:
            c = self.src[self.pos:self.pos + 1]
            if c in ("?", "*", "+"):
                self.pos += 1
                node = ("rep", node, 0 if c != "+" else 1, 1 if c == "?" else None)
            elif c == "{":
                end = self.src.index("}", self.pos)
                lo, _, hi = self.src[self.pos + 1:end].partition(",")
                node = ("rep", node, int(lo), int(hi) if hi else int(lo))
                self.pos = end + 1
            else:
                return node

    def _char(self, quote: str) -> str:
        c = self.src[self.pos]
        self.pos += 1
        if c != "\\":
            return c
        e = self.src[self.pos]
        self.pos += 1
        if e == "x":
            self.pos += 2
            return chr(int(self.src[self.pos - 2:self.pos], 16))
        return {"n": "\n", "r": "\r", "t": "\t"}.get(e, e)

    def _atom(self):
        c = self._peek()
        if c == "(":
            self.pos += 1
            node = self._alt()
            assert self._peek() == ")"
            self.pos += 1
            return node
        if c == '"':
            self.pos += 1
            out = ""
            while self.src[self.pos] != '"':
                out += self._char('"')
            self.pos += 1
            return ("lit", out)
        if c == "[":
            self.pos += 1
            negate = self.src[self.pos] == "^"
            self.pos += negate
            ranges = []
            while self.src[self.pos] != "]":
                lo = self._char("]")
                hi = lo
                if self.src[self.pos] == "-" and self.src[self.pos + 1] != "]":
                    self.pos += 1
                    hi = self._char("]")
                ranges.append((lo, hi))
            self.pos += 1
            chars = [ch for ch in self.POOL
                     if any(lo <= ch <= hi for lo, hi in ranges) != negate]
            return ("cls", chars)
        m = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(self.src, self.pos)
        assert m, self.src[self.pos:]
        self.pos = m.end()
        return ("ref", m.group())

    # sampling
    def _h(self, node) -> float:
        kind = node[0]
        if kind == "alt":
            return min(self._h(s) for s in node[1])
        if kind == "seq":
            return max((self._h(i) for i in node[1]), default=0)
        if kind == "rep":
            return 0 if node[2] == 0 else self._h(node[1])
        if kind == "ref":
            return self.height[node[1]]
        return 0

    def sample(self) -> str:
        self.budget = self.BUDGET
        return self._sample(("ref", "root"), 0)

    def _sample(self, node, depth: int) -> str:
        kind, rng = node[0], self.rng
        deep = depth > self.DEPTH or self.budget <= 0
        if kind == "lit":
            return node[1]
        if kind == "cls":
            return rng.choice(node[1])
        if kind == "ref":
            self.budget -= 1
            return self._sample(self.rules[node[1]], depth + 1)
        if kind == "seq":
            return "".join(self._sample(i, depth) for i in node[1])
        if kind == "alt":
            options = node[1]
            if deep:
                best = min(self._h(s) for s in options)
                options = [s for s in options if self._h(s) == best]
            return self._sample(rng.choice(options), depth)
        _, inner, lo, hi = node
        n = lo
        if not deep:
            while (hi is None or n < hi) and rng.random() < 0.6:
                n += 1
        return "".join(self._sample(inner, depth) for _ in range(n))


@pytest.mark.parametrize("name", ["json-value", "arithmetic", "sql-select", "csv",
                                  "python-expression"])
def test_sampled_ebnf_strings_parse(name, library, checkers):
    g = library[name]
    rng = random.Random(f"grammars-{name}")
    sampler = EbnfSampler(g.text, rng)
    params = grammars.sampling_params_for(name, "xgrammar")
    samples = {sampler.sample() for _ in range(250)}
    assert len(samples) > 50
    for s in samples:
        assert checkers["xgrammar"].accepts(params, s), s
        try:
            PARSERS[name](s)
        except Exception as exc:  # noqa: BLE001 - any parser failure is a grammar bug
            raise AssertionError(f"{name} produced {s!r}, which does not parse: {exc}") from exc


def test_iso_date_regex_is_exactly_fromisoformat(library):
    rx = re.compile(library["iso-date"].text)
    years = [0, 1, 4, 100, 400, 1600, 1900, 1999, 2000, 2023, 2024, 2100, 2400, 9996, 9999]
    for y in years:
        for mo in range(0, 14):
            for d in range(0, 33):
                s = f"{y:04d}-{mo:02d}-{d:02d}"
                try:
                    date.fromisoformat(s)
                    ok = True
                except ValueError:
                    ok = False
                assert bool(rx.fullmatch(s)) == ok, s
    for y in range(1, 10000):  # every leap day, every year
        assert rx.fullmatch(f"{y:04d}-02-28"), y
        assert bool(rx.fullmatch(f"{y:04d}-02-29")) == calendar.isleap(y), y


def _near_misses(rng: random.Random, name: str) -> list[str]:
    out = []
    for _ in range(400):
        if name == "iso-datetime":
            base = (f"{rng.randint(0, 9999):04d}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}"
                    f"T{rng.randint(0, 25):02d}:{rng.randint(0, 61):02d}")
            if rng.random() < 0.6:
                base += f":{rng.randint(0, 61):02d}"
                if rng.random() < 0.5:
                    base += "." + "".join(rng.choices("0123456789", k=rng.randint(0, 6)))
            base += rng.choice(["", "", "Z", f"+{rng.randint(0, 25):02d}:{rng.randint(0, 61):02d}",
                                f"-{rng.randint(0, 25):02d}:{rng.randint(0, 61):02d}"])
            out.append(base)
        elif name == "number":
            out.append("".join(rng.choices("0123456789+-.eE", k=rng.randint(1, 7))))
        elif name == "yes-no":
            out.append("".join(rng.choice((c, c.upper())) for c in rng.choice(["yes", "no"])))
        else:
            out.append(f"{rng.randint(0, 9999):04d}-{rng.randint(0, 13):02d}-"
                       f"{rng.randint(0, 32):02d}")
    return out


@pytest.mark.parametrize("name", ["iso-date", "iso-datetime", "number", "yes-no"])
def test_regex_backends_agree_on_near_misses(name, library, checkers):
    g = library[name]
    rx = re.compile(g.text)
    rng = random.Random(f"near-{name}")
    cases = _near_misses(rng, name)
    matched = 0
    for s in cases:
        ok = bool(rx.fullmatch(s))
        matched += ok
        if ok:
            PARSERS[name](s)
        elif name == "iso-date":  # exact: whatever parses must match
            with pytest.raises(ValueError):
                PARSERS[name](s)
    assert matched > 20
    sub = cases[:60]
    for backend in g.backends:
        params = grammars.sampling_params_for(name, backend)
        for s in sub:
            assert checkers[backend].accepts(params, s) == bool(rx.fullmatch(s)), (backend, s)


# -- CLI ----------------------------------------------------------------------------------

def test_cli_grammars_json(capsys):
    assert main(["grammars", "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in cards] == grammars.names()
    for c in cards:
        assert set(c) >= {"name", "kind", "backends", "description", "example"}


def test_cli_grammars_text(capsys):
    assert main(["grammars"]) == 0
    out = capsys.readouterr().out
    for g in grammars.load_library().values():
        assert f"{g.name}  [{g.kind}]  backends: {', '.join(g.backends)}" in out
    assert "schema" in out
