"""Reconnecting the page's answer streams (streams.py): the pause between tries, what is worth a retry, the live
parts of one stream (`Link`) and the browser's network state (`Network`). Plain Python, so it runs under CPython.

* A stream that breaks after its first event id is followed again from that id after `backoff(tries)` (`BACKOFF_S`,
  the last one repeats). While the browser says it is online, at most `MAX_RETRIES` tries in a row without an event
  (~24 s: within the server's default 30 s detach grace); while it says it is offline the tries never run out:
  each waits out its backoff or the `online` event, whichever comes first, and a reconnect after the grace gets a
  204 and the answer as the server saved it.
* `Network` is the state of the window's `online` / `offline` events (api.Transport.on_network_change). Offline:
  streams.py drops every link (`Link.drop`: its request is aborted but the link is not halted, so the failed read
  is followed again, and no cancel is sent: the server keeps generating within its detach grace). Online: every
  link is woken (`Link.wake`): a backoff pause ends at once and its count of tries starts again.
* Event ids (`<message id>.<n>`): `generation()` names the answer, `replayed()` tells an event already applied.
  `saved_answer()` reads an answer as the server saved it (after Stop, or a 204 on a reconnect).
"""

from __future__ import annotations

import asyncio

from contract import ApiError
from store import Message

__all__ = ["BACKOFF_S", "MAX_RETRIES", "Link", "Network", "backoff", "generation", "replayed", "retryable",
           "saved_answer"]

BACKOFF_S = (0.5, 1.0, 2.0, 4.0)  # the pause before reconnect try n (the last one repeats)
MAX_RETRIES = 8  # tries in a row without an event while online (~24 s in all: within the server's 30 s grace)
SAVED_POLL_S, SAVED_POLL_TRIES = 0.1, 30  # after Stop or a 204, how long to wait for the server's saved answer


def backoff(tries: int) -> float:
    return BACKOFF_S[max(1, min(tries, len(BACKOFF_S))) - 1]


def retryable(error) -> bool:
    """The network broke (0) or a proxy / the server could not answer now (502, 503, 504): worth a reconnect."""
    return error.status == 0 or error.status in (502, 503, 504)


class Link:
    """The live parts of one stream: the thread it runs on (what Stop cancels), its current request, its task,
    whether it has ended, and its reconnect tries."""

    def __init__(self, thread_id: int, request) -> None:
        self.thread_id = thread_id
        self.request = request
        self.task: asyncio.Task | None = None
        self.router = None  # streams._Router: what it applied (its last event id says whether it can be followed)
        self.ended = asyncio.Event()
        self.halted = False  # aborted by this page (Stop, page hide): never reconnected
        self.stopping = False  # Stop pressed: `Streams._stop` ends the answer with the server's saved text
        self.tries = 0  # reconnect tries in a row without an event
        self._wake = asyncio.Event()  # ends a reconnect pause at once: set by abort() (for good) and wake()

    def abort(self) -> None:
        """This page ends the stream (Stop, page hide): abort the request, never reconnect."""
        self.halted = True
        self._wake.set()
        if not self.request.aborted:
            self.request.abort()

    def drop(self) -> None:
        """The network went: abort the request only; its read fails and the stream is followed again."""
        if not self.request.aborted:
            self.request.abort()

    def wake(self) -> None:
        """The network is back: the next try now, with a fresh count of tries."""
        self.tries = 0
        self._wake.set()

    def may_retry(self, online: bool) -> bool:
        return not online or self.tries < MAX_RETRIES

    async def pause(self) -> None:
        """Wait before the next try: its backoff, or until woken."""
        self.tries += 1
        try:
            await asyncio.wait_for(self._wake.wait(), backoff(self.tries))
        except asyncio.TimeoutError:
            pass
        if not self.halted:
            self._wake.clear()


class Network:
    """The browser's network state as the page last heard it."""

    def __init__(self, online: bool = True) -> None:
        self._online = asyncio.Event()
        if online:
            self._online.set()

    @property
    def online(self) -> bool:
        return self._online.is_set()

    def set(self, online: bool) -> None:
        if online:
            self._online.set()
        else:
            self._online.clear()

    async def wait_online(self, seconds: float) -> bool:
        """True once the network is back (at once if it is), False after `seconds` without it."""
        try:
            await asyncio.wait_for(self._online.wait(), seconds)
        except asyncio.TimeoutError:
            return False
        return True


def generation(event_id: str | None) -> int | None:
    """The message id an event id (`<message id>.<n>`) names."""
    head, _, _ = str(event_id or "").partition(".")
    return int(head) if head.isdigit() else None


def replayed(event_id: str, last_id: str | None) -> bool:
    """`event_id` is at or before `last_id` (the same answer, not a later event): a replay, already applied."""
    head, _, seq = event_id.partition(".")
    last_head, _, last_seq = (last_id or "").partition(".")
    return head == last_head and seq.isdigit() and last_seq.isdigit() and int(seq) <= int(last_seq)


async def saved_answer(transport, thread_id: int, message_id: int | None) -> Message | None:
    """The answer as the server saved it (no longer streaming), or None if it cannot be had: after Stop, or a 204
    on a reconnect (the answer ended meanwhile)."""
    if message_id is None:
        return None
    for _ in range(SAVED_POLL_TRIES):
        try:
            detail = await transport.get_thread(thread_id)
        except ApiError:
            return None
        saved = next((m for m in detail.get("messages") or [] if m.get("id") == message_id), None)
        if saved is None:
            return None
        if saved.get("status") != "streaming":
            return Message.from_api(saved)
        await asyncio.sleep(SAVED_POLL_S)
    return None
