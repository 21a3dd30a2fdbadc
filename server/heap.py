"""When the server process's cyclic garbage collector runs: never for long while answers stream.

Every collection pauses every stream for as long as it walks the objects it looks at. Two kinds of objects make
those walks long (bench/README.md, "The garbage collector's schedule"):
- what start-up loads (LiteLLM and its provider SDKs: ~400k objects, alive for the whole process): frozen once
  started (`gc.freeze()`), so no collection walks them again;
- what a running answer keeps until it ends (LiteLLM's stream wrapper keeps every chunk of the answer for its
  logging and usage): at 100 streams a walk of it takes 40-130 ms, and Python's own schedule walked it every few
  seconds (whenever enough of it had been promoted to the older generations).
So only the young generation is collected as Python goes (short-lived cycles, a few ms), and everything older by
`collect_when_quiet`: as soon as no answer is streaming, or every BUSY_COLLECTION_EVERY seconds under constant
load. A cycle that outlives one young collection waits that long to be freed (under constant load at 100 streams,
~3,000 objects per 30 s); objects without cycles are freed at once by reference counting, as always.

Per process: a second worker process has its own collector and its own schedule, nothing shared. Measured on
CPython 3.11's generational collector (the one CI and `just setup` use).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable

YOUNG_THRESHOLD = 10_000  # allocations between young collections: per-token objects mostly die before one
NEVER = 2**30  # a count of young collections that never comes: the older generations wait for the schedule
QUIET_CHECK_EVERY = 10.0  # seconds between looks at whether the process is quiet
BUSY_COLLECTION_EVERY = 300.0  # seconds: the longest the older generations wait under constant load


def settle() -> None:
    """Freeze what start-up left alive and collect only the young generation from now on."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, NEVER, NEVER)


async def collect_when_quiet(busy: Callable[[], bool]) -> None:
    last = time.monotonic()
    while True:
        await asyncio.sleep(QUIET_CHECK_EVERY)
        if not busy() or time.monotonic() - last >= BUSY_COLLECTION_EVERY:
            gc.collect()
            last = time.monotonic()


def schedule(busy: Callable[[], bool]):
    """An aiohttp cleanup context: `settle()` after the app's own start-up, then `collect_when_quiet(busy)` until
    the app stops, when Python's thresholds are put back. `busy()`: is an answer streaming now?"""

    async def lifetime(_app) -> AsyncIterator[None]:
        thresholds = gc.get_threshold()
        settle()
        task = asyncio.create_task(collect_when_quiet(busy))
        try:
            yield
        finally:
            task.cancel()
            gc.set_threshold(*thresholds)

    return lifetime
