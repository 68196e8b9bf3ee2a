"""Small programs that read an integer from standard input (PG-TD's setting).

Each item asks for a Python program that reads ``n`` with ``n = int(input())``
(the prompt says so: a model's own ``input("Enter n: ")`` would print its prompt)
and prints something of ``n``. Like APPS problems, an item has a *visible*
test (n = 3), which a method may run while it searches, and *hidden* tests
(n = 5 and n = 8), which decide correctness. Items: ``{"id", "prompt",
"answer": "", "task": "stdin_programs", "visible": [(stdin, stdout)],
"hidden": [(stdin, stdout), ...]}``. Nothing here runs code.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from sglang_ilsi_lab.data.synthetic import EVAL_SEED, Item

VISIBLE = (3,)
HIDDEN = (5, 8)


def _lines(values: list[object]) -> str:
    return "\n".join(str(v) for v in values)


# what the program prints, and its output for n
KINDS: tuple[tuple[str, Callable[[int], str]], ...] = (
    ("the numbers from 1 to n, one per line", lambda n: _lines(list(range(1, n + 1)))),
    ("the numbers from n down to 1, one per line", lambda n: _lines(list(range(n, 0, -1)))),
    ("the numbers from 0 to n - 1, one per line", lambda n: _lines(list(range(n)))),
    ("the sum of the numbers from 1 to n", lambda n: str(n * (n + 1) // 2)),
    ("the product of the numbers from 1 to n", lambda n: str(math.factorial(n))),
    ("n factorial", lambda n: str(math.factorial(n))),
    ("the squares of the numbers from 1 to n, one per line",
     lambda n: _lines([i * i for i in range(1, n + 1)])),
    ("the cubes of the numbers from 1 to n, one per line",
     lambda n: _lines([i ** 3 for i in range(1, n + 1)])),
    ("the even numbers from 2 to 2n, one per line",
     lambda n: _lines(list(range(2, 2 * n + 1, 2)))),
    ("the first n multiples of 3, one per line",
     lambda n: _lines([3 * i for i in range(1, n + 1)])),
    ("the word hello n times, one per line", lambda n: _lines(["hello"] * n)),
    ("n squared", lambda n: str(n * n)),
    ("n cubed", lambda n: str(n ** 3)),
    ("n doubled", lambda n: str(2 * n)),
    ("n plus 10", lambda n: str(n + 10)),
    ("2 to the power n", lambda n: str(2 ** n)),
    ("the sum of the squares of the numbers from 1 to n",
     lambda n: str(sum(i * i for i in range(1, n + 1)))),
    ("n in binary, without the 0b prefix", lambda n: format(n, "b")),
    ("a line of n stars (the character *)", lambda n: "*" * n),
    ("the n-th Fibonacci number, counting 1, 1, 2, 3, 5 from the first",
     lambda n: str(_fibonacci(n))),
)
ENDINGS = ("Reply with only the code.", "Answer with the code only, no explanation.")


def _fibonacci(n: int) -> int:
    a, b = 1, 1
    for _ in range(n - 1):
        a, b = b, a + b
    return a


def stdin_programs(n: int = len(KINDS) * len(ENDINGS), seed: int = EVAL_SEED) -> list[Item]:
    """``n`` items (every kind with every ending, shuffled by ``seed``; at most 40)."""
    pairs = [(k, e) for k in range(len(KINDS)) for e in range(len(ENDINGS))]
    if n > len(pairs):
        raise ValueError(f"only {len(pairs)} stdin-program items, asked {n}")
    random.Random(f"sglang-ilsi/stdin_programs/{seed}").shuffle(pairs)
    items = []
    for k, e in pairs[:n]:
        what, output = KINDS[k]
        items.append({
            "id": f"stdin-{k}-{e}", "task": "stdin_programs", "answer": "",
            "prompt": f"Write a Python program that reads an integer n with n = int(input()) "
                      f"and prints {what}. {ENDINGS[e]}",
            "visible": [(f"{v}\n", output(v)) for v in VISIBLE],
            "hidden": [(f"{h}\n", output(h)) for h in HIDDEN],
        })
    return items
