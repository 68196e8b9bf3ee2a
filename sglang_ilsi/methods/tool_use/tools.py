"""The ``tools`` request-level method: its declaration and parameter checks.

Its need ``tool`` makes it kind ``tool_loop``: it runs around SGLang's generate
call (:mod:`sglang_ilsi.engine.http.tool_loop`), not in the logits stage::

    {"method": "tools", "tools": ["calculator"], "max_calls": 3,
     "tool_choice": "auto", "decoding": {"method": "typical", "mass": 0.9}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from sglang_ilsi.declaration import Method
from sglang_ilsi.params import IlsiRequestError, Param, validate_params
from sglang_ilsi.registry import register
from sglang_ilsi.tools import TOOLS

RESERVED = ("method", "trace", "decoding")
CHOICES = ("auto", "required", "none")


@register
class ToolUse(Method):
    """Tool-use loop: the model's grammar-constrained calls run on the server, results go back in."""

    name: ClassVar[str] = "tools"
    family: ClassVar[str] = "model-aided/tool-use"
    paper: ClassVar[str] = ("Schick et al. 2023, Toolformer: Language Models Can Teach "
                            "Themselves to Use Tools (NeurIPS), arXiv:2302.04761; Gao et al. "
                            "2023, PAL: Program-aided Language Models (ICML), arXiv:2211.10435")
    needs: ClassVar[frozenset[str]] = frozenset({"tool", "grammar"})
    # ``decoding``: a logits method for the text between calls
    composes_with: ClassVar[frozenset[str]] = frozenset({"logits"})
    decoded_by: ClassVar[str | None] = "decoding"
    params: ClassVar[tuple[Param, ...]] = (
        Param("tools", "str_list", [], "tools the model may call (default: every tool the "
              "server enables)", max_items=8, max_length=64),
        Param("max_calls", "int", 3, "most tool calls in this request (the server caps it "
              "with --ilsi-tool-max-calls)", minimum=0, maximum=64),
        Param("tool_choice", "str", "auto", "auto (the model decides), required (start with "
              "a call), none (no calls), or a tool name (start with a call to it)",
              max_length=64),
        Param("call_max_tokens", "int", 256, "most tokens of one call's JSON", minimum=16,
              maximum=2048),
    )

    @classmethod
    def validate(cls, raw: Mapping[str, Any], config: Any) -> dict[str, Any]:
        """Checked parameters against the request and the server's tools.
        Raises :class:`IlsiRequestError` naming the parameter."""
        params = validate_params(cls.params, {k: v for k, v in raw.items() if k not in RESERVED})
        if "max_calls" not in raw:  # the default, within the server's cap
            params["max_calls"] = min(params["max_calls"], config.tool_max_calls)
        enabled = list(config.tools)
        if not enabled:
            raise IlsiRequestError("method", "no tools are enabled on this server "
                                   "(the operator enables them with --ilsi-tools)")
        names = params["tools"] or enabled
        for i, name in enumerate(names):
            if name not in TOOLS:
                raise IlsiRequestError(f"tools[{i}]", f"unknown tool {name!r}; "
                                       f"enabled on this server: {enabled}")
            if name not in enabled:
                raise IlsiRequestError(f"tools[{i}]", f"tool {name!r} is not enabled on this "
                                       f"server; enabled: {enabled}")
        if len(set(names)) != len(names):
            raise IlsiRequestError("tools", "a tool is named twice")
        params["tools"] = list(names)
        if params["max_calls"] > config.tool_max_calls:
            raise IlsiRequestError("max_calls", f"must be <= {config.tool_max_calls} on this "
                                   f"server (--ilsi-tool-max-calls), got {params['max_calls']}")
        choice = params["tool_choice"]
        if choice not in CHOICES and choice not in names:
            raise IlsiRequestError("tool_choice", f"must be one of {list(CHOICES)} or one of "
                                   f"the request's tools {names}, got {choice!r}")
        if choice not in ("auto", "none") and params["max_calls"] < 1:
            raise IlsiRequestError("max_calls", f"tool_choice {choice!r} needs max_calls >= 1")
        return params
