"""Export a conversation tree as Markdown or JSON, and import the JSON back as a new, equal tree."""

from __future__ import annotations

import re
import unicodedata
from typing import Any
from urllib.parse import quote as percent_encoded

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


async def import_tree(db: Database, user_id: int, document: dict[str, Any]) -> int:
    """Create the exported tree anew (new ids, same structure and text) in one transaction; return the root id.
    `document` has passed schemas.ExportDocument, which also checks that it is a tree the API could have built."""
    root = document["thread"]
    thread_ids: dict[int, int] = {}
    message_ids: dict[int, int] = {}
    merges: list[tuple[int, list[int]]] = []

    async def insert(data: dict[str, Any], parent_id: int | None) -> int:
        anchor = None
        if parent_id is not None:
            anchor = {**data["anchor"], "message_id": message_ids[data["anchor"]["message_id"]]}
        new_id = await db.insert_thread(user_id, data["title"] or None, data["summary"], parent_id, anchor)
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


_NOT_NAME = re.compile(r"[\W_]+")  # runs of what is not a letter or digit (any script) become one hyphen
_NAME_CHARS = 60


def attachment(title: str | None, thread_id: int, fmt: str) -> str:
    """The Content-Disposition of an export: named after the conversation's title, e.g. `trip-to-lyon-12.md`
    (`conversation-12.md` without a usable title). A title in another script keeps it through RFC 6266's
    `filename*`; the plain `filename` keeps its ASCII letters (accents dropped)."""
    words = _NOT_NAME.sub("-", (title or "").lower())[:_NAME_CHARS].strip("-")
    ascii_words = _NOT_NAME.sub("-", unicodedata.normalize("NFKD", words).encode("ascii", "ignore").decode())
    ascii_words = ascii_words.strip("-")
    plain = f"{ascii_words or 'conversation'}-{thread_id}.{fmt}"
    full = f"{words or 'conversation'}-{thread_id}.{fmt}"
    if full == plain:
        return f'attachment; filename="{plain}"'
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{percent_encoded(full, safe='')}"
