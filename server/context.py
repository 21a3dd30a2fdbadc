"""What the model is sent for a chat, within a token budget.

A thread: its newest messages verbatim, the older ones replaced by the thread's rolling summary.
A pin: for each ancestor, furthest first, what fits its share of the budget (the parent: its messages up to the
anchored one verbatim, else its summary and the anchored message; further ancestors: their summaries, nearer
ones getting a larger share), each followed by a system note quoting the anchored passage; then the pin's own
messages as for a thread. Token counts come from LiteLLM's token counter for the chat model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .db import Database

Message = dict[str, str]

PIN_NOTE = (
    "The user selected the following passage of the assistant's answer above and is asking about this passage:\n"
    '"""\n{text}\n"""'
)
SUMMARY_NOTE = "Summary of the earlier conversation{title}:\n{summary}"


@dataclass(frozen=True)
class Budget:
    tokens: int  # for everything sent, the new user message included
    count: Callable[[str, str], int]  # tokens of one message (role, content); cached by the caller
    parent_share: float = 0.4  # of `tokens`, for the parent's messages up to the anchor
    ancestors_share: float = 0.2  # of `tokens`, split over further ancestors: 1/2, 1/4, ... nearest first

    def share(self, distance: int) -> int:
        """Tokens for the ancestor `distance` steps up (0 = the parent)."""
        fraction = self.parent_share if distance == 0 else self.ancestors_share * 0.5**distance
        return int(self.tokens * fraction)

    def size(self, messages: list[Message]) -> int:
        return sum(self.count(m["role"], m["content"]) for m in messages)

    def truncate(self, message: Message, tokens: int) -> Message:
        """Cut a message's text to about `tokens` tokens, keeping its start."""
        size = self.size([message])
        if size <= tokens:
            return message
        keep = max(0, int(len(message["content"]) * tokens / size) - 1)
        return {**message, "content": message["content"][:keep] + "…"}


def as_llm(messages: list[dict[str, Any]]) -> list[Message]:
    # Failed or empty answers carry nothing for the model; interrupted text is kept (the user saw it).
    return [{"role": m["role"], "content": m["content"]} for m in messages
            if m["content"] and m["status"] != "streaming"]


def summary_message(thread: dict[str, Any]) -> Message:
    title = f' "{thread["title"]}"' if thread["title"] else ""
    return {"role": "system", "content": SUMMARY_NOTE.format(title=title, summary=thread["summary"])}


def newest_that_fit(messages: list[Message], tokens: int, budget: Budget) -> list[Message]:
    kept: list[Message] = []
    for message in reversed(messages):
        tokens -= budget.size([message])
        if tokens < 0:
            break
        kept.append(message)
    return kept[::-1]


async def thread_part(db: Database, thread: dict[str, Any], tokens: int, budget: Budget) -> list[Message]:
    messages = as_llm(await db.messages(thread["id"]))
    if budget.size(messages) <= tokens or not thread["summary"]:
        return newest_that_fit(messages, tokens, budget)
    summary = budget.truncate(summary_message(thread), tokens // 3)
    return [summary] + newest_that_fit(messages, tokens - budget.size([summary]), budget)


async def ancestor_part(db: Database, ancestor: dict[str, Any], anchor: dict[str, Any], distance: int,
                        budget: Budget) -> list[Message]:
    tokens = budget.share(distance)
    upto = as_llm(await db.messages(ancestor["id"], up_to=anchor["message_id"]))
    if distance > 0 and ancestor["summary"]:
        return [budget.truncate(summary_message(ancestor), tokens)]
    if budget.size(upto) <= tokens:
        return upto
    anchored = next((m for m in reversed(upto) if m["role"] == "assistant"), None)
    part = [summary_message(ancestor)] if ancestor["summary"] else []
    if anchored is not None:
        part.append(anchored)
    # Over its share: keep the anchored message whole if it fits, then whatever of the summary still fits.
    if len(part) == 2:
        part[0] = budget.truncate(part[0], max(0, tokens - budget.size([part[1]])))
    return [budget.truncate(m, tokens) for m in part]


async def build_context(db: Database, thread: dict[str, Any], new_message: str, budget: Budget) -> list[Message]:
    """The messages to send for `new_message` in `thread`, within `budget`."""
    chain = []  # (ancestor, the anchor its child hangs from), nearest first
    child = thread
    while child["parent_id"] is not None and child["anchor"] is not None:
        parent = await db.get_thread(child["parent_id"])
        chain.append((parent, child["anchor"]))
        child = parent
    prefix: list[Message] = []
    for distance, (ancestor, anchor) in reversed(list(enumerate(chain))):
        prefix += await ancestor_part(db, ancestor, anchor, distance, budget)
        prefix.append({"role": "system", "content": PIN_NOTE.format(text=anchor["text"])})
    question = {"role": "user", "content": new_message}
    room = budget.tokens - budget.size(prefix) - budget.size([question])
    return prefix + await thread_part(db, thread, max(0, room), budget) + [question]
