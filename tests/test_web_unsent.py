"""The composers' unsent text (web/py/unsent.py) under CPython: per user and thread in the tab's storage, put back
into an empty composer only, cleared when empty, and all of it forgotten at sign-out."""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "web" / "py"))

from unsent import NEW, PREFIX, Unsent, forget_all  # noqa: E402


class Storage(dict):
    """sessionStorage's calls over a dict."""

    def set(self, key, value):
        self[key] = value

    def remove(self, key):
        self.pop(key, None)


class Box:
    def __init__(self, value=""):
        self.value = value


class Listeners:
    def __init__(self):
        self.added = []

    def add(self, target, event, handler):
        self.added.append((target, event, handler))

    def fire(self, event):
        for _, name, handler in self.added:
            if name == event:
                handler(object())


def test_text_is_kept_per_user_and_thread_and_comes_back_into_an_empty_box():
    storage = Storage(other="kept")
    alice, bob = Unsent(storage, 1), Unsent(storage, 2)
    box, listeners = Box(), Listeners()
    alice.attach(listeners, box, 7)
    box.value = "half a thought"
    listeners.fire("input")
    assert alice.load(7) == "half a thought"
    assert bob.load(7) == "" and alice.load(8) == "" and alice.load(NEW) == ""

    again = Box()
    alice.attach(Listeners(), again, 7)  # the panel built again after a reload
    assert again.value == "half a thought"
    typed = Box("typed meanwhile")
    alice.attach(Listeners(), typed, 7)  # never over text already in the box
    assert typed.value == "typed meanwhile"

    box.value = "  \n"
    listeners.fire("input")
    assert alice.load(7) == "" and not any(k.endswith(".7") for k in storage)  # blank: nothing stored

    alice.save(NEW, "a new idea")
    bob.save(3, "bob's")
    forget_all(storage)
    assert dict(storage) == {"other": "kept"}  # only ours, every user's
    assert not any(k.startswith(PREFIX) for k in storage)
