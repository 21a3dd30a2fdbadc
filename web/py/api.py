"""The FFI boundary to the server: every `js.fetch` of the app is here. Above this module everything is plain Python.

* `request_json()` and the small helpers (`list_threads`, `get_thread`, `create_thread`, ...) speak the JSON API;
  a non-2xx answer raises `ApiError` with the server's `{"error": {"code", "message"}}`, an unreachable server
  raises `ApiError(0, "unreachable", ...)`.
* `Streams` owns the chat streams, at most one per thread: `start()` POSTs the message with an `AbortController`
  made here, reads `response.body.getReader()` in a loop, turns each chunk into bytes (`to_bytes()`), feeds the SSE
  parser and routes the events into the store. `stop()` asks the server to cancel (so the saved partial answer is
  exactly what was shown) and aborts the fetch if the server does not end the stream soon; `abort_all()` (page
  hide) aborts at once. An abort ends as a clean "interrupted" state, never as an exception on screen.

Pitfalls handled (../shared/notes/pyodide-frontend.md): `abort()` is called with no argument (a string reason hangs
the Python await); a cancelled asyncio task does not cancel the fetch, so cancellation aborts it; tasks are kept
in `Streams.tasks` (asyncio keeps only weak references); fetch options are converted with `to_js(...,
dict_converter=Object.fromEntries)`, which creates no PyProxy; JS `null` is `jsnull` (falsy), not `None`.
"""

from __future__ import annotations

import asyncio
import json

import js
from pyodide.ffi import JsException, to_js

from sse import Event, SSEParser
from store import Store

__all__ = ["ApiError", "Streams", "request_json", "list_threads", "get_thread", "create_thread", "delete_thread",
           "cancel", "MAX_STREAMS"]

# Browsers open at most 6 HTTP/1.1 connections per origin; keep one free for the JSON API calls.
MAX_STREAMS = 5
STOP_GRACE_S = 3.0  # after asking the server to cancel, abort the fetch if the stream has not ended by then


class ApiError(Exception):
    """A failed API call: `status` (0 when the server could not be reached), `code`, `message`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "status": self.status}


def _js_obj(value: dict):
    return to_js(value, dict_converter=js.Object.fromEntries)


def _unreachable(exc: Exception) -> ApiError:
    return ApiError(0, "unreachable", f"Cannot reach the server ({exc}).")


async def _error_from_response(resp) -> ApiError:
    """Turn a non-2xx response into an ApiError, from our JSON error body when there is one."""
    status = int(resp.status)
    try:
        body = json.loads(await resp.text())
        error = body["error"]
        return ApiError(status, str(error.get("code") or f"http_{status}"), str(error.get("message") or ""))
    except Exception:
        return ApiError(status, f"http_{status}", f"The server answered HTTP {status} {resp.statusText}.")


async def request_json(method: str, path: str, body: dict | None = None):
    """One JSON API call. Returns the decoded body (None for 204)."""
    options: dict = {"method": method, "headers": {"Accept": "application/json"}}
    if body is not None:
        options["headers"]["Content-Type"] = "application/json"
        options["body"] = json.dumps(body)
    try:
        resp = await js.fetch(path, _js_obj(options))
    except JsException as exc:
        raise _unreachable(exc) from None
    if not resp.ok:
        raise await _error_from_response(resp)
    if resp.status == 204:
        return None
    try:
        return json.loads(await resp.text())
    except (JsException, ValueError) as exc:
        raise ApiError(int(resp.status), "bad_response", f"The server sent an unreadable answer ({exc}).") from None


async def list_threads() -> list[dict]:
    return (await request_json("GET", "/api/threads"))["threads"]


async def get_thread(thread_id: int) -> dict:
    return await request_json("GET", f"/api/threads/{thread_id}")


async def create_thread(*, title: str | None = None, parent_id: int | None = None,
                        anchor: dict | None = None) -> dict:
    body: dict = {}
    if title is not None:
        body["title"] = title
    if parent_id is not None:
        body["parent_id"] = parent_id
        body["anchor"] = anchor
    return await request_json("POST", "/api/threads", body)


async def delete_thread(thread_id: int) -> None:
    await request_json("DELETE", f"/api/threads/{thread_id}")


async def cancel(thread_id: int) -> bool:
    return bool((await request_json("POST", f"/api/threads/{thread_id}/cancel", {}))["cancelled"])


class _Stream:
    """The live parts of one chat stream: its task, its AbortController and whether it has ended."""

    def __init__(self) -> None:
        self.controller = js.AbortController.new()
        self.task: asyncio.Task | None = None
        self.ended = asyncio.Event()
        self.aborted = False

    def abort(self) -> None:
        if not self.aborted:
            self.aborted = True
            self.controller.abort()  # never abort("reason"): a non-Error reason hangs the Python await


class Streams:
    """All chat streams of the page, at most one per thread, routed into `store`."""

    def __init__(self, store: Store, on_end=None) -> None:
        self.store = store
        self.on_end = on_end  # called with (thread_id, status) after a stream ended
        self.live: dict[int, _Stream] = {}
        self.tasks: set[asyncio.Task] = set()  # strong references to helper tasks (stop)

    def is_live(self, thread_id: int) -> bool:
        return thread_id in self.live

    def start(self, thread_id: int, text: str) -> bool:
        """Send `text` to the thread and stream the answer into the store. False if it cannot start now."""
        state = self.store.thread(thread_id)
        if thread_id in self.live or state.streaming:
            self.store.set_error(thread_id, {"code": "thread_busy",
                                             "message": "This thread is still answering: stop it or wait."})
            return False
        if len(self.live) >= MAX_STREAMS:
            self.store.set_error(thread_id, {
                "code": "too_many_streams",
                "message": f"{MAX_STREAMS} answers are already streaming; stop one first "
                           "(the browser allows only 6 connections to this server)."})
            return False
        stream = _Stream()
        self.live[thread_id] = stream
        self.store.begin_send(thread_id, text)
        stream.task = asyncio.ensure_future(self._run(thread_id, text, stream))
        return True

    def stop(self, thread_id: int) -> None:
        """Stop button / Esc: the server cancels and ends the stream with `interrupted`; abort if it does not."""
        stream = self.live.get(thread_id)
        if stream is None:
            return
        self.store.set_stopping(thread_id)
        task = asyncio.ensure_future(self._stop(thread_id, stream))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def abort_all(self) -> None:
        """The page goes away: abort every open fetch now (the server saves each answer as interrupted)."""
        for stream in list(self.live.values()):
            stream.abort()

    async def _stop(self, thread_id: int, stream: _Stream) -> None:
        try:
            await cancel(thread_id)
        except ApiError:
            stream.abort()
            return
        try:
            await asyncio.wait_for(stream.ended.wait(), STOP_GRACE_S)
        except TimeoutError:
            stream.abort()

    async def _run(self, thread_id: int, text: str, stream: _Stream) -> None:
        store = self.store
        parser = SSEParser()
        started = False
        outcome = "error"
        try:
            options = {
                "method": "POST",
                "headers": {"Content-Type": "application/json", "Accept": "text/event-stream"},
                "body": json.dumps({"message": text}),
                "signal": stream.controller.signal,
            }
            resp = await js.fetch(f"/api/threads/{thread_id}/chat", _js_obj(options))
            if not resp.ok:
                error = await _error_from_response(resp)
                store.fail_before_start(thread_id, error.as_dict())
                return
            reader = resp.body.getReader()
            while True:
                result = await reader.read()
                if result.done:
                    break
                tokens: list[str] = []
                for event in parser.feed(result.value.to_bytes()):
                    payload = _payload(event)
                    kind = payload.get("type")
                    if kind == "token":
                        tokens.append(str(payload.get("text", "")))
                        continue
                    if tokens:  # keep the order: tokens before a start/terminal event go in first
                        store.append_tokens(thread_id, tokens)
                        tokens = []
                    if kind == "start":
                        started = True
                        store.on_start(thread_id, payload.get("user_message_id"), payload.get("message_id"))
                    elif kind == "done":
                        outcome = "complete"
                        store.finish(thread_id, "complete", message_id=payload.get("message_id"),
                                     usage=payload.get("usage"))
                    elif kind == "interrupted":
                        outcome = "interrupted"
                        store.finish(thread_id, "interrupted", message_id=payload.get("message_id"))
                    elif kind == "error":
                        outcome = "error"
                        error = {"code": payload.get("code") or "error",
                                 "message": payload.get("message") or "The model failed."}
                        if started:
                            store.finish(thread_id, "error", error=error)
                        else:
                            store.fail_before_start(thread_id, error)
                if tokens:
                    store.append_tokens(thread_id, tokens)
            parser.close()
            if store.thread(thread_id).streaming:  # no terminal event: the stream was cut
                outcome = "error"
                store.finish(thread_id, "error", error={
                    "code": "stream_truncated",
                    "message": "The connection ended before the answer was complete."})
        except JsException as exc:
            if stream.aborted or bool(stream.controller.signal.aborted):
                outcome = "interrupted"
                if store.thread(thread_id).streaming:
                    store.finish(thread_id, "interrupted")
            else:
                outcome = "error"
                error = _unreachable(exc).as_dict()
                if store.thread(thread_id).streaming:
                    if started:
                        error["message"] = f"The connection to the server was lost ({exc})."
                        store.finish(thread_id, "error", error=error)
                    else:
                        store.fail_before_start(thread_id, error)
        except asyncio.CancelledError:
            stream.abort()  # cancelling the task alone would leave the fetch running
            if store.thread(thread_id).streaming:
                store.finish(thread_id, "interrupted")
            raise
        except Exception as exc:  # a bug of ours: say so in the thread, stop the network read
            stream.abort()
            outcome = "error"
            if store.thread(thread_id).streaming:
                store.finish(thread_id, "error", error={"code": "client_error", "message": repr(exc)})
        finally:
            if self.live.get(thread_id) is stream:
                del self.live[thread_id]
            stream.ended.set()
            if self.on_end is not None:
                self.on_end(thread_id, outcome)


def _payload(event: Event) -> dict:
    try:
        payload = json.loads(event.data)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}

