"""Answer extractors: turn a candidate's text into a short, comparable answer.

Self-consistency and early-stopping self-consistency vote over extracted
answers; the MBR rules can optionally compare extracted answers instead of full
texts. Every extractor maps ``text -> str | None`` (None: no answer found).

=============  ==================================================================
name           answer
=============  ==================================================================
last_number    the last number in the text, normalized: "1,000" -> "1000",
               "3.50" -> "3.5", "-0.0" -> "0", ".5" -> "0.5" (the default)
hash_marker    the first line after the last ``####`` (GSM8K style)
regex          the last match of a user pattern: its group ``answer`` if it has
               one, else group 1 if it has groups, else the whole match
json_field     field ``field`` (a key, or a dotted path) of the first JSON object
               in the text
boxed          the contents of the last ``\\boxed{...}`` (balanced braces)
full_text      the stripped text
=============  ==================================================================

All but ``full_text`` canonicalize an answer that is just a number (optionally
with ``$``, thousands commas, a trailing period or ``%``) like ``last_number``
does, so "#### $1,000." and "\\boxed{1000}" vote together.

User patterns are data, never code: they are compiled with Python's ``re`` (to
check them, at most 200 characters) and run by the ``regex`` package (the same
syntax, ``V0`` mode) under a timeout, so a catastrophically backtracking pattern
yields "no answer" instead of stalling the server. Texts are capped at
``MAX_TEXT_CHARS`` (the tail is kept, where answers usually are).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sglang_ilsi.params import IlsiRequestError, Param

EXTRACTORS = ("last_number", "hash_marker", "regex", "json_field", "boxed", "full_text")
DEFAULT_EXTRACTOR = "last_number"
MAX_PATTERN_LENGTH = 200
REGEX_TIMEOUT_S = 0.1
MAX_TEXT_CHARS = 100_000
MAX_JSON_ATTEMPTS = 64

Extractor = Callable[[str], "str | None"]


def extractor_params(default: str = DEFAULT_EXTRACTOR) -> tuple[Param, ...]:
    """The parameters a rule that extracts answers declares (``extractor``,
    ``pattern``, ``field``)."""
    return (
        Param("extractor", "str", default,
              "how to extract the answer from a candidate's text", choices=EXTRACTORS),
        Param("pattern", "str", "",
              "regex extractor: a Python regular expression (at most 200 characters); "
              "the answer is group 'answer', else group 1, else the whole last match",
              max_length=MAX_PATTERN_LENGTH),
        Param("field", "str", "answer",
              "json_field extractor: the key (or dotted path) to read", max_length=128),
    )


# -- numbers ------------------------------------------------------------------------

_NUMBER = re.compile(
    r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d)"  # 1,000  12  3.50  -4
    r"|(?<![\w.])-?\.\d+(?!\d)",  # .5
    re.ASCII,
)
_WHOLE_NUMBER = re.compile(r"[-+]?\$?\s*(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?%?", re.ASCII)


def normalize_number(s: str) -> str:
    """Canonical form of a decimal number string: no thousands commas, no sign on
    zero, no leading zeros, no trailing fractional zeros ("-01,000.50" -> "-1000.5")."""
    s = s.replace(",", "").strip()
    neg = s.startswith("-")
    s = s.lstrip("+-")
    whole, _, frac = s.partition(".")
    whole = str(int(whole)) if whole else "0"
    frac = frac.rstrip("0")
    out = f"{whole}.{frac}" if frac else whole
    if neg and out != "0":
        out = "-" + out
    return out


def canonical_answer(answer: str | None) -> str | None:
    """Strip an answer; if it is just a number (maybe with $, commas, a trailing
    period or %), normalize it. Empty -> None."""
    if answer is None:
        return None
    a = answer.strip()
    core = a[:-1].rstrip() if a.endswith(".") else a
    if core and any(ch.isdigit() for ch in core) and _WHOLE_NUMBER.fullmatch(core):
        digits = re.sub(r"[\s$+%]", "", core)
        return normalize_number(digits)
    return a or None


# -- the extractors -------------------------------------------------------------------


def _tail(text: str) -> str:
    return text[-MAX_TEXT_CHARS:] if len(text) > MAX_TEXT_CHARS else text


def last_number(text: str) -> str | None:
    last = None
    for m in _NUMBER.finditer(_tail(text)):
        last = m.group(0)
    return None if last is None else normalize_number(last)


def hash_marker(text: str) -> str | None:
    text = _tail(text)
    at = text.rfind("####")
    if at < 0:
        return None
    for line in text[at + 4:].splitlines():
        if line.strip():
            return canonical_answer(line)
    return None


def boxed(text: str) -> str | None:
    text = _tail(text)
    at = text.rfind("\\boxed{")
    if at < 0:
        return None
    start = at + len("\\boxed{")
    depth = 1
    for k in range(start, len(text)):
        ch = text[k]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return canonical_answer(text[start:k])
    return None  # unbalanced


def full_text(text: str) -> str | None:
    return text.strip() or None


def json_field(text: str, field: str) -> str | None:
    text = _tail(text)
    decoder = json.JSONDecoder()
    at = text.find("{")
    attempts = 0
    while at >= 0 and attempts < MAX_JSON_ATTEMPTS:
        attempts += 1
        try:
            obj, _ = decoder.raw_decode(text, at)
        except ValueError:
            at = text.find("{", at + 1)
            continue
        if isinstance(obj, dict):
            return _json_value(_lookup(obj, field))
        at = text.find("{", at + 1)
    return None


def _lookup(obj: dict, field: str) -> Any:
    if field in obj:
        return obj[field]
    cur: Any = obj
    for part in field.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return None
    return cur


def _json_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return canonical_answer(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return canonical_answer(repr(value)) if isinstance(value, float) else str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> Any:
    """Check a user pattern and compile it for timed matching. Raises
    :class:`IlsiRequestError` naming ``pattern``."""
    if not isinstance(pattern, str) or not pattern:
        raise IlsiRequestError("pattern", "a non-empty regular expression is required "
                               "with extractor 'regex'")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise IlsiRequestError("pattern", f"at most {MAX_PATTERN_LENGTH} characters allowed")
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError, ValueError) as e:
        raise IlsiRequestError("pattern", f"invalid regular expression: {e}") from None
    try:
        import regex as _regex
    except ImportError:  # pragma: no cover - regex is a dependency of sacrebleu/sglang
        return re.compile(pattern)
    try:
        return _regex.compile(pattern, flags=_regex.V0)
    except Exception as e:  # noqa: BLE001 - the few patterns re accepts and regex refuses
        raise IlsiRequestError("pattern", f"unsupported regular expression: {e}") from None


def regex_extract(text: str, compiled: Any) -> str | None:
    if compiled.groupindex.get("answer") is not None:
        group: int | str = "answer"
    else:
        group = 1 if compiled.groups >= 1 else 0
    last = None
    kwargs = {"timeout": REGEX_TIMEOUT_S} if not isinstance(compiled, re.Pattern) else {}
    try:
        for m in compiled.finditer(_tail(text), **kwargs):
            value = m.group(group)
            if value is not None:
                last = value
    except TimeoutError:
        return None
    return canonical_answer(last)


_SIMPLE: dict[str, Extractor] = {
    "last_number": last_number,
    "hash_marker": hash_marker,
    "boxed": boxed,
    "full_text": full_text,
}


def make_extractor(name: str, pattern: str = "", field: str = "answer") -> Extractor:
    """The extractor ``name`` (configured with ``pattern``/``field`` where it takes
    them). Unknown names and bad patterns raise :class:`IlsiRequestError`."""
    if name in _SIMPLE:
        return _SIMPLE[name]
    if name == "regex":
        compiled = compile_pattern(pattern)
        return lambda text: regex_extract(text, compiled)
    if name == "json_field":
        if not field:
            raise IlsiRequestError("field", "a non-empty key is required with extractor "
                                   "'json_field'")
        return lambda text: json_field(text, field)
    raise IlsiRequestError("extractor", f"unknown extractor {name!r}; known: {list(EXTRACTORS)}")


def extractor_from_params(params: Mapping[str, Any]) -> Extractor:
    return make_extractor(params.get("extractor", DEFAULT_EXTRACTOR),
                          params.get("pattern", ""), params.get("field", "answer"))


def extract_answers(texts: Sequence[str], params: Mapping[str, Any]) -> list[str | None]:
    """Apply the extractor named by ``params`` to every text."""
    fn = extractor_from_params(params)
    return [fn(t) for t in texts]
