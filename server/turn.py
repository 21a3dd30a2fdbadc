"""A turn: reserve the thread, build what the model reads, commit and begin the answer; background follow-ups
run when it is saved (Registry.on_complete -> Utility). Routes validate and call this; a test can drive it
without HTTP.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from litellm import Router

from . import merge
from .context import Budget, build_context
from .db import Database
from .generation import Generation, Registry, Source, chat_source
from .tree import Node
from .utility import fallback_title


class Turns:
    def __init__(self, db: Database, registry: Registry, router: Router, budget: Budget) -> None:
        self.db = db
        self.registry = registry
        self.router = router
        self.budget = budget

    async def chat(self, thread: dict[str, Any], message: str) -> Generation:
        """Answer `message` in `thread`. Raises ThreadBusy when the thread is already answering."""
        async def begin(generation: Generation) -> None:
            if thread["title"] is None:  # stands until (unless) the model gives a better one
                await self.db.set_title(thread["id"], fallback_title(message), "first_message",
                                        unless=("user", "model"))
            messages = await build_context(self.db, thread, message, self.budget)
            await generation.begin(message, chat_source(self.router, messages))

        return await self._start(thread["id"], begin)

    async def merge(self, thread: dict[str, Any], tree: Node, chosen: list[int], fmt: str,
                    instruction: str | None) -> Generation:
        """A merged write-up of the `chosen` threads of `tree`, saved as a message of `thread`."""
        text = merge.transcript(tree, set(chosen))

        async def begin(generation: Generation) -> None:
            if fmt == "transcript":  # no model: the text is already here
                source: Source = functools.partial(merge.verbatim, text)
            else:
                messages = merge.merge_messages(text, fmt, instruction)
                # a large tree is cut to what the model can read
                messages[-1] = self.budget.truncate(messages[-1], self.budget.tokens - self.budget.size(messages[:-1]))
                source = chat_source(self.router, messages)
            await generation.begin(None, source, kind="merge", merged_ids=sorted(set(chosen)))

        return await self._start(thread["id"], begin)

    async def _start(self, thread_id: int, begin: Callable[[Generation], Awaitable[None]]) -> Generation:
        generation = self.registry.reserve(thread_id)
        try:
            await begin(generation)
        except BaseException:
            self.registry.finished(generation)
            raise
        return generation
