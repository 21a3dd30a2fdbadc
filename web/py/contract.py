"""The wire contract with the server, stated once on the page's side. Pure Python (tested under CPython).

* The events of an answer stream (server/events.py is the server's side): each SSE frame holds one JSON object
  whose `type` is one of `KINDS`; a stream ends properly with exactly one of `TERMINAL`.
* The error shape: every non-2xx answer is `{"error": {"code", "message"}}`; `error_from_body()` reads it into an
  `ApiError`, whatever the body turns out to be.
* The merge formats (server/merge.py FORMATS) and the merge key, the store key a merge streams under.

tests/test_contract.py checks these against the server's definitions and feeds a real server stream through the
page's parser (sse.py) and router (streams.py).
"""

from __future__ import annotations

import json

__all__ = ["START", "TOKEN", "DONE", "ERROR", "INTERRUPTED", "TERMINAL", "KINDS", "ApiError", "error_from_body",
           "unreachable", "event_payload", "MERGE_FORMATS", "merge_key", "merge_thread"]

START, TOKEN, DONE, ERROR, INTERRUPTED = "start", "token", "done", "error", "interrupted"
TERMINAL = (DONE, ERROR, INTERRUPTED)
KINDS = (START, TOKEN, *TERMINAL)


def event_payload(data: str) -> dict:
    """The JSON object of one event's `data` ({} when it is not one)."""
    try:
        payload = json.loads(data)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


# ---- the error shape ----------------------------------------------------------------------------------------------

class ApiError(Exception):
    """A failed API call: `status` (0 when the server could not be reached), `code`, `message`; `retry_after` is
    the Retry-After header of a 429 as sent, `detail` what the browser said when the network failed."""

    def __init__(self, status: int, code: str, message: str, retry_after: str | None = None,
                 detail: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.detail = detail

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "status": self.status}


def error_from_body(status: int, body: str, status_text: str = "", retry_after: str | None = None) -> ApiError:
    """A non-2xx answer as an ApiError: from our `{"error": {"code", "message"}}` body when there is one."""
    try:
        error = json.loads(body)["error"]
        return ApiError(status, str(error.get("code") or f"http_{status}"), str(error.get("message") or ""),
                        retry_after)
    except Exception:
        return ApiError(status, f"http_{status}", f"The server answered HTTP {status} {status_text}.", retry_after)


def unreachable(detail: str) -> ApiError:
    """The server could not be reached (or the connection broke): status 0."""
    return ApiError(0, "unreachable", f"Cannot reach the server ({detail}).", detail=detail)


# ---- merges -------------------------------------------------------------------------------------------------------

MERGE_FORMATS = [  # (format, label); the names are server/merge.py FORMATS
    ("summary", "Summary (prose)"),
    ("bullets", "Key points (bullets)"),
    ("structured", "Structured document"),
    ("transcript", "Transcript (verbatim, no model)"),
    ("custom", "Custom instruction…"),
]
_MERGE_PREFIX = "merge:"


def merge_key(thread_id: int) -> str:
    """The store key a merge into `thread_id` streams under (not a thread id: it has no messages of its own)."""
    return f"{_MERGE_PREFIX}{int(thread_id)}"


def merge_thread(key) -> int | None:
    """The thread a merge key merges into; None for anything that is not a merge key (a thread id)."""
    if not isinstance(key, str) or not key.startswith(_MERGE_PREFIX):
        return None
    try:
        return int(key[len(_MERGE_PREFIX):])
    except ValueError:
        return None
