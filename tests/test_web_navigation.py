"""The URL hash the page reads and writes (web/py/navigation.py), under CPython."""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "web" / "py"))

import navigation  # noqa: E402


@pytest.mark.parametrize(("value", "expected"), [
    ("#t=3&p=5,6", {"t": 3, "p": [5, 6]}),
    ("t=3", {"t": 3}),
    ("#p=7", {"p": [7]}),
    ("", {}),
    ("#t=abc&p=5", {"p": [5]}),  # a malformed part is ignored, the rest still counts
    ("#t=3&p=5,x", {"t": 3}),
    ("#t=3&p=5,,6&other=1", {"t": 3, "p": [5, 6]}),
])
def test_parse_hash(value, expected):
    assert navigation.parse_hash(value) == expected


@pytest.mark.parametrize(("main_id", "pins"), [(3, [5, 6]), (3, []), (None, [])])
def test_format_hash_round_trips(main_id, pins):
    text = navigation.format_hash(main_id, pins)
    parsed = navigation.parse_hash(text)
    assert parsed.get("t") == main_id and parsed.get("p", []) == pins
    assert text == "" if main_id is None else text.startswith("#t=")


def test_pin_changes_keeps_what_is_shown_and_wanted():
    assert navigation.pin_changes([1, 2, 3], [2, 4]) == ([1, 3], [4])
    assert navigation.pin_changes([], [1]) == ([], [1])
    assert navigation.pin_changes([1], [1]) == ([], [])
