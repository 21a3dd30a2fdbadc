"""What the model is sent for a chat: a thread's history, and for a pin its ancestors' history up to the anchor."""

from __future__ import annotations

from typing import Any

from .db import Database

PIN_NOTE = (
    "The user selected the following passage of the assistant's answer above and is asking about this passage:\n"
    '"""\n{text}\n"""'
)


def _as_llm(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    # Failed or empty answers carry nothing for the model; interrupted text is kept (it was shown to the user).
    return [{"role": m["role"], "content": m["content"]} for m in messages
            if m["content"] and m["status"] != "streaming"]


async def build_context(db: Database, thread: dict[str, Any], up_to: int | None = None) -> list[dict[str, str]]:
    """The LLM messages for `thread` (only up to message `up_to` when given); recursive for nested pins."""
    prefix: list[dict[str, str]] = []
    anchor = thread["anchor"]
    if thread["parent_id"] is not None and anchor is not None:
        parent = await db.get_thread(thread["parent_id"])
        prefix = await build_context(db, parent, up_to=anchor["message_id"])
        prefix.append({"role": "system", "content": PIN_NOTE.format(text=anchor["text"])})
    return prefix + _as_llm(await db.messages(thread["id"], up_to=up_to))
