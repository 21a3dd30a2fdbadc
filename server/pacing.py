"""Start pacing: a new answer starts when the event loop has caught up, so the answers already streaming keep pace.

Starting an answer costs this process ~9 ms of CPU (the request, the database, LiteLLM's Router up to the first
chunk) where a streamed token costs ~0.25 ms (bench/README.md). When many chats start at once (a team after a
meeting, a script, the bench's 100 starts in a second), their starts fill the loop's queue ahead of every running
answer's tokens, and all of them come late together. Here starts pass one at a time, each once a turn of the loop
took less than `max_lag` (the loop is not behind), or at the latest `max_wait` after the request came, so that a
saturated process still starts every chat, in the order they came.

Per process, like the loop it watches: several worker processes each pace their own starts.
"""

from __future__ import annotations

import asyncio


class StartPacer:
    def __init__(self, max_lag: float = 0.002, max_wait: float = 1.0) -> None:
        self.max_lag = max_lag  # seconds one turn of an idle loop never takes (~0.05 ms); a busy one does
        self.max_wait = max_wait
        self._line = asyncio.Lock()  # first come, first served
        self.waiting = 0  # starts in line: admission counts them with the running answers

    async def turn(self) -> None:
        """Return when this start may go on: at once on an idle loop (one turn of it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait  # from arrival, not from the head of the line
        self.waiting += 1
        try:
            async with self._line:
                while True:
                    before = loop.time()
                    await asyncio.sleep(0)  # back after the callbacks ready now, the streams' tokens among them
                    now = loop.time()
                    if now - before < self.max_lag or now >= deadline:
                        return
        finally:
            self.waiting -= 1
