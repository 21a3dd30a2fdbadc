"""The events of an answer stream: the wire contract with the page, stated once on this side.

Each SSE frame is `id: <n>` and one `data:` line holding one of these JSON objects. The page's side of the contract
is web/py/contract.py; tests/test_contract.py feeds a real server stream through the page's parser and router.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring  # ensure_ascii=False's string encoder
from typing import Any

START, TOKEN, DONE, ERROR, INTERRUPTED = "start", "token", "done", "error", "interrupted"
TERMINAL = (DONE, ERROR, INTERRUPTED)
KINDS = (START, TOKEN, *TERMINAL)


def start(user_message_id: int | None, message_id: int, kind: str) -> dict[str, Any]:
    return {"type": START, "user_message_id": user_message_id, "message_id": message_id, "kind": kind}


# An answer emits thousands of tokens and keeps them for replay: a token event is held as its text alone (a str),
# every other event as its dict; `encode` gives either one's JSON.
Event = str | dict[str, Any]


def token(text: str) -> str:
    return text


def is_token(event: Event) -> bool:
    return event.__class__ is str


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode(event: Event) -> str:
    """The compact JSON of an event, as one `data:` line (JSON never holds a raw line break)."""
    if event.__class__ is str:
        return '{"type":"token","text":' + encode_basestring(event) + "}"
    return _encode(event)


def done(message_id: int, finish_reason: str | None, usage: dict[str, Any] | None) -> dict[str, Any]:
    return {"type": DONE, "message_id": message_id, "finish_reason": finish_reason, "usage": usage}


def interrupted(message_id: int, reason: str) -> dict[str, Any]:
    return {"type": INTERRUPTED, "message_id": message_id, "reason": reason}


def error(message_id: int, code: str, message: str) -> dict[str, Any]:
    return {"type": ERROR, "code": code, "message": message, "message_id": message_id}
