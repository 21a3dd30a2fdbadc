"""The FFI boundary to the server: every `js.fetch` of the app is here. Above this module everything is plain Python.

* `request_json()` and the small helpers (`list_threads`, `get_thread`, `create_thread`, ...) speak the JSON API;
  a non-2xx answer raises `ApiError` with the server's `{"error": {"code", "message"}}`, an unreachable server
  raises `ApiError(0, "unreachable", ...)`.
* `Streams` owns the streams (chats, and merges keyed by a merge key), at most one per thread: `start()` POSTs the message with an `AbortController`
  made here, reads `response.body.getReader()` in a loop, turns each chunk into bytes (`to_bytes()`), feeds the SSE
  parser and routes the events into the store. `stop()` aborts the fetch through its AbortController (the server
  notices the disconnect, closes the provider stream and saves the answer as interrupted), then shows exactly the
  text the server saved (it may hold a few tokens that were still in flight); `abort_all()` (page hide) aborts
  every stream at once. An abort ends as a clean "interrupted" state, never as an exception on screen.
  `start_merge()` streams a merged write-up the same way (same parser, same store calls, under its own key).
* Browser services used by the merge dialog and the import: `copy_text` (clipboard), `download_text` (Blob + object
  URL + `<a download>`), `read_file` (a picked File).

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
           "cancel", "export_url", "read_file", "import_conversation", "copy_text", "download_text", "max_streams"]

# Browsers open at most 6 HTTP/1.1 connections per origin: keep one free for the JSON API calls. Over HTTP/2
# (nginx with TLS, see nginx/README.md) every stream shares one connection, so the cap is only a sanity bound.
MAX_STREAMS_HTTP1, MAX_STREAMS_HTTP2 = 5, 50


def max_streams() -> int:
    """How many answers this page may stream at once, from the protocol the page itself arrived over."""
    entries = js.performance.getEntriesByType("navigation")
    protocol = str(entries[0].nextHopProtocol) if entries.length else ""
    return MAX_STREAMS_HTTP2 if protocol in ("h2", "h3") else MAX_STREAMS_HTTP1
SAVED_POLL_S, SAVED_POLL_TRIES = 0.1, 30  # after Stop, how long to wait for the server to have saved the answer


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


def export_url(thread_id: int, fmt: str) -> str:
    """The download address of a conversation's export (the server sends it as an attachment)."""
    return f"/api/threads/{thread_id}/export?format={fmt}"


async def read_file(file) -> str:
    """The text of a File the user picked (`<input type=file>`)."""
    try:
        return str(await file.text())
    except JsException as exc:
        raise ApiError(0, "unreadable_file", f"Cannot read {file.name}: {exc}") from None


async def import_conversation(text: str) -> dict:
    """POST a JSON export back; the server answers with the new root thread."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ApiError(0, "invalid_export", f"This file is not JSON ({exc}).") from None
    if not isinstance(document, dict):
        raise ApiError(0, "invalid_export", "This file is not a pinchat export.")
    return await request_json("POST", "/api/import", document)


async def copy_text(text: str) -> None:
    """Put `text` on the clipboard. Raises ApiError when the browser refuses (no permission, not focused...)."""
    clipboard = js.navigator.clipboard
    if not clipboard:
        raise ApiError(0, "no_clipboard", "This browser gives no clipboard access here.")
    try:
        await clipboard.writeText(text)
    except JsException as exc:
        raise ApiError(0, "clipboard_refused", f"The browser refused to copy ({exc}).") from None


async def download_text(text: str, filename: str, mime: str = "text/markdown") -> None:
    """Save `text` as a file: a Blob, an object URL, a click on an `<a download>`, then the URL is revoked."""
    blob = js.Blob.new(to_js([text]), _js_obj({"type": f"{mime};charset=utf-8"}))
    url = js.URL.createObjectURL(blob)
    link = js.document.createElement("a")
    link.href = url
    link.download = filename
    link.hidden = True
    js.document.body.appendChild(link)
    try:
        link.click()
    finally:
        link.remove()
        await asyncio.sleep(1)  # let the download start before its URL goes
        js.URL.revokeObjectURL(url)


class _Stream:
    """The live parts of one stream: the thread it runs on (what Stop cancels), its task, its AbortController
    and whether it has ended."""

    def __init__(self, thread_id: int) -> None:
        self.thread_id = thread_id
        self.controller = js.AbortController.new()
        self.task: asyncio.Task | None = None
        self.ended = asyncio.Event()
        self.aborted = False
        self.stopping = False  # Stop pressed: `Streams._stop` ends the answer with the server's saved text

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
        self.max_streams = max_streams()

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
        stream = _Stream(thread_id)
        self.live[key] = stream
        stream.task = asyncio.ensure_future(self._run(key, url, body, stream))

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
        """The page goes away: abort every open fetch now (the server saves each answer as interrupted)."""
        for stream in list(self.live.values()):
            stream.abort()

    async def _stop(self, key, stream: _Stream) -> None:
        stream.abort()  # crosses the FFI into the AbortController: the fetch and the connection end now
        await stream.ended.wait()
        state = self.store.thread(key)
        answer = state.streaming_message
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
                detail = await get_thread(thread_id)
            except ApiError:
                return None
            saved = next((m for m in detail.get("messages") or [] if m.get("id") == message_id), None)
            if saved is None:
                return None
            if saved.get("status") != "streaming":
                return saved.get("content") or ""
            await asyncio.sleep(SAVED_POLL_S)
        return None

    async def _run(self, thread_id, url: str, body: dict, stream: _Stream) -> None:
        """Stream one answer into the store under `thread_id` (a thread id, or a merge key)."""
        store = self.store
        parser = SSEParser()
        started = False
        outcome = "error"
        try:
            options = {
                "method": "POST",
                "headers": {"Content-Type": "application/json", "Accept": "text/event-stream"},
                "body": json.dumps(body),
                "signal": stream.controller.signal,
            }
            resp = await js.fetch(url, _js_obj(options))
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
                if store.thread(thread_id).streaming and not stream.stopping:  # Stop finishes it itself
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

