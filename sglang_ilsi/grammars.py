"""The curated grammars library: named grammars served with ``"ilsi": {"grammar": NAME}``.

Each grammar is a file in the top-level ``grammars/`` folder (shipped in wheels
under ``share/sglang-ilsi/grammars``), whose kind follows from its suffix:

- ``NAME.ebnf``: an XGrammar EBNF grammar (sent as SGLang's ``ebnf`` key);
- ``NAME.regex``: one regular expression (sent as ``regex``);
- ``NAME.schema.json``: a JSON schema (sent as ``json_schema``, a JSON string).

``.ebnf`` and ``.regex`` files open with a header of ``#`` lines::

    # description: what the grammar accepts (continuation lines start "#   ")
    # backends: xgrammar, outlines
    # example: 2024-02-29
    # notes: optional caveats

The header ends at the first line that does not start with ``#``; the rest of
the file is the grammar (a ``.regex`` file holds exactly one pattern line, so a
pattern cannot start with ``#``). An ``example`` that starts with ``"`` is a
JSON string literal, for examples with newlines. Schemas carry the same facts
in standard annotations: ``description``, ``examples`` (the first is the
example) and ``$comment`` (``"backends: xgrammar, outlines. notes..."``); the
top-level ``title``, ``description``, ``examples`` and ``$comment`` are dropped
from what is sent to SGLang.

``backends`` lists the SGLang grammar backends (``--grammar-backend``) on which
the grammar is verified by ``tests/test_grammars.py``; :func:`sampling_params_for`
refuses any other backend with an :class:`~sglang_ilsi.params.IlsiRequestError`
naming ``grammar``.

Two EBNF grammars need identifiers that are not keywords, which EBNF has no
operator for; :func:`identifier_rules` writes such rules from a keyword list
(``python -m sglang_ilsi.grammars --regenerate`` rewrites the generated blocks,
and the tests check that they are current).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from sglang_ilsi.params import IlsiRequestError

KINDS = ("ebnf", "regex", "json_schema")
# What each SGLang grammar backend can compile, by grammar kind.
BACKEND_KINDS: dict[str, tuple[str, ...]] = {
    "xgrammar": ("ebnf", "regex", "json_schema"),
    "outlines": ("regex", "json_schema"),
    "llguidance": ("ebnf", "regex", "json_schema"),
    "none": (),
}
# The SGLang sampling-params key for each kind.
SAMPLING_KEYS = {"ebnf": "ebnf", "regex": "regex", "json_schema": "json_schema"}
# ``json-object`` takes a request-time ``schema``; its JSON text may be at most this long.
MAX_SCHEMA_BYTES = 32 * 1024
SCHEMA_GRAMMARS = ("json-object",)
_SUFFIXES = ((".schema.json", "json_schema"), (".ebnf", "ebnf"), (".regex", "regex"))
_HEADER_KEYS = ("description", "backends", "example", "notes")
_SCHEMA_ANNOTATIONS = ("$comment", "title", "description", "examples")


@dataclass(frozen=True)
class Grammar:
    """One library grammar. ``text`` is exactly what SGLang receives."""

    name: str
    kind: str
    text: str
    description: str
    backends: tuple[str, ...]
    example: str
    notes: str = ""
    path: Path | None = field(default=None, compare=False)

    @property
    def takes_schema(self) -> bool:
        return self.name in SCHEMA_GRAMMARS

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "backends": list(self.backends),
            "description": self.description,
            "example": self.example,
            "notes": self.notes,
            "takes_schema": self.takes_schema,
        }


class GrammarFileError(ValueError):
    """A file in the grammars folder is malformed (a packaging bug, not a request error)."""


# -- loading ---------------------------------------------------------------------------

def grammar_dirs() -> list[Path]:
    """Where the library is looked for, in order: the source tree, then the
    data files a wheel installs under ``sys.prefix``."""
    return [
        Path(__file__).resolve().parent.parent / "grammars",
        Path(sys.prefix) / "share" / "sglang-ilsi" / "grammars",
    ]


def _split_name(path: Path) -> tuple[str, str] | None:
    for suffix, kind in _SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)], kind
    return None


def find_grammar_dir() -> Path:
    for d in grammar_dirs():
        if d.is_dir() and any(_split_name(p) for p in d.iterdir()):
            return d
    raise FileNotFoundError(
        "sglang-ilsi grammars folder not found; looked in: "
        + ", ".join(str(d) for d in grammar_dirs())
    )


def parse_header(lines: list[str]) -> dict[str, str]:
    """``# key: value`` lines (continuations start with ``#`` and two spaces)."""
    fields: dict[str, str] = {}
    key = None
    for line in lines:
        body = line[1:]
        stripped = body.strip()
        head, sep, value = stripped.partition(":")
        if sep and head in _HEADER_KEYS and not body.startswith("  "):
            key = head
            fields[key] = value.strip()
        elif key is not None and stripped:
            fields[key] = f"{fields[key]} {stripped}".strip()
    return fields


def _decode_example(value: str) -> str:
    if value.startswith('"'):
        return json.loads(value)
    return value


def _parse_backends(value: str, path: Path, kind: str) -> tuple[str, ...]:
    backends = tuple(b.strip() for b in value.split(",") if b.strip())
    if not backends:
        raise GrammarFileError(f"{path}: no backends listed")
    for b in backends:
        if b not in BACKEND_KINDS:
            raise GrammarFileError(f"{path}: unknown backend {b!r}")
        if kind not in BACKEND_KINDS[b]:
            raise GrammarFileError(f"{path}: backend {b!r} cannot compile {kind} grammars")
    return backends


def load_file(path: Path) -> Grammar:
    split = _split_name(path)
    if split is None:
        raise GrammarFileError(f"{path}: not a grammar file (.ebnf, .regex or .schema.json)")
    name, kind = split
    raw = path.read_text(encoding="utf-8")
    if kind == "json_schema":
        try:
            schema = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise GrammarFileError(f"{path}: invalid JSON: {exc}") from None
        if not isinstance(schema, dict):
            raise GrammarFileError(f"{path}: a schema must be a JSON object")
        comment = str(schema.get("$comment", ""))
        head, _, notes = comment.partition(".")
        if not head.strip().startswith("backends:"):
            raise GrammarFileError(f"{path}: $comment must start with 'backends: ...'")
        examples = schema.get("examples") or []
        fields = {
            "description": str(schema.get("description", "")),
            "backends": head.strip()[len("backends:"):],
            "example": json.dumps(examples[0]) if examples else "",
            "notes": notes.strip(),
        }
        body = {k: v for k, v in schema.items() if k not in _SCHEMA_ANNOTATIONS}
        text = json.dumps(body, separators=(",", ":"))
    else:
        lines = raw.splitlines()
        n = 0
        while n < len(lines) and lines[n].startswith("#"):
            n += 1
        fields = parse_header(lines[:n])
        fields["example"] = _decode_example(fields.get("example", ""))
        rest = lines[n:]
        if kind == "regex":
            patterns = [line for line in rest if line.strip()]
            if len(patterns) != 1:
                raise GrammarFileError(f"{path}: a .regex file holds exactly one pattern line")
            text = patterns[0]
        else:
            text = "\n".join(rest).strip("\n") + "\n"
    for key in ("description", "backends", "example"):
        if not fields.get(key):
            raise GrammarFileError(f"{path}: header lacks {key!r}")
    return Grammar(
        name=name,
        kind=kind,
        text=text,
        description=fields["description"],
        backends=_parse_backends(fields["backends"], path, kind),
        example=fields["example"],
        notes=fields.get("notes", ""),
        path=path,
    )


def load_library(directory: str | Path | None = None) -> dict[str, Grammar]:
    """Read every grammar file; returns ``{name: Grammar}`` sorted by name."""
    d = Path(directory) if directory is not None else find_grammar_dir()
    out: dict[str, Grammar] = {}
    for path in sorted(d.iterdir()):
        if path.is_file() and _split_name(path):
            g = load_file(path)
            if g.name in out:
                raise GrammarFileError(f"{path}: grammar {g.name!r} defined twice")
            out[g.name] = g
    return out


@lru_cache(maxsize=1)
def _library() -> dict[str, Grammar]:
    return load_library()


def names() -> list[str]:
    return list(_library())


def get(name: str) -> Grammar:
    """The library grammar ``name``; unknown names raise ``IlsiRequestError("grammar", ...)``."""
    lib = _library()
    if not isinstance(name, str) or name not in lib:
        raise IlsiRequestError("grammar", f"unknown grammar {name!r}; known: {sorted(lib)}")
    return lib[name]


def describe() -> list[dict[str, Any]]:
    """JSON-able cards for ``sglang-ilsi grammars``."""
    return [g.describe() for g in _library().values()]


# -- requests --------------------------------------------------------------------------

def _check_backend(g: Grammar, backend: str) -> None:
    if backend not in BACKEND_KINDS:
        raise IlsiRequestError(
            "grammar", f"unknown grammar backend {backend!r}; known: {sorted(BACKEND_KINDS)}")
    if backend == "none":
        raise IlsiRequestError(
            "grammar", f"grammar {g.name!r} needs constrained decoding, but the server runs "
                       "with --grammar-backend none")
    if g.kind not in BACKEND_KINDS[backend]:
        raise IlsiRequestError(
            "grammar", f"grammar {g.name!r} is {g.kind}, which the server's {backend!r} grammar "
                       f"backend cannot compile; it needs --grammar-backend "
                       f"{' or '.join(g.backends)}")
    if backend not in g.backends:
        raise IlsiRequestError(
            "grammar", f"grammar {g.name!r} is not verified on the {backend!r} grammar backend; "
                       f"supported: {', '.join(g.backends)}")


def _schema_text(schema: Any, backend: str) -> str:
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise IlsiRequestError("grammar", f"schema is not valid JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise IlsiRequestError(
            "grammar", f"schema must be a JSON object (a JSON Schema), got "
                       f"{'null' if schema is None else type(schema).__name__}")
    if schema.get("type") != "object":
        # Without it a schema also allows arrays, strings, ... (``{}`` allows any value).
        raise IlsiRequestError(
            "grammar", 'json-object needs a schema with "type": "object", got type '
                       f"{schema.get('type')!r}; send other schemas as SGLang's json_schema")
    try:
        text = json.dumps(schema, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise IlsiRequestError("grammar", f"schema is not JSON-serialisable: {exc}") from None
    size = len(text.encode("utf-8"))
    if size > MAX_SCHEMA_BYTES:
        raise IlsiRequestError(
            "grammar", f"schema is too large ({size} bytes as JSON; at most {MAX_SCHEMA_BYTES})")
    _check_schema_features(schema, backend)
    return text


def _check_schema_features(schema: dict, backend: str) -> None:
    """SGLang's own check for keywords a backend would silently ignore, when present."""
    try:
        from sglang.srt.constrained import json_schema_validation as v
    except ImportError:  # pragma: no cover - an SGLang without the validator
        return
    check = {"xgrammar": "validate_xgrammar_json_schema",
             "outlines": "validate_outlines_json_schema"}.get(backend)
    if check is None or not hasattr(v, check):
        return
    try:
        getattr(v, check)(schema)
    except ValueError as exc:
        raise IlsiRequestError(
            "grammar", f"schema not supported by the {backend!r} grammar backend: {exc}") from None


def sampling_params_for(name: str, backend: str, schema: dict | None = None) -> dict[str, str]:
    """The SGLang sampling-params entry for grammar ``name`` on grammar backend
    ``backend`` (the server's ``--grammar-backend``), e.g. ``{"ebnf": text}``.

    ``schema`` (``json-object`` only) is a JSON Schema for the object (a dict, or
    its JSON text; ``"type": "object"``; at most ``MAX_SCHEMA_BYTES`` as JSON); without
    it any JSON object is allowed. Problems raise ``IlsiRequestError("grammar", ...)``.
    """
    g = get(name)
    _check_backend(g, backend)
    if schema is not None:
        if not g.takes_schema:
            raise IlsiRequestError(
                "grammar", f"grammar {name!r} takes no schema (only {list(SCHEMA_GRAMMARS)} do)")
        return {"json_schema": _schema_text(schema, backend)}
    return {SAMPLING_KEYS[g.kind]: g.text}


# -- generated identifier rules --------------------------------------------------------

# Python 3.10-3.13 hard keywords (keyword.kwlist; the tests check it is covered).
PYTHON_KEYWORDS = (
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class",
    "continue", "def", "del", "elif", "else", "except", "finally", "for", "from", "global",
    "if", "import", "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return",
    "try", "while", "with", "yield",
)
# Words the sql-select grammar never takes as identifiers (any letter case): its own
# keywords, common SQL reserved words, and every sqlglot keyword that sqlglot refuses
# as a bare column or table name (the tests re-check this against sqlglot).
SQL_KEYWORDS = (
    "all", "alter", "and", "any", "as", "asc", "between", "by", "case", "cast", "create",
    "cross", "delete", "desc", "describe", "distinct", "drop", "else", "end", "except",
    "exists", "false", "fetch", "for", "from", "full", "glob", "grant", "group", "having",
    "if", "ilike", "in", "inner", "insert", "intersect", "interval", "into", "is", "join",
    "lateral", "left", "like", "limit", "natural", "not", "notnull", "null", "offset", "on",
    "or", "order", "outer", "partitioned_by", "qualify", "regexp", "returning", "revoke",
    "right", "rlike", "rollback", "select", "set", "some", "straight_join", "table",
    "tablesample", "then", "true", "uncache", "union", "update", "using", "values", "when",
    "where", "with", "xor",
)
_ID_START = {chr(c) for c in range(ord("a"), ord("z") + 1)} | {
    chr(c) for c in range(ord("A"), ord("Z") + 1)} | {"_"}
_ID_CHARS = _ID_START | {str(d) for d in range(10)}
GENERATED = {
    # grammar name -> keyword-free identifier rule options
    "python-expression": {"rule": "name", "keywords": PYTHON_KEYWORDS,
                          "case_insensitive": False, "no_dunder": True},
    "sql-select": {"rule": "ident", "keywords": SQL_KEYWORDS,
                   "case_insensitive": True, "no_dunder": False},
}
BEGIN_MARK = "# BEGIN GENERATED identifier rules (python -m sglang_ilsi.grammars --regenerate)"
END_MARK = "# END GENERATED identifier rules"


def _char_class(chars: set[str]) -> str:
    """A compact EBNF character class for ASCII ``chars``."""
    codes = sorted(ord(c) for c in chars)
    parts, i = [], 0
    while i < len(codes):
        j = i
        while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1:
            j += 1
        lo, hi = chr(codes[i]), chr(codes[j])
        parts.append(lo if i == j else f"{lo}{hi}" if j == i + 1 else f"{lo}-{hi}")
        i = j + 1
    return "[" + "".join(parts) + "]"


def identifier_rules(rule: str, keywords: tuple[str, ...] | list[str], *,
                     case_insensitive: bool = False, no_dunder: bool = False) -> str:
    """EBNF rules: ``rule`` matches an ASCII identifier ``[A-Za-z_][A-Za-z0-9_]*``
    that is none of ``keywords`` (compared ignoring case if ``case_insensitive``),
    and with ``no_dunder`` does not start with two underscores.

    Built from the keyword trie: at each trie node the identifier may end (if
    the prefix is not a keyword), leave the trie with any other character, or
    follow a child.
    """
    kws = {k.lower() if case_insensitive else k for k in keywords}
    prefixes = sorted({k[:i] for k in kws for i in range(len(k) + 1)}, key=lambda p: (len(p), p))
    tail = f"{rule}__rest"

    def variants(c: str) -> set[str]:
        return {c.lower(), c.upper()} if case_insensitive else {c}

    def lit(c: str) -> str:
        return _char_class(variants(c)) if len(variants(c)) > 1 else f'"{c}"'

    def rname(p: str) -> str:
        return f"{rule}_{p}" if p else rule

    lines = []
    for p in prefixes:
        children = sorted({k[len(p)] for k in kws if len(k) > len(p) and k.startswith(p)})
        taken = set().union(*(variants(c) for c in children)) if children else set()
        alts = []
        if p and p not in kws:
            alts.append('""')
        pool = (_ID_START if not p else _ID_CHARS) - taken
        if not p and no_dunder:
            pool = pool - {"_"}
            alts.append(f'"_" ({_char_class(_ID_CHARS - {"_"})} {tail})?')
        if pool:
            alts.append(f"{_char_class(pool)} {tail}")
        alts.extend(f"{lit(c)} {rname(p + c)}" for c in children)
        lines.append(f"{rname(p)} ::= " + " | ".join(alts))
    lines.append(f"{tail} ::= {_char_class(_ID_CHARS)}*")
    return "\n".join(lines) + "\n"


def generated_block(name: str) -> str:
    opts = dict(GENERATED[name])
    return f"{BEGIN_MARK}\n{identifier_rules(opts.pop('rule'), opts.pop('keywords'), **opts)}" \
           f"{END_MARK}\n"


def _replace_block(text: str, block: str) -> str:
    start = text.index(BEGIN_MARK)
    end = text.index(END_MARK, start) + len(END_MARK)
    if end < len(text) and text[end] == "\n":
        end += 1
    return text[:start] + block + text[end:]


def regenerate(directory: str | Path | None = None) -> list[Path]:
    """Rewrite the generated blocks of the grammar files; returns the files changed."""
    d = Path(directory) if directory is not None else find_grammar_dir()
    changed = []
    for name in GENERATED:
        path = d / f"{name}.ebnf"
        old = path.read_text(encoding="utf-8")
        new = _replace_block(old, generated_block(name))
        if new != old:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] == ["--regenerate"]:
        for p in regenerate():
            print(f"rewrote {p}")
    else:
        print("usage: python -m sglang_ilsi.grammars --regenerate", file=sys.stderr)
        sys.exit(2)
