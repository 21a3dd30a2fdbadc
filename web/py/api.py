"""The FFI boundary to the server and the browser: every `js.fetch` of the app is here, and nothing else is. It is
as thin as Pyodide's own `pyodide.http`; what the page does with an answer stream is streams.py's job.

* `request_json()` and the small helpers (`list_threads`, `get_thread`, `create_thread`, ...) speak the JSON API;
  a non-2xx answer raises `ApiError` (contract.py) with the server's `{"error": {"code", "message"}}`, an
  unreachable server raises `ApiError(0, "unreachable", ...)`. Every state-changing request carries
  `Content-Type: application/json` and a JSON body (`{}` when there is nothing to say): the server's CSRF check
  refuses anything else.
* Accounts: `me`, `login`, `logout`, `change_password`, the API tokens and, for admins, the users. A 401 from any
  other call (the session was revoked or expired) is also reported to the handler set with
  `on_unauthenticated()`, which takes the page back to the sign-in form.
* `Transport` is what streams.py streams through: `open(url, body)` makes a `StreamRequest` (a POST with its own
  `AbortController`) whose `chunks()` reads `response.body.getReader()` and yields each chunk as bytes;
  `follow(thread_id, last_event_id)` the same for `GET /api/threads/{id}/stream` with a `Last-Event-ID` header
  (`status` 204: nothing runs); `abort()` aborts the fetch; `cancel(thread_id)` is Stop's cancel request.
  `max_streams()` is the page's cap on streams at once. Leaving the page cancels nothing: the server keeps the
  answer for a reattach. `online()` is `navigator.onLine`; `on_network_change(callback)` calls `callback(online)`
  on the window's `online` / `offline` events (streams.py drops its streams at once when the network goes: a dead
  network may leave a fetch hanging, and Chromium's offline emulation leaves an established stream open).
* Browser services: the location hash and history
  (`location_hash`, `replace_location`), `copy_text` (clipboard), `download_text` (Blob + object URL +
  `<a download>`), `read_file` (a picked File).

Pitfalls handled (../shared/notes/pyodide-frontend.md): `abort()` is called with no argument (a string reason hangs
the Python await); a cancelled asyncio task does not cancel the fetch, so streams.py aborts it; fetch options are
converted with `to_js(..., dict_converter=Object.fromEntries)`, which creates no PyProxy; JS `null` is `jsnull`
(falsy), not `None`.
"""

from __future__ import annotations

import asyncio
import json

import js
from pyodide.ffi import JsException, create_proxy, to_js

from contract import ApiError, error_from_body, unreachable

__all__ = ["ApiError", "Transport", "StreamRequest", "request_json", "list_threads", "get_thread", "create_thread",
           "delete_thread", "cancel_thread", "export_url", "read_file", "import_conversation",
           "copy_text", "download_text", "max_streams", "location_hash", "replace_location", "clear_location", "page_origin",
           "report_unauthenticated", "on_unauthenticated", "me", "login", "logout", "change_password", "list_tokens", "create_token", "revoke_token", "list_users", "add_user", "update_user", "remove_user"]

# Browsers open at most 6 HTTP/1.1 connections per origin: keep one free for the JSON API calls. Over HTTP/2
# (nginx with TLS, see nginx/README.md) every stream shares one connection, so the cap is only a sanity bound.
MAX_STREAMS_HTTP1, MAX_STREAMS_HTTP2 = 5, 50


def max_streams() -> int:
    """How many answers this page may stream at once, from the protocol the page itself arrived over."""
    entries = js.performance.getEntriesByType("navigation")
    protocol = str(entries[0].nextHopProtocol) if entries.length else ""
    return MAX_STREAMS_HTTP2 if protocol in ("h2", "h3") else MAX_STREAMS_HTTP1



def _js_obj(value: dict):
    return to_js(value, dict_converter=js.Object.fromEntries)


def _unreachable(exc: Exception) -> ApiError:
    return unreachable(str(exc))


_unauthenticated_handler = None


def on_unauthenticated(handler) -> None:
    """`handler(error)` is called when an API call answers 401 (not `me` or `login`, where 401 is an answer)."""
    global _unauthenticated_handler
    _unauthenticated_handler = handler


def report_unauthenticated(error: ApiError) -> None:
    if error.status == 401 and _unauthenticated_handler is not None:
        _unauthenticated_handler(error)


async def _error_from_response(resp) -> ApiError:
    """Turn a non-2xx response into an ApiError, from our JSON error body when there is one."""
    retry_after = resp.headers.get("Retry-After")
    try:
        body = str(await resp.text())
    except JsException:
        body = ""
    return error_from_body(int(resp.status), body, str(resp.statusText), str(retry_after) if retry_after else None)


async def request_json(method: str, path: str, body: dict | None = None, *, report_401: bool = True):
    """One JSON API call. Returns the decoded body (None for 204). A request that changes state always sends a
    JSON body (`{}` when `body` is None)."""
    options: dict = {"method": method, "headers": {"Accept": "application/json"}}
    if body is None and method not in ("GET", "HEAD"):
        body = {}
    if body is not None:
        options["headers"]["Content-Type"] = "application/json"
        options["body"] = json.dumps(body)
    try:
        resp = await js.fetch(path, _js_obj(options))
    except JsException as exc:
        raise _unreachable(exc) from None
    if not resp.ok:
        error = await _error_from_response(resp)
        if report_401:
            report_unauthenticated(error)
        raise error
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


async def cancel_thread(thread_id: int) -> dict:
    """Stop the thread's answer (Stop): the server answers once the text is saved."""
    return await request_json("POST", f"/api/threads/{thread_id}/cancel", {})


# ---- accounts -----------------------------------------------------------------------------------------------------

async def me() -> dict:
    """`{"user", "auth", "sso"}` of the signed-in user; ApiError 401 when nobody is."""
    return await request_json("GET", "/api/auth/me", report_401=False)


async def login(username: str, password: str) -> dict:
    return await request_json("POST", "/api/auth/login", {"username": username, "password": password},
                              report_401=False)


async def logout() -> None:
    await request_json("POST", "/api/auth/logout", {}, report_401=False)


async def change_password(current: str | None, new: str) -> dict:
    return await request_json("POST", "/api/auth/password", {"current_password": current, "new_password": new})


async def list_tokens() -> list[dict]:
    return (await request_json("GET", "/api/tokens"))["tokens"]


async def create_token(name: str) -> dict:
    return await request_json("POST", "/api/tokens", {"name": name})


async def revoke_token(token_id: int) -> None:
    await request_json("DELETE", f"/api/tokens/{int(token_id)}")


async def list_users() -> list[dict]:
    return (await request_json("GET", "/api/users"))["users"]


async def add_user(username: str, password: str, is_admin: bool) -> dict:
    return await request_json("POST", "/api/users", {"username": username, "password": password,
                                                     "is_admin": bool(is_admin)})


async def update_user(user_id: int, **fields) -> dict:
    """PATCH a user: `disabled`, `is_admin`, `password`."""
    return await request_json("PATCH", f"/api/users/{int(user_id)}", fields)


async def remove_user(user_id: int) -> None:
    await request_json("DELETE", f"/api/users/{int(user_id)}")


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


# ---- browser services: location and history -----------------------------------------------------------------------

def location_hash() -> str:
    return str(js.location.hash)


def replace_location(hash_value: str) -> None:
    """Show `hash_value` (`#...`, or "" for none) in the address bar without a new history entry."""
    if str(js.location.hash) != hash_value:
        js.history.replaceState(None, "", hash_value or str(js.location.pathname))


def page_origin() -> str:
    """`https://chat.example.org` (scheme, host and port) as the browser reached this page."""
    return str(js.location.origin)


def clear_location() -> None:
    """Drop the hash and query from the address bar (the page's own path stays), without a history entry."""
    js.history.replaceState(None, "", str(js.location.pathname))


# ---- answer streams ---------------------------------------------------------------------------------------------

class StreamRequest:
    """One streaming request with its own AbortController: a POST of `body`, or a GET when `body` is None;
    `chunks()` yields the response body as bytes; `status` is the response's (0 until it came)."""

    def __init__(self, url: str, body: dict | None, headers: dict | None = None) -> None:
        self.url = url
        self.body = body
        self.headers = headers or {}
        self.controller = js.AbortController.new()
        self._aborted = False
        self.status = 0

    @property
    def aborted(self) -> bool:
        return self._aborted or bool(self.controller.signal.aborted)

    def abort(self) -> None:
        if not self._aborted:
            self._aborted = True
            self.controller.abort()  # never abort("reason"): a non-Error reason hangs the Python await

    async def chunks(self):
        """The body, chunk by chunk as it arrives. Raises ApiError: the server's error (non-2xx), or status 0 when
        the network failed or the request was aborted (`aborted` tells which)."""
        options = {"method": "GET", "headers": {"Accept": "text/event-stream", **self.headers},
                   "signal": self.controller.signal}
        if self.body is not None:
            options.update(method="POST", body=json.dumps(self.body))
            options["headers"]["Content-Type"] = "application/json"
        try:
            resp = await js.fetch(self.url, _js_obj(options))
        except JsException as exc:
            raise _unreachable(exc) from None
        self.status = int(resp.status)
        if not resp.ok:
            raise await _error_from_response(resp)
        if self.status == 204 or not resp.body:
            return
        reader = resp.body.getReader()
        while True:
            try:
                result = await reader.read()
            except JsException as exc:
                raise _unreachable(exc) from None
            if result.done:
                return
            yield result.value.to_bytes()


class Transport:
    """What streams.Streams talks to in the page (tests give it a fake one)."""

    def __init__(self) -> None:
        self._listeners: list = []  # the kept proxies of the window's online / offline listeners

    def max_streams(self) -> int:
        return max_streams()

    def open(self, url: str, body: dict) -> StreamRequest:
        return StreamRequest(url, body)

    def follow(self, thread_id: int, last_event_id: str) -> StreamRequest:
        return StreamRequest(f"/api/threads/{thread_id}/stream", None, {"Last-Event-ID": last_event_id})

    async def cancel(self, thread_id: int) -> None:
        await cancel_thread(thread_id)

    async def get_thread(self, thread_id: int) -> dict:
        return await get_thread(thread_id)

    def online(self) -> bool:
        return bool(js.navigator.onLine)

    def on_network_change(self, callback) -> None:
        """`callback(True)` on the window's `online` event, `callback(False)` on `offline`, for the page's life."""
        for name, online in (("online", True), ("offline", False)):
            proxy = create_proxy(lambda _event, online=online: callback(online))
            self._listeners.append(proxy)  # kept: a borrowed proxy would be destroyed after addEventListener
            js.window.addEventListener(name, proxy)
