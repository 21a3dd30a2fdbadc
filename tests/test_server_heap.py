"""server/heap.py: the server process's collector schedule, with Python's real `gc` (a short schedule)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from server import heap


class Node:
    pass


def older_garbage_cycle() -> weakref.ref:
    """A cycle that survives one young collection while referenced, and only then becomes garbage."""
    node = Node()
    node.self = node
    ref = weakref.ref(node)
    gc.collect(0)
    del node
    return ref


@pytest.fixture
def short_schedule(monkeypatch):
    monkeypatch.setattr(heap, "QUIET_CHECK_EVERY", 0.05)
    # Far above the 0.3 s waits before the "not yet" checks: room for a stall of a loaded CI box of over a second
    monkeypatch.setattr(heap, "BUSY_COLLECTION_EVERY", 1.5)
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()  # settle() froze the whole test process
    assert gc.get_threshold() == thresholds  # put back when the app stopped


async def test_young_cycles_go_at_once_and_older_ones_when_the_process_is_quiet(short_schedule):
    busy = True
    lifetime = heap.schedule(busy=lambda: busy)(None)
    try:
        await lifetime.__anext__()
        assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, heap.NEVER, heap.NEVER)
        young = Node()
        young.self = young
        young_ref = weakref.ref(young)
        del young
        older_ref = older_garbage_cycle()
        keep = [[] for _ in range(5 * heap.YOUNG_THRESHOLD)]  # several young collections happen on the way
        assert young_ref() is None  # freed by a young collection
        del keep
        await asyncio.sleep(0.3)  # checked ~6 times, busy each time
        assert older_ref() is not None
        busy = False
        await asyncio.sleep(0.2)
        assert older_ref() is None  # collected at the first check that found the process quiet
    finally:
        await lifetime.aclose()


async def test_under_constant_load_older_cycles_still_go_every_busy_period(short_schedule):
    lifetime = heap.schedule(busy=lambda: True)(None)
    try:
        await lifetime.__anext__()
        older_ref = older_garbage_cycle()
        await asyncio.sleep(0.3)
        assert older_ref() is not None
        await asyncio.sleep(heap.BUSY_COLLECTION_EVERY)
        assert older_ref() is None
    finally:
        await lifetime.aclose()
