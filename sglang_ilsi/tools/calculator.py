"""Safe arithmetic: the expression is parsed with :mod:`ast` and walked; nothing is
ever passed to ``eval``/``exec``.

Allowed: int and float literals, ``+ - * / // % **``, unary ``+ -``,
parentheses, the names ``pi``, ``e``, ``tau``, and calls of ``abs``, ``round``,
``min``, ``max``, ``sqrt``, ``exp``, ``log`` (1 or 2 arguments), ``log10``,
``log2``, ``sin``, ``cos``, ``tan``, ``asin``, ``acos``, ``atan``, ``floor``,
``ceil``, ``factorial``. Anything else (attribute access, subscripts, strings,
other names, keyword arguments, comparisons, lambdas, ...) is refused.

Bounds keep every evaluation small: at most ``MAX_CHARS`` characters and
``MAX_NODES`` syntax nodes; an integer result (or intermediate) of at most
``MAX_INT_BITS`` bits, checked *before* a power or product is computed;
``factorial`` up to 1000; floats must stay finite.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

MAX_CHARS = 512
MAX_NODES = 256
MAX_INT_BITS = 4096
MAX_FACTORIAL = 1000


class CalculatorError(ValueError):
    """The expression is refused or cannot be evaluated; the message says why."""


Number = int | float

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _factorial(x: Number) -> int:
    if isinstance(x, float):
        if not x.is_integer():
            raise CalculatorError("factorial needs an integer")
        x = int(x)
    if not 0 <= x <= MAX_FACTORIAL:
        raise CalculatorError(f"factorial argument must be between 0 and {MAX_FACTORIAL}")
    return math.factorial(x)


def _log(x: Number, base: Number | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int]] = {
    # name: (function, min args, max args)
    "abs": (abs, 1, 1), "round": (round, 1, 2), "min": (min, 1, 16), "max": (max, 1, 16),
    "sqrt": (math.sqrt, 1, 1), "exp": (math.exp, 1, 1), "log": (_log, 1, 2),
    "log10": (math.log10, 1, 1), "log2": (math.log2, 1, 1), "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1), "tan": (math.tan, 1, 1), "asin": (math.asin, 1, 1),
    "acos": (math.acos, 1, 1), "atan": (math.atan, 1, 1), "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1), "factorial": (_factorial, 1, 1),
}


def _check_int(value: Number) -> Number:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise CalculatorError(f"integer result larger than {MAX_INT_BITS} bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("result is not a finite number")
    return value


def _power(base: Number, exp: Number) -> Number:
    if isinstance(base, int) and isinstance(exp, int) and exp > 0 and abs(base) > 1:
        if base.bit_length() * exp > MAX_INT_BITS + 64:
            raise CalculatorError(f"power too large (more than {MAX_INT_BITS} bits)")
    if isinstance(exp, int) and abs(exp) > 100_000:
        raise CalculatorError("exponent too large")
    result = base ** exp
    if isinstance(result, complex):
        raise CalculatorError("result is a complex number")
    return result


def _multiply(a: Number, b: Number) -> Number:
    if isinstance(a, int) and isinstance(b, int) and a.bit_length() + b.bit_length() > MAX_INT_BITS + 1:
        raise CalculatorError(f"product too large (more than {MAX_INT_BITS} bits)")
    return a * b


BINARY: dict[type, Callable[[Number, Number], Number]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: _multiply, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: _power,
}
UNARY: dict[type, Callable[[Number], Number]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise CalculatorError(f"unsupported literal {node.value!r}")
        return _check_int(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        left, right = _eval(node.left), _eval(node.right)
        return _check_int(BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name):
        if node.id not in CONSTANTS:
            raise CalculatorError(f"unknown name {node.id!r}; known: {sorted(CONSTANTS)}")
        return CONSTANTS[node.id]
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise CalculatorError(f"unsupported syntax: call of {type(node.func).__name__}")
        if node.func.id not in FUNCTIONS:
            raise CalculatorError(f"unknown function {node.func.id!r}; known: {sorted(FUNCTIONS)}")
        if node.keywords:
            raise CalculatorError("keyword arguments are not supported")
        fn, lo, hi = FUNCTIONS[node.func.id]
        if not lo <= len(node.args) <= hi:
            raise CalculatorError(f"{node.func.id} takes {lo}..{hi} arguments")
        args = [_eval(a) for a in node.args]
        return _check_int(fn(*args))
    raise CalculatorError(f"unsupported syntax: {type(node).__name__}")


def evaluate(expression: Any) -> Number:
    """The value of ``expression``; raises :class:`CalculatorError` with the reason."""
    if not isinstance(expression, str):
        raise CalculatorError(f"expected an expression string, got {type(expression).__name__}")
    if len(expression) > MAX_CHARS:
        raise CalculatorError(f"expression longer than {MAX_CHARS} characters")
    if not expression.strip():
        raise CalculatorError("empty expression")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise CalculatorError(f"not an arithmetic expression: {exc.__class__.__name__}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalculatorError(f"expression has more than {MAX_NODES} syntax nodes")
    try:
        return _eval(tree)
    except CalculatorError:
        raise
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except (OverflowError, ValueError, TypeError, RecursionError) as exc:
        raise CalculatorError(f"{exc.__class__.__name__}: {exc}") from None


def format_number(value: Number) -> str:
    """Integers exactly; floats with up to 12 significant digits."""
    if isinstance(value, float):
        return f"{value:.12g}"
    return str(value)
