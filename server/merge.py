"""Merge: a write-up of chosen threads of one conversation tree, streamed like a chat answer.

`transcript` needs no model: the chosen threads in tree order, verbatim. The other formats send that transcript
to the chat model with an instruction for the format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .export import ROLE_LABEL
from .provider import Delta
from .tree import Node

FORMATS = {
    "summary": "Write a concise merged summary of these discussions: the questions explored and the conclusions, "
               "as connected prose.",
    "bullets": "Merge these discussions into a bulleted list of the key points, grouped by topic.",
    "structured": "Merge these discussions into a structured document with Markdown headings: Overview, "
                  "Key points, Open questions.",
    "transcript": None,
    "custom": None,  # the user's instruction
}
MAX_INSTRUCTION_CHARS = 4000


def transcript(root: Node, chosen: set[int]) -> str:
    """The chosen threads in tree order, verbatim, each under its title and anchored passage."""
    parts = []
    for node, message in root.walk():
        if node.thread["id"] not in chosen:
            continue
        if message is None:
            title = node.thread["title"] or ("Pin" if node.depth else "Main thread")
            header = f"## {title}"
            if node.thread["anchor"]:
                header += f'\n(on the passage: "{node.thread["anchor"]["text"]}")'
            parts.append(header)
        elif message["content"] and message["kind"] != "merge":
            parts.append(f"{ROLE_LABEL[message['role']]}: {message['content']}")
    return "\n\n".join(parts)


def merge_messages(text: str, fmt: str, instruction: str | None) -> list[dict[str, str]]:
    task = instruction if fmt == "custom" else FORMATS[fmt]
    return [
        {"role": "system", "content": "You merge branching conversations into one clear write-up."},
        {"role": "user", "content": f"{task}\n\nThe discussions:\n\n{text}"},
    ]


@asynccontextmanager
async def verbatim(text: str) -> AsyncIterator[AsyncIterator[Delta]]:
    """A stream source for text we already have (the transcript format): one delta, then the end."""
    async def deltas() -> AsyncIterator[Delta]:
        yield Delta(text=text, finish_reason="stop", model="transcript")

    yield deltas()
