"""Unit tests for skeleton-of-thought: the outline parser and the two-call run."""

from __future__ import annotations

import pytest

from sglang_ilsi.methods.prompting import skeleton_of_thought as skeleton
from sglang_ilsi.methods.prompting.skeleton_of_thought import parse_skeleton, trim_expansion


def test_numbered_list():
    text = "1. Warm up first\n2) Stretch **well**\n3: Cool down.\n"
    assert parse_skeleton(text) == ["Warm up first", "Stretch well", "Cool down"]


def test_bullets_and_prose_around():
    text = "Here is the outline:\n- Pick a kettle\n* Boil water\n\u2022 Steep tea\nEnjoy it all day."
    assert parse_skeleton(text) == ["Pick a kettle", "Boil water", "Steep tea"]


def test_restarted_numbering_ends_the_skeleton():
    text = "1. A\n2. B\n\nThe answer is: 1. A\n2. B\n3. C"
    assert parse_skeleton(text) == ["A", "B"]


def test_inline_list_on_one_line():
    assert parse_skeleton("1. red 2. green 3. blue") == ["red", "green", "blue"]


def test_bounds_on_points_and_length():
    text = "\n".join(f"{i}. point number {i} " + "word " * 30 for i in range(1, 20))
    points = parse_skeleton(text, max_points=4, max_point_chars=40)
    assert len(points) == 4
    assert all(len(p) <= 40 for p in points)
    assert points[0].startswith("point number 1")


def test_duplicates_and_empty_items_dropped():
    assert parse_skeleton("1. Yes\n2. yes\n3.\n4. No") == ["Yes", "No"]


def test_no_list_gives_nothing():
    assert parse_skeleton("I would simply say that it depends.") == []
    assert parse_skeleton("") == []
    with pytest.raises(ValueError):
        parse_skeleton("1. a", max_points=0)


def test_trim_expansion_stops_at_the_next_point():
    assert trim_expansion(" It helps.\nA lot.\n2. Next point: more") == "It helps. A lot."


class FakeServer:
    """Records every generate call (one call = one HTTP /generate request)."""

    def __init__(self, skeleton_reply: str):
        self.skeleton_reply = skeleton_reply
        self.calls: list[list[str]] = []

    def __call__(self, prompts, max_new_tokens, temperature, stop):
        self.calls.append(list(prompts))
        if len(self.calls) == 1:
            return [{"text": self.skeleton_reply,
                     "meta_info": {"prompt_tokens": 10, "completion_tokens": 7}}]
        return [{"text": f" detail {i}\n", "meta_info": {"prompt_tokens": 20, "completion_tokens": 3}}
                for i in range(len(prompts))]


def render(messages):
    return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


def test_run_expands_every_point_in_one_call():
    server = FakeServer(" Alpha\n2. Beta\n3. Gamma")
    result = skeleton.run("Why?", render, server, max_points=5)
    assert len(server.calls) == 2 and len(server.calls[1]) == 3
    assert result.points == ["Alpha", "Beta", "Gamma"] and not result.fallback
    for i, prompt in enumerate(server.calls[1], 1):
        assert "1. Alpha\n2. Beta\n3. Gamma" in prompt
        assert prompt.endswith(f"{i}. {result.points[i - 1]}:")
    assert result.answer == "1. Alpha: detail 0\n2. Beta: detail 1\n3. Gamma: detail 2"
    assert result.cost["expansion"]["batch_size"] == 3
    assert result.cost["completion_tokens"] == 7 + 3 * 3
    assert result.cost["expansion"]["prompt_tokens"] == 60


def test_run_without_a_list_falls_back_to_one_plain_answer():
    server = FakeServer(" I think the answer is simply yes.")
    result = skeleton.run("Is it?", render, server)
    assert result.fallback and len(server.calls[1]) == 1
    assert server.calls[1][0] == "<user>Is it?<assistant>"
    assert result.answer == "detail 0" and result.points == ["Is it?"]
