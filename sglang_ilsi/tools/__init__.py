"""Server-side tools a request's generation may call (the ``tool`` capability).

A tool is a small class: a ``name``, a one-line ``description``, a JSON
Schema of its ``arguments`` (it becomes part of the grammar that constrains
the model's call, and of the OpenAI ``tools`` description), and ``run``.
Operators enable tools with ``--ilsi-tools calculator,python,retrieval``;
requests can only call enabled tools (``sglang_ilsi.engine.http.tool_loop``).

``run`` receives arguments that already match the schema (the grammar
guarantees the shape; :func:`check_arguments` re-checks it) and returns the
result text, or raises :class:`ToolError` whose message goes back to the
model as the call's error. Nothing a request sends is ever imported or
evaluated: the calculator parses, the Python runner runs code in the sandbox
(:mod:`.sandbox`), retrieval reads only the operator's folder.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

MAX_RESULT_CHARS = 2000


class ToolError(Exception):
    """A tool call failed; the message is reported and fed back to the model."""


class Tool:
    name: ClassVar[str]
    description: ClassVar[str]
    arguments: ClassVar[dict[str, Any]]  # JSON Schema of the arguments object
    blocking: ClassVar[bool] = False  # run in a worker thread (subprocess, disk)

    def __init__(self, options: dict[str, Any]):
        self.options = options

    def run(self, arguments: dict[str, Any]) -> str:
        raise NotImplementedError

    @classmethod
    def openai_spec(cls) -> dict[str, Any]:
        """The tool as an OpenAI ``tools`` entry."""
        return {"type": "function", "function": {
            "name": cls.name, "description": cls.description, "parameters": cls.arguments}}


def check_arguments(tool: type[Tool], arguments: Any) -> dict[str, Any]:
    """Re-check a call's arguments against the tool's (flat) schema."""
    schema = tool.arguments
    if not isinstance(arguments, dict):
        raise ToolError("arguments must be a JSON object")
    props = schema.get("properties", {})
    unknown = sorted(set(arguments) - set(props))
    if unknown:
        raise ToolError(f"unknown argument(s) {unknown}; expected {sorted(props)}")
    missing = [k for k in schema.get("required", []) if k not in arguments]
    if missing:
        raise ToolError(f"missing argument(s) {missing}")
    for key, value in arguments.items():
        spec = props[key]
        kind = spec.get("type")
        if kind == "string":
            if not isinstance(value, str):
                raise ToolError(f"{key} must be a string")
            if len(value) > spec.get("maxLength", 1 << 30):
                raise ToolError(f"{key} longer than {spec['maxLength']} characters")
        elif kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ToolError(f"{key} must be an integer")
            if not spec.get("minimum", value) <= value <= spec.get("maximum", value):
                raise ToolError(f"{key} must be between {spec['minimum']} and {spec['maximum']}")
    return arguments


class Calculator(Tool):
    name = "calculator"
    description = ("Evaluate an arithmetic expression (+ - * / // % **, parentheses, "
                   "sqrt, log, exp, sin, cos, tan, floor, ceil, abs, round, min, max, "
                   "factorial, pi, e).")
    arguments = {"type": "object", "properties": {"expression": {
        "type": "string", "maxLength": 256,
        "description": "the expression, e.g. (17 + 4) * 3"}},
        "required": ["expression"], "additionalProperties": False}

    def run(self, arguments: dict[str, Any]) -> str:
        from sglang_ilsi.tools.calculator import CalculatorError, evaluate, format_number

        try:
            return format_number(evaluate(arguments["expression"]))
        except CalculatorError as exc:
            raise ToolError(str(exc)) from None


class PythonRunner(Tool):
    name = "python"
    description = ("Run a short Python program (standard library only, no network, no "
                   "files outside a scratch folder, a few seconds of CPU) and return what "
                   "it printed.")
    # No maxLength in the schema: grammar backends then admit no escapes (no
    # newlines or quotes) in the string; the length is checked in run().
    arguments = {"type": "object", "properties": {"code": {
        "type": "string", "description": "the program; print the result"}},
        "required": ["code"], "additionalProperties": False}
    blocking = True
    max_code_chars = 8192

    def run(self, arguments: dict[str, Any]) -> str:
        if len(arguments["code"]) > self.max_code_chars:
            raise ToolError(f"code longer than {self.max_code_chars} characters")
        result = self.run_program(arguments["code"])
        if not result.ok:
            raise ToolError(result.error or "failed")
        return result.stdout

    def run_program(self, code: str, stdin: str | None = None) -> Any:
        """Run ``code`` in the sandbox under this tool's limits (a blocking call):
        the :class:`~sglang_ilsi.tools.sandbox.SandboxResult`."""
        from sglang_ilsi.tools.sandbox import Limits, run_python

        limits = Limits(cpu_seconds=int(self.options.get("python_cpu_seconds", 2)),
                        wall_seconds=float(self.options.get("python_wall_seconds", 5.0)))
        return run_python(code, limits, stdin=stdin)


class Retrieval(Tool):
    name = "retrieval"
    description = "Search the server's document folder; returns the best matching passages."
    arguments = {"type": "object", "properties": {
        "query": {"type": "string", "maxLength": 256, "description": "search words"},
        "k": {"type": "integer", "minimum": 1, "maximum": 5,
              "description": "how many passages (default 3)"}},
        "required": ["query"], "additionalProperties": False}
    blocking = True

    def __init__(self, options: dict[str, Any]):
        super().__init__(options)
        from sglang_ilsi.tools.retrieval import Retriever

        folder = options.get("retrieval_dir")
        if not folder:
            raise ToolError("the retrieval tool needs --ilsi-tool-retrieval-dir")
        self.retriever = Retriever(folder)

    def run(self, arguments: dict[str, Any]) -> str:
        try:
            hits = self.retriever.search(arguments["query"], int(arguments.get("k", 3)))
        except ValueError as exc:
            raise ToolError(str(exc)) from None
        if not hits:
            return "no matching passages"
        return "\n".join(f"[{p.source}] {p.text}" for p, _ in hits)


TOOLS: dict[str, type[Tool]] = {t.name: t for t in (Calculator, PythonRunner, Retrieval)}


def describe() -> list[dict[str, Any]]:
    return [{"name": t.name, "description": t.description, "arguments": t.arguments}
            for t in TOOLS.values()]


def call_schema(names: list[str]) -> str:
    """The JSON Schema (as JSON text) of one call ``{"name": ..., "arguments": {...}}``
    to one of the tools ``names``: the grammar the model's call is decoded with."""
    options = [{
        "type": "object",
        "properties": {"name": {"const": n}, "arguments": TOOLS[n].arguments},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    } for n in names]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return json.dumps(schema, separators=(",", ":"))


def call_grammar(names: list[str], backend: str) -> dict[str, str]:
    """SGLang sampling params constraining one call to the tools ``names``.

    On xgrammar the schema is compiled here to EBNF without free whitespace
    (SGLang compiles JSON schemas with any whitespace, in which a model can
    loop on spaces forever); other backends get the JSON schema (outlines
    allows at most one space between tokens)."""
    schema = call_schema(names)
    if backend == "xgrammar":
        try:
            import xgrammar
        except ImportError:
            return {"json_schema": schema}
        return {"ebnf": str(xgrammar.Grammar.from_json_schema(schema, any_whitespace=False))}
    return {"json_schema": schema}


def truncate(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"
