"""The page's answer streams: the routing of stream events into the store, reconnection, and what Stop does. Plain
Python: it never touches the browser itself but talks to a `transport` (api.Transport in the page, a fake in
tests/test_web_streams.py), so it runs under CPython.

`Streams` owns the streams (chats keyed by thread id, merges keyed by a merge key, see contract.py), at most one
per thread:

* `start()` / `start_merge()` check that the thread is free and under the page's stream cap, show the question at
  once (`Store.begin_send` / `begin_merge`), then open the POST through the transport and feed its bytes to the SSE
  parser (sse.py); each event goes into the store: `start` -> `on_start`, tokens (all of one chunk at once) ->
  `append_tokens`, `done` / `interrupted` / `error` -> `finish`. A refusal before the answer started (409, 429,
  an unreachable server) -> `fail_before_start`; a 401 also calls `on_unauthenticated` (back to the sign-in form).
* `follow()` reattaches to an answer that is being written (a reload, a second tab, a thread opened from the list):
  the store shows the server's snapshot (`Store.begin_follow`) and the GET stream goes on after the snapshot's event
  (`stream_event_id`), through the same parser and router.
* Every event id (`<message id>.<n>`) the router applied is remembered: an event at or before it is skipped, so a
  replay never shows a token twice. A stream that breaks after its first id (network error, truncation, a 5xx of a
  proxy) is followed again from that id after a backoff (reconnect.py); the store says `reconnecting` meanwhile. A
  204 on a reconnect means the answer ended: its saved message gives the final text and status (after a server
  restart: interrupted). Without an id, or out of tries, a break ends the answer as an error (truncation:
  `stream_truncated`) and keeps its text.
* The browser goes offline (the window's `offline` event): every stream's request is aborted at once and shown as
  `reconnecting` (no cancel: the server goes on within its detach grace); the next try waits for the `online` event
  or its backoff, whichever comes first, and follows again from the last id.
* `stop()` asks the server to cancel (`transport.cancel`; offline, once the network is back) and aborts the
  request, waits for the stream to end, then shows exactly the text the server saved. `abort_all()` (page hide,
  sign-out) only aborts every request: the server keeps writing the answers for a while, and a reload follows them
  again. An abort always ends as a clean "interrupted" state, never as an error on screen.

The transport: `max_streams() -> int`; `open(url, body) -> request` (the POST) and `follow(thread_id, last_event_id)
-> request` (the GET stream), where `request.chunks()` is an async iterator of bytes (raising `contract.ApiError`:
the server's error before the body, or status 0 when the network failed), `request.status` (204: nothing to
follow), `request.abort()` and `request.aborted`; `async get_thread(thread_id) -> dict`; `async cancel(thread_id)`;
optionally `online() -> bool` and `on_network_change(callback)` (`callback(online)` on the window's events).
"""

from __future__ import annotations

import asyncio

import contract
from contract import ApiError
from reconnect import Link, Network, generation, replayed, retryable, saved_answer
from sse import Event, SSEParser
from store import Store

__all__ = ["Streams"]

CANCEL_WAIT_S = 30.0  # Stop while offline: how long the cancel waits for the network (the server's default grace)
TRUNCATED = {"code": "stream_truncated", "message": "The connection ended before the answer was complete."}


class _Decoder:
    """The parser's terminal predicate, which decodes each event's JSON once: the router takes the payloads the
    parser's last `feed` decoded, in order, instead of decoding them again."""

    def __init__(self) -> None:
        self.decoded: list[dict] = []

    def __call__(self, event: Event) -> bool:
        payload = contract.event_payload(event.data)
        self.decoded.append(payload)
        return payload.get("type") in contract.TERMINAL

    def take(self, events: list[Event]) -> list[dict]:
        decoded, self.decoded = self.decoded, []
        if len(decoded) != len(events):
            return [contract.event_payload(event.data) for event in events]
        return decoded


class Streams:
    """All answer streams of the page, at most one per thread, routed into `store`."""

    def __init__(self, store: Store, transport, on_end=None, on_unauthenticated=None) -> None:
        self.store = store
        self.transport = transport
        self.on_end = on_end  # called with (key, outcome) after a stream ended
        self.on_unauthenticated = on_unauthenticated  # called with the ApiError of a 401
        self.live: dict = {}
        self.tasks: set[asyncio.Task] = set()  # strong references to helper tasks (stop)
        self.max_streams = transport.max_streams()
        self.network = Network(transport.online() if hasattr(transport, "online") else True)
        if hasattr(transport, "on_network_change"):
            transport.on_network_change(self.network_changed)

    def is_live(self, key) -> bool:
        return key in self.live

    def busy_threads(self) -> set[int]:
        """The threads a stream of this page runs on (a merge runs on its main thread)."""
        return {stream.thread_id for stream in self.live.values()}

    def _can_start(self, key, thread_id: int) -> bool:
        state = self.store.thread(key)
        if key in self.live or state.streaming or thread_id in self.busy_threads():
            self.store.set_error(key, {"code": "thread_busy",
                                       "message": "This thread is still answering: stop it or wait."})
            return False
        if len(self.live) >= self.max_streams:
            self.store.set_error(key, {
                "code": "too_many_streams",
                "message": f"{self.max_streams} answers are already streaming; stop one first "
                           "(over HTTP/1.1 the browser allows only 6 connections to this server; "
                           "serve it over HTTP/2 through nginx for more)."})
            return False
        return True

    def start(self, thread_id: int, text: str) -> bool:
        """Send `text` to the thread and stream the answer into the store. False if it cannot start now."""
        if not self._can_start(thread_id, thread_id):
            return False
        self.store.begin_send(thread_id, text)
        self._launch(thread_id, thread_id, self.transport.open(f"/api/threads/{thread_id}/chat", {"message": text}))
        return True

    def start_merge(self, key, thread_id: int, threads: list[int], fmt: str, instruction: str | None) -> bool:
        """Stream a merged write-up of `threads` (saved by the server as a message of `thread_id`) into the
        store under `key`. Stopped with `stop(key)`, like a chat."""
        if not self._can_start(key, thread_id):
            return False
        body: dict = {"threads": list(threads), "format": fmt}
        if instruction:
            body["instruction"] = instruction
        self.store.begin_merge(key, threads)
        self._launch(key, thread_id, self.transport.open(f"/api/threads/{thread_id}/merge", body))
        return True

    def follow(self, key, thread_id: int, event_id: str) -> bool:
        """Reattach to the answer of `thread_id` that the server is writing: its message (named by `event_id`,
        the snapshot's `stream_event_id`) is in the store with the text up to that event; stream the rest. False
        when there is nothing to follow here (already streaming, message not shown, over the cap)."""
        message_id = generation(event_id)
        if key in self.live or thread_id in self.busy_threads() or len(self.live) >= self.max_streams:
            return False
        if message_id is None or self.store.begin_follow(key, message_id) is None:
            return False
        router = _Router(self.store, key, started=True, last_id=event_id)
        self._launch(key, thread_id, self.transport.follow(thread_id, event_id), router)
        return True

    def _launch(self, key, thread_id: int, request, router: _Router | None = None) -> None:
        stream = Link(thread_id, request)
        stream.router = router or _Router(self.store, key)
        self.live[key] = stream
        stream.task = asyncio.ensure_future(self._run(key, stream, stream.router))

    def network_changed(self, online: bool) -> None:
        """The window's `offline` / `online` event. Offline: abort every request now (a dead network may leave a
        fetch hanging), show it as reconnecting, cancel nothing. Online: every stream tries again at once."""
        self.network.set(online)
        for key, stream in list(self.live.items()):
            if stream.halted:
                continue
            if online:
                stream.wake()
                continue
            if stream.router.last_id is not None:  # followed again; without an id the break ends the answer
                self.store.set_reconnecting(key, True)
            stream.drop()

    def stop(self, key) -> None:
        """Stop button / Esc: cancel the answer on the server and abort the stream; then show the saved text."""
        stream = self.live.get(key)
        if stream is None:
            return
        stream.stopping = True
        self.store.set_stopping(key)
        self._spawn(self._stop(key, stream))

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def abort_all(self) -> None:
        """The page goes away: abort every open request now (the server keeps each answer for a reattach)."""
        for stream in list(self.live.values()):
            stream.abort()

    async def _stop(self, key, stream: Link) -> None:
        """The stopped stream's end (`on_end`, which reloads what the server saved) is told here, once the server
        has saved the answer, not when the aborted read ends before that."""
        outcome = None
        try:
            stream.abort()  # the fetch and the connection end now
            try:
                await self.transport.cancel(stream.thread_id)  # returns once the server saved the answer
            except ApiError as error:  # unreachable: once the network is back, else the grace timer stops it
                if error.status == 0 and not self.network.online and await self.network.wait_online(CANCEL_WAIT_S):
                    try:
                        await self.transport.cancel(stream.thread_id)
                    except ApiError:
                        pass
            await stream.ended.wait()
            answer = self.store.thread(key).streaming_message
            if answer is None:
                return  # the stream ended by itself meanwhile
            saved = await saved_answer(self.transport, stream.thread_id, answer.id)
            self.store.finish(key, "interrupted", text=saved.content if saved is not None else None)
            outcome = "interrupted"
        finally:
            if self.on_end is not None:
                self.on_end(key, outcome or stream.router.outcome)

    async def _ended_on_server(self, key, stream: Link, router: _Router) -> None:
        """A reconnect found nothing running (204): show the answer as the server saved it."""
        saved = await saved_answer(self.transport, stream.thread_id, router.message_id)
        if not self.store.thread(key).streaming:
            return
        if saved is None:
            router.outcome = "error"
            self.store.finish(key, "error", error=dict(TRUNCATED))
            return
        router.outcome = saved.status if saved.status in ("complete", "interrupted") else "error"
        self.store.finish(key, router.outcome, text=saved.content, usage=saved.usage,
                          error=(saved.error or {"code": "error", "message": "The answer failed."})
                          if router.outcome == "error" else None, finish_reason=saved.finish_reason)

    async def _run(self, key, stream: Link, router: _Router) -> None:
        """Stream one answer into the store under `key` (a thread id, or a merge key), reconnecting on breaks."""
        store = self.store
        try:
            while True:
                failure = await self._read(key, stream, router)
                if failure is None:
                    return
                if isinstance(failure, ApiError) and not retryable(failure):
                    router.refused(failure, self.on_unauthenticated)
                    return
                if stream.halted:
                    router.network_failed(None, stopped_here=True, stopping=stream.stopping)
                    return
                if router.progressed:
                    stream.tries, router.progressed = 0, False
                if router.last_id is None or not stream.may_retry(self.network.online):
                    router.broken(failure)
                    return
                store.set_reconnecting(key, True)
                await stream.pause()  # its backoff, or until the network is back
                if stream.halted:
                    router.network_failed(None, stopped_here=True, stopping=stream.stopping)
                    return
                stream.request = self.transport.follow(stream.thread_id, router.last_id)
                if stream.halted:  # aborted while the request was being made
                    stream.request.abort()
        except asyncio.CancelledError:
            stream.abort()  # cancelling the task alone would leave the request running
            if store.thread(key).streaming:
                store.finish(key, "interrupted")
            raise
        except Exception as exc:  # a bug of ours: say so in the thread, stop the network read
            stream.abort()
            router.outcome = "error"
            if store.thread(key).streaming:
                store.finish(key, "error", error={"code": "client_error", "message": repr(exc)})
        finally:
            if self.live.get(key) is stream:
                del self.live[key]
            stream.ended.set()
            if self.on_end is not None and not stream.stopping:  # else `_stop` tells it
                self.on_end(key, router.outcome)

    async def _read(self, key, stream: Link, router: _Router):
        """Read one request to its end. None: the answer is over (a terminal event, or a 204 handled); else what
        broke it: the ApiError, or TRUNCATED when the bytes ended without a terminal event."""
        decoder = _Decoder()
        parser = SSEParser(terminal=decoder)
        request = stream.request
        try:
            async for chunk in request.chunks():
                if self.store.thread(key).reconnecting:
                    self.store.set_reconnecting(key, False)
                events = parser.feed(chunk)
                router.route(decoder.take(events), [event.id for event in events])
        except ApiError as error:
            return error
        if getattr(request, "status", 200) == 204:
            await self._ended_on_server(key, stream, router)
            return None
        if parser.close() or not self.store.thread(key).streaming:
            return None
        return dict(TRUNCATED)


class _Router:
    """The events of one stream -> the store, under `key`; `outcome` is how it ended. `last_id` is the last event
    id applied: an event at or before it (a replay after a reconnect) is skipped."""

    def __init__(self, store: Store, key, *, started: bool = False, last_id: str | None = None) -> None:
        self.store = store
        self.key = key
        self.started = started
        self.outcome = "error"
        self.last_id = last_id
        self.message_id = generation(last_id)
        self.progressed = False  # an event was applied since the last reconnect

    def _fresh(self, event_id: str | None) -> bool:
        if not event_id:
            return True
        if replayed(event_id, self.last_id):
            return False
        self.last_id = event_id
        self.message_id = generation(event_id) or self.message_id
        return True

    def route(self, payloads: list[dict], ids: list[str | None] | None = None) -> None:
        store, key = self.store, self.key
        tokens: list[str] = []
        for index, payload in enumerate(payloads):
            if ids is not None and not self._fresh(ids[index]):
                continue
            self.progressed = True
            kind = payload.get("type")
            if kind == contract.TOKEN:
                tokens.append(str(payload.get("text", "")))
                continue
            if tokens:  # keep the order: tokens before a start/terminal event go in first
                store.append_tokens(key, tokens)
                tokens = []
            if kind == contract.START:
                self.started = True
                if payload.get("message_id") is not None:
                    self.message_id = payload.get("message_id")
                store.on_start(key, payload.get("user_message_id"), payload.get("message_id"))
            elif kind == contract.DONE:
                self.outcome = "complete"
                store.finish(key, "complete", message_id=payload.get("message_id"), usage=payload.get("usage"),
                             finish_reason=payload.get("finish_reason"))
            elif kind == contract.INTERRUPTED:
                self.outcome = "interrupted"
                store.finish(key, "interrupted", message_id=payload.get("message_id"))
            elif kind == contract.ERROR:
                self.outcome = "error"
                error = {"code": payload.get("code") or "error",
                         "message": payload.get("message") or "The model failed."}
                if self.started:
                    store.finish(key, "error", error=error)
                else:
                    store.fail_before_start(key, error)
        if tokens:
            store.append_tokens(key, tokens)

    def refused(self, error: ApiError, on_unauthenticated) -> None:
        """The server refused the request (409 busy, 429, 401, 404...): a chat's question was not sent; a
        follow's answer ends as that error."""
        self.outcome = "error"
        if self.store.thread(self.key).streaming:
            self.store.fail_before_start(self.key, error.as_dict())
        if error.status == 401 and on_unauthenticated is not None:
            on_unauthenticated(error)

    def broken(self, failure) -> None:
        """The stream broke and cannot be followed again: the answer ends as an error, its text kept."""
        if isinstance(failure, ApiError):
            self.network_failed(failure, stopped_here=False, stopping=False)
            return
        self.outcome = "error"
        if self.store.thread(self.key).streaming:
            self.store.finish(self.key, "error", error=dict(failure))

    def network_failed(self, error: ApiError | None, *, stopped_here: bool, stopping: bool) -> None:
        """The request failed without an answer from the server: aborted by this page (Stop, page hide) -> a
        clean interruption; else the network broke."""
        store, key = self.store, self.key
        if stopped_here or error is None:
            self.outcome = "interrupted"
            if store.thread(key).streaming and not stopping:  # Stop finishes it itself, with the saved text
                store.finish(key, "interrupted")
            return
        self.outcome = "error"
        if store.thread(key).streaming:
            error_dict = error.as_dict()
            if self.started:
                error_dict["message"] = f"The connection to the server was lost ({error.detail or error.message})."
                store.finish(key, "error", error=error_dict)
            else:
                store.fail_before_start(key, error_dict)
