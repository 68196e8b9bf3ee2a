"""Small programs that read an integer from standard input (PG-TD's setting).

Each item asks for a Python program that reads ``n`` with ``n = int(input())``
(the prompt says so: a model's own ``input("Enter n: ")`` would print its prompt)
and prints something of ``n``. Like APPS problems, an item has a *visible*
test (n = 3), which a method may run while it searches, and *hidden* tests
(n = 5 and n = 8), which decide correctness. Items: ``{"id", "prompt",
"answer": "", "task": "stdin_programs", "visible": [(stdin, stdout)],
"hidden": [(stdin, stdout), ...]}``. Two splits with no kind of program in
common: ``validation`` (where settings are chosen) and ``test``. Nothing here
runs code.
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


# what the program prints, and its output for n: the validation split's kinds
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
# held-out kinds: the evaluated split (the first KINDS are the validation split)
TEST_KINDS: tuple[tuple[str, Callable[[int], str]], ...] = (
    ("the numbers from 1 to n on one line, separated by spaces",
     lambda n: " ".join(str(i) for i in range(1, n + 1))),
    ("the sum of the even numbers from 1 to n", lambda n: str(sum(range(2, n + 1, 2)))),
    ("the numbers from 1 to 2n, one per line", lambda n: _lines(list(range(1, 2 * n + 1)))),
    ("the odd numbers from 1 to 2n - 1, one per line",
     lambda n: _lines(list(range(1, 2 * n, 2)))),
    ("the numbers from n to 2n, one per line", lambda n: _lines(list(range(n, 2 * n + 1)))),
    ("the sum of the numbers from 1 to 2n", lambda n: str(n * (2 * n + 1))),
    ("the sum of the cubes of the numbers from 1 to n",
     lambda n: str(sum(i ** 3 for i in range(1, n + 1)))),
    ("n times 5", lambda n: str(5 * n)),
    ("n minus 1", lambda n: str(n - 1)),
    ("n squared plus 1", lambda n: str(n * n + 1)),
    ("3 to the power n", lambda n: str(3 ** n)),
    ("n divided by 2, rounded down", lambda n: str(n // 2)),
    ("the remainder of n divided by 3", lambda n: str(n % 3)),
    ("the number of 1 bits in the binary form of n", lambda n: str(bin(n).count("1"))),
    ("a line of n dashes (the character -)", lambda n: "-" * n),
    ("the word yes n times, one per line", lambda n: _lines(["yes"] * n)),
    ("the numbers from 1 to n and their squares, one pair per line, separated by a space",
     lambda n: _lines([f"{i} {i * i}" for i in range(1, n + 1)])),
    ("the digit string of n repeated n times on one line", lambda n: str(n) * n),
    ("n, 2n, 3n, 4n and 5n, one per line", lambda n: _lines([n * i for i in range(1, 6)])),
    ("the squares of the numbers from n down to 1, one per line",
     lambda n: _lines([i * i for i in range(n, 0, -1)])),
)
SPLITS = {"validation": KINDS, "test": TEST_KINDS}
ENDINGS = ("Reply with only the code.", "Answer with the code only, no explanation.")


def _fibonacci(n: int) -> int:
    a, b = 1, 1
    for _ in range(n - 1):
        a, b = b, a + b
    return a


def stdin_programs(n: int = 40, seed: int = EVAL_SEED, split: str = "test") -> list[Item]:
    """``n`` items of ``split`` (every kind of the split with every ending, shuffled by
    ``seed``; at most 40). The two splits share no kind of program: choices about a
    method (e.g. its budget) are made on ``validation``."""
    kinds = SPLITS[split]
    pairs = [(k, e) for k in range(len(kinds)) for e in range(len(ENDINGS))]
    if n > len(pairs):
        raise ValueError(f"only {len(pairs)} stdin-program items, asked {n}")
    random.Random(f"sglang-ilsi/stdin_programs/{split}/{seed}").shuffle(pairs)
    items = []
    for k, e in pairs[:n]:
        what, output = kinds[k]
        items.append({
            "id": f"stdin-{split}-{k}-{e}", "task": "stdin_programs", "answer": "",
            "prompt": f"Write a Python program that reads an integer n with n = int(input()) "
                      f"and prints {what}. {ENDINGS[e]}",
            "visible": [(f"{v}\n", output(v)) for v in VISIBLE],
            "hidden": [(f"{h}\n", output(h)) for h in HIDDEN],
        })
    return items
