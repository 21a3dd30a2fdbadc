"""Text typed in a composer and not sent yet, kept across a reload of the tab (plain Python, no `js`).

A reload, or the browser restoring a discarded tab, must not lose what the user was writing. Each composer's text
goes to the tab's storage as it changes, under the signed-in user and the thread (`NEW` for the draft of a thread
not created yet), and comes back when that composer is built again; a message sent clears it. The page gives it
the tab's sessionStorage (dom.TabStorage): it lives as long as the tab, is not shared with other tabs, and
signing out empties it (`forget_all`).
"""

from __future__ import annotations

__all__ = ["Unsent", "forget_all", "NEW", "PREFIX"]

PREFIX = "pinchat.unsent."
NEW = "new"


class Unsent:
    """One user's unsent texts. `storage` has get(key) -> str | None, set(key, value), remove(key)."""

    def __init__(self, storage, user_id: int) -> None:
        self.storage = storage
        self.user_id = user_id

    def _key(self, thread) -> str:
        return f"{PREFIX}{self.user_id}.{thread}"

    def load(self, thread) -> str:
        return self.storage.get(self._key(thread)) or ""

    def save(self, thread, text: str) -> None:
        if text.strip():
            self.storage.set(self._key(thread), text)
        else:
            self.storage.remove(self._key(thread))

    def attach(self, listeners, box, thread) -> None:
        """Put `thread`'s unsent text into the empty composer `box` and keep the box's text as the user types
        (`listeners`: the panel's dom.Listeners)."""
        text = self.load(thread)
        if text and not str(box.value):
            box.value = text
        listeners.add(box, "input", lambda event: self.save(thread, str(box.value)))


def forget_all(storage) -> None:
    """Every user's unsent texts in this tab (at sign-out). `storage` also has keys() -> list[str]."""
    for key in list(storage.keys()):
        if key.startswith(PREFIX):
            storage.remove(key)
