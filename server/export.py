"""Export a conversation tree as Markdown or JSON, and import the JSON back as a new, equal tree."""

from __future__ import annotations

from typing import Any

from .db import Database
from .tree import Node

FORMAT = "pinchat-export"
VERSION = 1
ROLE_LABEL = {"user": "You", "assistant": "Assistant"}
STATUS_NOTE = {"interrupted": " *(stopped before the end)*", "error": " *(the model failed here)*",
               "streaming": " *(still streaming)*"}


def quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines() or [""])


def to_markdown(root: Node) -> str:
    out: list[str] = []
    previous: Node | None = None
    for node, message in root.walk():
        if message is not None and previous is not None and previous.depth > node.depth:
            # a pin's subtree ended: say where the reading goes on
            out.append(f"*Back to {node.thread['title'] or 'the conversation'}:*")
        previous = node
        if message is None:
            level = "#" * min(6, node.depth + 1)
            title = node.thread["title"] or ("Untitled pin" if node.depth else "Untitled conversation")
            out.append(f"{level} {'📌 ' if node.depth else ''}{title}")
            if node.thread["anchor"]:
                out.append(f"Pinned on this passage:\n\n{quote(node.thread['anchor']['text'])}")
            continue
        label = ROLE_LABEL[message["role"]]
        if message["kind"] == "merge":
            label = "Merged write-up"
        out.append(f"**{label}:**{STATUS_NOTE.get(message['status'], '')}\n\n{message['content']}")
    return "\n\n".join(out).rstrip() + "\n"


def _node_json(node: Node) -> dict[str, Any]:
    thread = node.thread
    return {
        "id": thread["id"],
        "title": thread["title"],
        "summary": thread["summary"],
        "anchor": thread["anchor"],
        "messages": [{key: m[key] for key in ("id", "role", "content", "status", "kind", "merged_ids", "model",
                                               "usage", "finish_reason")} for m in node.messages],
        "pins": [_node_json(pin) for pins in node.pins.values() for pin in pins],
    }


def to_json(root: Node) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "thread": _node_json(root)}


class InvalidExport(ValueError):
    """The JSON is not a pinchat export (message says where)."""


def _check_thread(data: Any, where: str, parent_message_ids: set[int] | None) -> None:
    if not isinstance(data, dict):
        raise InvalidExport(f"{where}: a thread must be an object")
    if not isinstance(data.get("messages"), list) or not isinstance(data.get("pins", []), list):
        raise InvalidExport(f"{where}: `messages` and `pins` must be lists")
    if data.get("title") is not None and not isinstance(data["title"], str):
        raise InvalidExport(f"{where}: `title` must be a string")
    ids = set()
    for i, m in enumerate(data["messages"]):
        if not (isinstance(m, dict) and m.get("role") in ROLE_LABEL and isinstance(m.get("content"), str)
                and isinstance(m.get("id"), int)
                and m.get("status", "complete") in ("complete", "interrupted", "error", "streaming")):
            raise InvalidExport(f"{where}.messages[{i}]: needs an integer id, a role (user|assistant) and content")
        ids.add(m["id"])
    anchor = data.get("anchor")
    if parent_message_ids is not None:
        if not (isinstance(anchor, dict) and anchor.get("message_id") in parent_message_ids
                and all(isinstance(anchor.get(k), int) for k in ("start", "end"))
                and isinstance(anchor.get("text"), str)):
            raise InvalidExport(f"{where}: a pin needs an anchor on a message of its parent")
    for i, pin in enumerate(data.get("pins", [])):
        _check_thread(pin, f"{where}.pins[{i}]", ids)


def validate(document: Any) -> dict[str, Any]:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InvalidExport(f"not a {FORMAT} document (export one with GET /api/threads/{{id}}/export?format=json)")
    if document.get("version") != VERSION:
        raise InvalidExport(f"unsupported version {document.get('version')!r}; this server reads version {VERSION}")
    _check_thread(document.get("thread"), "thread", None)
    return document["thread"]


async def import_tree(db: Database, user_id: int, document: Any) -> int:
    """Create the exported tree anew (new ids, same structure and text) in one transaction; return the root id."""
    root = validate(document)
    thread_ids: dict[int, int] = {}
    message_ids: dict[int, int] = {}
    merges: list[tuple[int, list[int]]] = []

    async def insert(data: dict[str, Any], parent_id: int | None) -> int:
        anchor = None
        if parent_id is not None:
            anchor = {**data["anchor"], "message_id": message_ids[data["anchor"]["message_id"]]}
        new_id = await db.insert_thread(user_id, data.get("title"), data.get("summary"), parent_id, anchor)
        if data.get("id") is not None:
            thread_ids[data["id"]] = new_id
        for m in data["messages"]:
            message_ids[m["id"]] = await db.insert_message(new_id, m)
            if m.get("merged_ids"):
                merges.append((message_ids[m["id"]], m["merged_ids"]))
        for pin in data.get("pins", []):
            await insert(pin, new_id)
        return new_id

    async with db.transaction():
        root_id = await insert(root, None)
        for message_id, old_ids in merges:
            await db.set_merged_ids(message_id, [thread_ids[i] for i in old_ids if i in thread_ids])
    return root_id
