"""Background model work: titles, starter questions for pins, rolling summaries.

These calls go through the same Router under the model group `utility` (or `chat` when models.yaml has none).
They never hold up a user's stream: they run as tracked background tasks after the answer is saved, their
failures are logged and never reach a chat, and shutdown cancels them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Coroutine
from typing import Any

from litellm import Router

from . import provider
from .db import Database

log = logging.getLogger(__name__)

FIXED_SUGGESTIONS = [
    "Can you explain this passage in simpler terms?",
    "Can you give a concrete example of this?",
    "Why does this matter here?",
]
MAX_TITLE_CHARS = 60
MAX_SUMMARY_TOKENS = 300


def fallback_title(first_message: str) -> str:
    """A plain title from the first user message: its first line, cut at a word boundary."""
    line = " ".join(first_message.split())
    if len(line) <= MAX_TITLE_CHARS:
        return line
    cut = line[:MAX_TITLE_CHARS].rsplit(" ", 1)[0]
    return (cut or line[:MAX_TITLE_CHARS]).rstrip(" ,.;:") + "…"


def clean_title(reply: str) -> str | None:
    """The model's title if it looks like one, else None (junk: empty, long, several lines of prose)."""
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    if not lines:
        return None
    title = re.sub(r"^(title\s*:\s*)", "", lines[0], flags=re.I).strip().strip("\"'*#` ").rstrip(".")
    if not title or len(title) > MAX_TITLE_CHARS or len(title.split()) > 10 or len(lines) > 2:
        return None
    return title


def parse_questions(reply: str, limit: int = 3) -> list[str]:
    questions = []
    for line in reply.splitlines():
        question = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip().strip("\"'")
        if question.endswith("?") and 8 <= len(question) <= 200 and question not in questions:
            questions.append(question)
    return questions[:limit]


class Utility:
    def __init__(self, db: Database, router: Router) -> None:
        self.db = db
        self.router = router
        self.group = provider.utility_group(router)
        self.tasks: set[asyncio.Task[Any]] = set()
        self._summary_locks: dict[int, asyncio.Lock] = {}  # one summary update per thread at a time

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(self._logged(coro, what), name=what)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _logged(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a utility failure is never a chat error
            log.warning("background %s failed: %s", what, exc)

    async def shutdown(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def ask(self, prompt: str, max_tokens: int) -> str:
        return await provider.complete(self.router, self.group, [{"role": "user", "content": prompt}], max_tokens)

    # what happens after events

    def after_answer(self, thread_id: int) -> None:
        self.spawn(self.update_summary(thread_id), f"summary of thread {thread_id}")
        self.spawn(self.generate_title(thread_id), f"title of thread {thread_id}")

    def after_pin_created(self, pin: dict[str, Any]) -> None:
        self.spawn(self.generate_suggestions(pin), f"suggestions for pin {pin['id']}")

    # the work

    async def generate_title(self, thread_id: int) -> None:
        thread = await self.db.get_thread(thread_id)
        if thread is None or thread["title_source"] in ("user", "model"):
            return
        messages = await self.db.messages(thread_id)
        first_question = next((m["content"] for m in messages if m["role"] == "user"), "")
        first_answer = next((m["content"] for m in messages if m["role"] == "assistant" and m["content"]), "")
        if thread["anchor"]:
            about = f'Passage: "{thread["anchor"]["text"]}"\nQuestion: {first_question}'
        else:
            about = f"Question: {first_question}\nAnswer: {first_answer[:1500]}"
        reply = await self.ask(
            "Write a short title (at most 6 words, no quotes, no final period) for this conversation. "
            f"Reply with the title only.\n\n{about}", max_tokens=24)
        title = clean_title(reply)
        if title:
            await self.db.set_title(thread_id, title, "model", unless=("user",))
        else:
            # its length only: the reply is model output about the conversation, which stays out of the log
            log.info("thread %s: the model's title (%d characters) looked like junk; the plain title stays",
                     thread_id, len(reply))

    async def generate_suggestions(self, pin: dict[str, Any]) -> None:
        reply = await self.ask(
            "A reader selected this passage and wants to ask about it. Write three short questions they might "
            f'ask, one per line, each ending with a question mark.\n\nPassage: "{pin["anchor"]["text"]}"',
            max_tokens=120)
        questions = [q for q in parse_questions(reply) if q not in FIXED_SUGGESTIONS]
        if questions:
            await self.db.set_suggestions(pin["id"], questions)

    async def update_summary(self, thread_id: int) -> None:
        async with self._summary_locks.setdefault(thread_id, asyncio.Lock()):
            await self._update_summary(thread_id)

    async def _update_summary(self, thread_id: int) -> None:
        thread = await self.db.get_thread(thread_id)
        if thread is None:
            return
        new = [m for m in await self.db.messages(thread_id)
               if m["id"] > (thread["summary_upto"] or 0) and m["content"] and m["status"] != "streaming"]
        if not new:
            return
        transcript = "\n".join(f"{m['role']}: {m['content']}" for m in new)
        previous = f"Summary so far:\n{thread['summary']}\n\n" if thread["summary"] else ""
        reply = await self.ask(
            f"{previous}New messages:\n{transcript}\n\nWrite an updated summary of the whole conversation in at "
            "most 120 words: the questions asked, the key facts and conclusions. Reply with the summary only.",
            max_tokens=MAX_SUMMARY_TOKENS)
        if reply.strip():
            await self.db.set_summary(thread_id, reply.strip(), new[-1]["id"])


def pin_suggestions(thread: dict[str, Any]) -> list[str]:
    """The starter questions a pin shows: the fixed ones at once, then the generated ones when they exist."""
    return FIXED_SUGGESTIONS + thread["generated_suggestions"] if thread["anchor"] else []
