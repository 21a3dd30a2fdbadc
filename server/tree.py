"""A conversation as a tree: a thread, its messages, and its pins placed after the message they hang from."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .db import Database


@dataclass
class Node:
    thread: dict[str, Any]
    messages: list[dict[str, Any]]
    pins: dict[int, list[Node]] = field(default_factory=dict)  # anchored message id -> pins, oldest first
    depth: int = 0

    def walk(self) -> Iterator[tuple[Node, dict[str, Any] | None]]:
        """Tree order: (node, None) for a thread, then (node, message) per message, each message followed by the
        subtrees of the pins anchored to it."""
        yield self, None
        for message in self.messages:
            yield self, message
            for pin in self.pins.get(message["id"], []):
                yield from pin.walk()

    def nodes(self) -> Iterator[Node]:
        for node, message in self.walk():
            if message is None:
                yield node


async def load_tree(db: Database, thread_id: int, depth: int = 0) -> Node:
    thread = await db.get_thread(thread_id)
    node = Node(thread, await db.messages(thread_id), depth=depth)
    for pin in await db.list_pins(thread_id):
        child = await load_tree(db, pin["id"], depth + 1)
        node.pins.setdefault(pin["anchor"]["message_id"], []).append(child)
    return node
