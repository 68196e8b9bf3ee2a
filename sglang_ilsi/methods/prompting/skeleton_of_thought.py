"""Skeleton-of-thought (Ning et al., ICLR 2024, "Skeleton-of-Thought: Prompting
LLMs for Efficient Parallel Generation").

Two stages instead of one long sequential answer:

1. **Skeleton.** One request asks for a short numbered outline of the answer
   (a few words per point); the reply is primed with ``"1."``.
2. **Point expansion.** Every point ``i`` of the parsed skeleton becomes its own
   prompt (question + whole skeleton + "write only point i, briefly"), primed
   with ``"i. <point>:"``. All ``K`` prompts go to the server **in one batched
   request** (one ``/generate`` call with a list of texts), so the server
   decodes them as one batch.

The answer is the points in order, ``"i. <point>: <expansion>"`` one per line.
With per-token decode cost roughly flat in the batch size on a memory-bound
engine, wall time goes from ``T(skeleton) + sum_i T(point_i)`` (sequential)
towards ``T(skeleton) + max_i T(point_i)``; tokens are not saved (each point
prompt repeats the question and skeleton, shared in the radix cache).

Parsing is defensive (:func:`parse_skeleton`): at most ``max_points`` points of
at most ``max_point_chars`` characters, numbering must increase (a restarted
list ends the skeleton), bullets are accepted. A reply without a usable list
(fewer than two points) degrades to a single point, the question itself, so
the method then costs one ordinary answer plus the failed skeleton.

This module is pure Python and talks to a server only through the two
callables :func:`run` receives; :func:`http_generate` builds the batched
``/generate`` one, and ``sglang_ilsi.lang.skeleton_of_thought`` wires both to an
SGLang frontend program. Registered as a method of kind ``program`` (it needs
nothing from the engine), so the catalog lists it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

from sglang_ilsi.declaration import Method
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register

Messages = list[dict[str, str]]
# generate(prompts, max_new_tokens, temperature, stop) -> one /generate result per prompt
Generate = Callable[[list[str], int, float, list[str]], list[dict[str, Any]]]
# render(messages) -> prompt text ending where the assistant reply begins
Render = Callable[[Messages], str]

SKELETON_INSTRUCTION = (
    "Do not answer the question yet. Write only a short outline of the answer: a numbered "
    "list (1., 2., 3., ...) of 3 to {max_points} points, each point only a few words, "
    "not full sentences.\n\nQuestion: {question}"
)
POINT_INSTRUCTION = (
    "Question: {question}\n\nOutline of the answer:\n{skeleton}\n\n"
    "Write point {index} only, in one or two short sentences. Do not write any other point."
)

_ITEM = re.compile(r"^\s*(?:\(?(\d{1,2})\s*[.):\]]|([-*\u2022]))\s*(.*\S)?\s*$")
_INLINE_NUMBER = re.compile(r"(?:^|\s)(\d{1,2})[.)]\s+")


def _clean(point: str, max_chars: int) -> str:
    point = point.replace("**", "").replace("__", "").strip(" \t-:;,")
    point = re.sub(r"\s+", " ", point)
    if len(point) > max_chars:
        cut = point[:max_chars]
        space = cut.rfind(" ")
        point = cut[:space] if space > max_chars // 2 else cut
    return point.rstrip(" .,;:")


def _split_inline(line: str) -> list[str]:
    """``"1. a 2. b 3. c"`` on one line -> ``["1. a", "2. b", "3. c"]``."""
    starts = [m.start(1) for m in _INLINE_NUMBER.finditer(line)]
    if len(starts) < 2:
        return [line]
    return [line[a:b].strip() for a, b in zip(starts, [*starts[1:], len(line)], strict=True)]


def parse_skeleton(text: str, max_points: int = 8, max_point_chars: int = 80) -> list[str]:
    """Points of a numbered (or bulleted) outline, in order, bounded and cleaned.

    Numbered items must increase; a number that does not (the model starting
    the list again, or drifting into a second list) ends the skeleton, as does
    prose after the list has started. Empty and duplicate points are dropped.
    Returns ``[]`` when no list item is found.
    """
    if max_points < 1 or max_point_chars < 1:
        raise ValueError("max_points and max_point_chars must be >= 1")
    points: list[str] = []
    last_number = 0
    started = False
    for raw in text.splitlines():
        for line in _split_inline(raw):
            if not line.strip():
                continue
            match = _ITEM.match(line)
            if match is None:
                if started:
                    return points
                continue
            number, _bullet, body = match.groups()
            if number is not None:
                if int(number) <= last_number:
                    return points
                last_number = int(number)
            started = True
            point = _clean(body or "", max_point_chars)
            if point and point.lower() not in (p.lower() for p in points):
                points.append(point)
                if len(points) == max_points:
                    return points
    return points


def trim_expansion(text: str) -> str:
    """One point's expansion on one line: stop where the model starts another
    numbered point (it was asked not to) and join the remaining lines."""
    kept: list[str] = []
    for line in text.strip().splitlines():
        if re.match(r"^\s*\(?\d{1,2}\s*[.)]\s", line):
            break
        if line.strip():
            kept.append(line.strip())
    return " ".join(kept)


@dataclass
class SkeletonResult:
    """Everything one skeleton-of-thought run produced and what it cost."""

    question: str
    skeleton_text: str
    points: list[str]
    expansions: list[str]
    answer: str
    fallback: bool
    calls: int  # HTTP generate calls made (2: skeleton + one batched expansion)
    cost: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tokens(results: Sequence[dict[str, Any]], key: str) -> int:
    return sum(int(r.get("meta_info", {}).get(key, 0)) for r in results)


def run(
    question: str,
    render: Render,
    generate: Generate,
    *,
    max_points: int = 6,
    max_point_chars: int = 80,
    skeleton_tokens: int = 96,
    point_tokens: int = 64,
    temperature: float = 0.0,
    stop: Sequence[str] = ("\n\n",),
) -> SkeletonResult:
    """Skeleton-of-thought for one question: one skeleton call, one batched
    expansion call (see the module docstring)."""
    skeleton_prompt = render([{"role": "user", "content": SKELETON_INSTRUCTION.format(
        max_points=max_points, question=question)}]) + "1."
    t0 = time.perf_counter()
    (sk,) = generate([skeleton_prompt], skeleton_tokens, temperature, list(stop))
    t1 = time.perf_counter()
    skeleton_text = "1." + sk["text"]
    points = parse_skeleton(skeleton_text, max_points, max_point_chars)
    fallback = len(points) < 2
    if fallback:
        points = [_clean(question, max_point_chars) or "Answer"]
        prompts = [render([{"role": "user", "content": question}])]
        prefixes = [""]
    else:
        outline = "\n".join(f"{i}. {p}" for i, p in enumerate(points, 1))
        prefixes = [f"{i}. {p}" for i, p in enumerate(points, 1)]
        prompts = [
            render([{"role": "user", "content": POINT_INSTRUCTION.format(
                question=question, skeleton=outline, index=i)}]) + prefix + ":"
            for i, prefix in enumerate(prefixes, 1)
        ]
    expanded = generate(prompts, point_tokens, temperature, [] if fallback else list(stop))
    t2 = time.perf_counter()
    if len(expanded) != len(prompts):
        raise RuntimeError(f"asked for {len(prompts)} expansions, got {len(expanded)}")
    if fallback:
        expansions = [r["text"].strip() for r in expanded]
        answer = expansions[0]
    else:
        expansions = [trim_expansion(r["text"]) for r in expanded]
        answer = "\n".join(f"{prefix}: {text}" if text else prefix
                           for prefix, text in zip(prefixes, expansions, strict=True))
    cost = {
        "skeleton": {"prompt_tokens": _tokens([sk], "prompt_tokens"),
                     "completion_tokens": _tokens([sk], "completion_tokens"),
                     "seconds": round(t1 - t0, 4)},
        "expansion": {"prompt_tokens": _tokens(expanded, "prompt_tokens"),
                      "completion_tokens": _tokens(expanded, "completion_tokens"),
                      "batch_size": len(prompts), "seconds": round(t2 - t1, 4),
                      "longest_point_tokens": max(
                          int(r.get("meta_info", {}).get("completion_tokens", 0)) for r in expanded)},
        "completion_tokens": _tokens([sk, *expanded], "completion_tokens"),
        "seconds": round(t2 - t0, 4),
    }
    return SkeletonResult(question, skeleton_text, points, expansions, answer.strip(),
                          fallback, calls=2, cost=cost)


def http_generate(base_url: str, headers: dict[str, str] | None = None,
                  timeout: float = 600) -> Generate:
    """A :data:`Generate` that sends all prompts in **one** ``/generate`` call."""

    def generate(prompts: list[str], max_new_tokens: int, temperature: float,
                 stop: list[str]) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"max_new_tokens": max_new_tokens, "temperature": temperature}
        if stop:
            params["stop"] = stop
        r = requests.post(base_url + "/generate", json={"text": prompts, "sampling_params": params},
                          headers=headers or {}, timeout=timeout)
        if r.status_code >= 400:
            raise ValueError(f"skeleton_of_thought: HTTP {r.status_code}: {r.text}")
        out = r.json()
        return out if isinstance(out, list) else [out]

    return generate


@register
class SkeletonOfThought(Method):
    """Skeleton-of-thought: a numbered outline, then every point expanded in one batch."""

    name = "skeleton_of_thought"
    family = "context-aware/prompting"
    paper = ("Ning et al. 2024, Skeleton-of-Thought: Prompting LLMs for Efficient Parallel "
             "Generation (ICLR), arXiv:2307.15337")
    # a frontend program: no engine need; its generations decode like any request
    composes_with = frozenset({"logits"})
    program = "sglang_ilsi.lang.skeleton_of_thought"
    params = (
        Param("max_points", "int", 6, "most points in the skeleton", minimum=2, maximum=16),
        Param("skeleton_tokens", "int", 96, "token budget of the skeleton", minimum=8,
              maximum=1024),
        Param("point_tokens", "int", 64, "token budget of each point's expansion", minimum=4,
              maximum=1024),
    )
