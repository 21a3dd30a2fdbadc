"""The generation lifecycle: one task per streaming thread owns the answer; HTTP responses subscribe to it.

Flows (see docs/streaming.md): a chat reserves its thread here, commits the user message and an empty
`streaming` answer, then a task streams from the provider, numbering every event so a subscriber can replay
from any point. The answer is flushed to SQLite every `flush_interval` seconds and saved, shielded, at the end
with status complete / interrupted / error. Stop paths: the last subscriber leaving (client gone), the cancel
endpoint, and shutdown all call `stop()`, which cancels the task; the provider stream is closed on every path.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import litellm
from litellm import Router

from . import events, provider
from .db import Database

log = logging.getLogger(__name__)
EVENT_ID = re.compile(r"([0-9]{1,18})\.([0-9]{1,18})")  # `<message id>.<n>`, as Generation.event_id writes it


# Opens a stream of deltas; leaving its block closes the upstream (see provider.chat_stream).
Source = Callable[[], AbstractAsyncContextManager[AsyncIterator[str | provider.Delta]]]


def chat_source(router: Router, messages: list[dict[str, str]]) -> Source:
    return functools.partial(provider.chat_stream, router, messages)


class ThreadBusy(Exception):
    """The thread already has a generation running."""


class Generation:
    """One answer being written: its task, its numbered events, its text; saved through `db`, and `on_end`
    is called once it is saved (with the final status)."""

    def __init__(self, thread_id: int, db: Database, flush_interval: float, saving: set[asyncio.Task[None]],
                 on_end: Callable[[Generation, str], None], detach_grace: float = 0.0) -> None:
        self.thread_id = thread_id
        self.db = db
        self.flush_interval = flush_interval
        self.detach_grace = detach_grace  # seconds it runs on with nobody following; < 0: to the end
        self.saving = saving  # final saves in flight, awaited on shutdown
        self.on_end = on_end
        self.started_by: str | None = None  # the credential that started it (auth.CREDENTIAL): its end stops it
        self.user_message_id: int | None = None
        self.message_id: int | None = None
        self.events: list[events.Event] = []  # event n has sequence number n + 1
        self.parts: list[str] = []
        self.done = False
        self.stop_reason: str | None = None
        self.task: asyncio.Task[None] | None = None
        self._subscribers = 0
        self._detached: asyncio.TimerHandle | None = None  # the grace timer while nobody follows
        self._wakeup = asyncio.Event()
        self._saved_len = 0

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def event_id(self, seq: int) -> str:
        """An event's id on the wire names its generation, so an id from an older answer is never applied here."""
        return f"{self.message_id}.{seq}"

    def resume_point(self, last_event_id: str | None) -> int:
        """The sequence number to follow after, from a Last-Event-ID (`<message id>.<n>`; another answer's id or
        none: from the start). Raises ValueError for an id that is not of that form."""
        if not last_event_id:
            return 0
        match = EVENT_ID.fullmatch(last_event_id)
        if match is None:  # int() alone would take "+1", "1_0" or "-1"
            raise ValueError(f"not an event id: {last_event_id!r}")
        if int(match[1]) != self.message_id:
            return 0
        return min(int(match[2]), len(self.events))

    def emit(self, event: events.Event) -> None:
        self.events.append(event)
        # Wakes the subscribers waiting now; the ones still busy writing find the event when they look again.
        self._wakeup.set()
        self._wakeup.clear()

    def stop(self, reason: str) -> None:
        """Cancel the generation (idempotent); the answer so far is saved as interrupted."""
        if self.stop_reason is None and not self.done and self.task is not None:
            self.stop_reason = reason
            self.task.cancel()

    @asynccontextmanager
    async def subscribe(self, after: int = 0) -> AsyncIterator[AsyncIterator[tuple[int, list[events.Event]]]]:
        """Follow the events from sequence number `after`. When the last subscriber leaves without a stop, the
        answer runs on for `detach_grace` seconds (a reattach cancels the timer), then stops."""
        self._subscribers += 1
        if self._detached is not None:
            self._detached.cancel()
            self._detached = None
        try:
            yield self._follow(after)
        finally:
            self._subscribers -= 1
            if self._subscribers == 0 and not self.done:
                if self.detach_grace == 0:
                    self.stop("client_gone")
                elif self.detach_grace > 0:
                    self._detached = asyncio.get_running_loop().call_later(self.detach_grace, self.stop,
                                                                           "client_gone")

    async def _follow(self, after: int) -> AsyncIterator[tuple[int, list[events.Event]]]:
        """Every event after `after`, as (sequence number of the first, the events available now): a reader that
        fell behind gets its backlog in one piece (sse.py may coalesce it)."""
        seq = after
        while True:
            if seq < len(self.events):
                batch = self.events[seq:]
                yield seq + 1, batch
                seq += len(batch)
                continue
            if self.done:
                return
            await self._wakeup.wait()

    async def begin(self, user_text: str | None, source: Source, kind: str = "chat",
                    merged_ids: list[int] | None = None) -> None:
        """Commit the turn (the user's message, if any, and the empty answer), then stream from `source`."""
        self.user_message_id, self.message_id = await self.db.begin_turn(self.thread_id, user_text, kind, merged_ids)
        self.emit(events.start(self.user_message_id, self.message_id, kind))
        self.task = asyncio.create_task(self._run(source), name=f"generation-{self.thread_id}")

    async def _run(self, source: Source) -> None:
        status, final, meta = "complete", {}, {}
        flusher = asyncio.create_task(self._flush_periodically())
        model = None
        try:
            finish_reason, usage = None, None
            async with source() as deltas:
                async for delta in deltas:
                    if delta.__class__ is not str:  # a str is only text (provider._deltas), the common case
                        finish_reason = delta.finish_reason or finish_reason
                        usage = delta.usage or usage
                        model = model or delta.model
                        delta = delta.text
                    if delta:
                        self.parts.append(delta)
                        self.emit(events.token(delta))
            meta.update(usage=usage, finish_reason=finish_reason)
            final = events.done(self.message_id, finish_reason, usage)
        except asyncio.CancelledError:
            status = "interrupted"
            final = events.interrupted(self.message_id, self.stop_reason or "shutdown")
        except Exception as exc:  # a provider failure, before or after the first token
            status = "error"
            code, message = describe_failure(exc)
            log.warning("generation for thread %s failed after %d chars: %s", self.thread_id, len(self.text), exc)
            meta["error"] = message
            final = events.error(self.message_id, code, message)
        finally:
            flusher.cancel()
            meta["model"] = model
        # The final save runs as its own task so that a second cancellation cannot cut it short;
        # the registry waits for it on shutdown.
        save = asyncio.create_task(self.db.save_answer(self.message_id, self.text, status, **meta))
        self.saving.add(save)
        save.add_done_callback(self.saving.discard)
        try:
            await asyncio.shield(save)
        finally:
            if self._detached is not None:
                self._detached.cancel()
            self.on_end(self, status)  # the thread is free before a subscriber can see the last event
            self.emit(final)
            self.done = True

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            if len(self.parts) != self._saved_len:
                self._saved_len = len(self.parts)
                await self.db.save_answer(self.message_id, self.text)


def describe_failure(exc: Exception) -> tuple[str, str]:
    """A stable code and a short message a user can act on (never a traceback)."""
    kinds = [
        (litellm.RateLimitError, "rate_limited", "The model provider is rate limiting requests; try again shortly."),
        (litellm.AuthenticationError, "provider_auth", "The model provider rejected the API key."),
        (litellm.ContextWindowExceededError, "context_too_long", "The conversation is too long for the model."),
        (litellm.Timeout, "provider_timeout", "The model provider timed out."),
        (litellm.APIConnectionError, "provider_unreachable", "The model provider could not be reached or dropped the stream."),
        (litellm.BadRequestError, "provider_rejected", "The model provider rejected the request."),
    ]
    for kind, code, message in kinds:
        if isinstance(exc, kind):
            return code, message
    return "provider_error", "The model provider failed while answering."


class Registry:
    """The running generations of this process, one per thread at most."""

    def __init__(self, db: Database, flush_interval: float, detach_grace: float = 0.0) -> None:
        self.db = db
        self.flush_interval = flush_interval
        self.detach_grace = detach_grace
        self.active: dict[int, Generation] = {}
        self.saving: set[asyncio.Task[None]] = set()
        self.on_complete: Callable[[int], None] | None = None  # called with the thread id after a saved answer

    def reserve(self, thread_id: int) -> Generation:
        if thread_id in self.active:
            raise ThreadBusy(thread_id)
        generation = Generation(thread_id, self.db, self.flush_interval, self.saving, self._ended, self.detach_grace)
        self.active[thread_id] = generation
        return generation

    def finished(self, generation: Generation) -> None:
        if self.active.get(generation.thread_id) is generation:
            del self.active[generation.thread_id]

    def _ended(self, generation: Generation, status: str) -> None:
        self.finished(generation)
        if status == "complete" and self.on_complete is not None:
            self.on_complete(generation.thread_id)

    def get(self, thread_id: int) -> Generation | None:
        return self.active.get(thread_id)

    async def stop_answers(self, stops: Callable[[tuple[int | None, bool] | None], bool]) -> None:
        """Stop (saved as interrupted) the answers whose thread `stops` picks, given the thread's (owner id, owner
        enabled), or None for a thread that no longer exists."""
        running = list(self.active.items())  # not those started while the owners are read
        owners = await self.db.thread_owners([thread_id for thread_id, _ in running])
        for thread_id, generation in running:
            if stops(owners.get(thread_id)):
                generation.stop("user_disabled")

    def stop_started_by(self, credentials: set[str]) -> None:
        """A session signed out, a token revoked: the answers they started stop (saved as interrupted)."""
        for generation in list(self.active.values()):
            if generation.started_by in credentials:
                generation.stop("signed_out")

    def rekey(self, old: str, new: str) -> None:
        for generation in self.active.values():
            if generation.started_by == old:
                generation.started_by = new

    def starters(self) -> set[str]:
        return {g.started_by for g in self.active.values() if g.started_by is not None}

    async def shutdown(self) -> None:
        """Stop every generation and wait until each answer is saved."""
        generations = list(self.active.values())
        for generation in generations:
            generation.stop("shutdown")
        tasks = [g.task for g in generations if g.task is not None]
        await asyncio.gather(*tasks, *self.saving, return_exceptions=True)
