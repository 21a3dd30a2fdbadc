"""The page's answer streams: the routing of stream events into the store, and what Stop does. Plain Python: it
never touches the browser itself but talks to a `transport` (api.Transport in the page, a fake in
tests/test_web_streams.py), so it runs under CPython.

`Streams` owns the streams (chats keyed by thread id, merges keyed by a merge key, see contract.py), at most one
per thread:

* `start()` / `start_merge()` check that the thread is free and under the page's stream cap, show the question at
  once (`Store.begin_send` / `begin_merge`), then open the POST through the transport and feed its bytes to the SSE
  parser (sse.py); each event goes into the store: `start` -> `on_start`, tokens (all of one chunk at once) ->
  `append_tokens`, `done` / `interrupted` / `error` -> `finish`. A refusal before the answer started (409, 429,
  an unreachable server) -> `fail_before_start`; a 401 also calls `on_unauthenticated` (back to the sign-in form).
* Truncation is decided in one place: the parser's terminal state (`SSEParser.close()` is False when the bytes
  ended without a terminal event, or inside one) -> the answer ends as an error `stream_truncated`.
* `stop()` aborts the request (the server notices the disconnect, closes the provider stream and saves the answer as
  interrupted), waits for the stream to end, then shows exactly the text the server saved (it may hold a few tokens
  that were still in flight). `abort_all()` (page hide, sign-out) aborts every stream at once. An abort always
  ends as a clean "interrupted" state, never as an error on screen.

The transport: `max_streams() -> int`; `open(url, body) -> request`, where `request.chunks()` is an async iterator
of bytes (raising `contract.ApiError`: the server's error before the body, or status 0 when the network failed),
`request.abort()` and `request.aborted`; `async get_thread(thread_id) -> dict`.
"""

from __future__ import annotations

import asyncio

import contract
from contract import ApiError
from sse import Event, SSEParser
from store import Store

__all__ = ["Streams"]

SAVED_POLL_S, SAVED_POLL_TRIES = 0.1, 30  # after Stop, how long to wait for the server to have saved the answer
TRUNCATED = {"code": "stream_truncated", "message": "The connection ended before the answer was complete."}


class _Stream:
    """The live parts of one stream: the thread it runs on (what Stop cancels), its request, its task and whether
    it has ended."""

    def __init__(self, thread_id: int, request) -> None:
        self.thread_id = thread_id
        self.request = request
        self.task: asyncio.Task | None = None
        self.ended = asyncio.Event()
        self.stopping = False  # Stop pressed: `Streams._stop` ends the answer with the server's saved text

    def abort(self) -> None:
        if not self.request.aborted:
            self.request.abort()

    @property
    def aborted(self) -> bool:
        return bool(self.request.aborted)


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
        self._launch(thread_id, thread_id, f"/api/threads/{thread_id}/chat", {"message": text})
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
        self._launch(key, thread_id, f"/api/threads/{thread_id}/merge", body)
        return True

    def _launch(self, key, thread_id: int, url: str, body: dict) -> None:
        stream = _Stream(thread_id, self.transport.open(url, body))
        self.live[key] = stream
        stream.task = asyncio.ensure_future(self._run(key, stream))

    def stop(self, key) -> None:
        """Stop button / Esc: abort the stream; the server saves what was generated, and the page shows it."""
        stream = self.live.get(key)
        if stream is None:
            return
        stream.stopping = True
        self.store.set_stopping(key)
        task = asyncio.ensure_future(self._stop(key, stream))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def abort_all(self) -> None:
        """The page goes away: abort every open request now (the server saves each answer as interrupted)."""
        for stream in list(self.live.values()):
            stream.abort()

    async def _stop(self, key, stream: _Stream) -> None:
        stream.abort()  # the fetch and the connection end now
        await stream.ended.wait()
        answer = self.store.thread(key).streaming_message
        if answer is None:
            return  # the stream ended by itself meanwhile
        saved = await self._saved_text(stream.thread_id, answer.id)
        self.store.finish(key, "interrupted", text=saved)

    async def _saved_text(self, thread_id: int, message_id: int | None) -> str | None:
        """The answer's text as the server saved it on the disconnect, or None if it cannot be had."""
        if message_id is None:
            return None
        for _ in range(SAVED_POLL_TRIES):
            try:
                detail = await self.transport.get_thread(thread_id)
            except ApiError:
                return None
            saved = next((m for m in detail.get("messages") or [] if m.get("id") == message_id), None)
            if saved is None:
                return None
            if saved.get("status") != "streaming":
                return saved.get("content") or ""
            await asyncio.sleep(SAVED_POLL_S)
        return None

    async def _run(self, key, stream: _Stream) -> None:
        """Stream one answer into the store under `key` (a thread id, or a merge key)."""
        store = self.store
        decoder = _Decoder()
        parser = SSEParser(terminal=decoder)
        router = _Router(store, key)
        try:
            try:
                async for chunk in stream.request.chunks():
                    events = parser.feed(chunk)
                    router.route(decoder.take(events))
            except ApiError as error:
                if error.status:  # the server refused it (409 busy, 429, 401...): nothing was saved
                    router.outcome = "error"
                    store.fail_before_start(key, error.as_dict())
                    if error.status == 401 and self.on_unauthenticated is not None:
                        self.on_unauthenticated(error)
                    return
                router.network_failed(error, stopped_here=stream.aborted, stopping=stream.stopping)
                return
            if not parser.close() and store.thread(key).streaming:  # no terminal event: the stream was cut
                router.outcome = "error"
                store.finish(key, "error", error=dict(TRUNCATED))
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
            if self.on_end is not None:
                self.on_end(key, router.outcome)


class _Router:
    """The events of one stream -> the store, under `key`; `outcome` is how it ended."""

    def __init__(self, store: Store, key) -> None:
        self.store = store
        self.key = key
        self.started = False
        self.outcome = "error"

    def route(self, payloads: list[dict]) -> None:
        store, key = self.store, self.key
        tokens: list[str] = []
        for payload in payloads:
            kind = payload.get("type")
            if kind == contract.TOKEN:
                tokens.append(str(payload.get("text", "")))
                continue
            if tokens:  # keep the order: tokens before a start/terminal event go in first
                store.append_tokens(key, tokens)
                tokens = []
            if kind == contract.START:
                self.started = True
                store.on_start(key, payload.get("user_message_id"), payload.get("message_id"))
            elif kind == contract.DONE:
                self.outcome = "complete"
                store.finish(key, "complete", message_id=payload.get("message_id"), usage=payload.get("usage"))
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

    def network_failed(self, error: ApiError, *, stopped_here: bool, stopping: bool) -> None:
        """The request failed without an answer from the server: aborted by this page (Stop, page hide) -> a
        clean interruption; else the network broke."""
        store, key = self.store, self.key
        if stopped_here:
            self.outcome = "interrupted"
            if store.thread(key).streaming and not stopping:  # Stop finishes it itself, with the saved text
                store.finish(key, "interrupted")
            return
        self.outcome = "error"
        if store.thread(key).streaming:
            error_dict = error.as_dict()
            if self.started:
                error_dict["message"] = f"The connection to the server was lost ({error.detail})."
                store.finish(key, "error", error=error_dict)
            else:
                store.fail_before_start(key, error_dict)
