"""The page's cycle-collector policy (web/py/heap.py) under CPython, with the real `gc` and a clock and timer of
our own: frames freeze what is alive at most once a second, the collector then does not see it, and once frames
have stopped for SWEEP_AFTER seconds one sweep collects the cycles that died while frozen."""

from __future__ import annotations

import gc
import pathlib
import sys
import weakref

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "web" / "py"))

import heap  # noqa: E402


class Timers:
    """A fake clock and setTimeout: `advance(s)` moves the clock and runs the callbacks that came due."""

    def __init__(self) -> None:
        self.now = 100.0
        self.pending: list[tuple[float, object]] = []

    def clock(self) -> float:
        return self.now

    def schedule(self, ms: int, callback) -> None:
        self.pending.append((self.now + ms / 1000, callback))

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [p for p in self.pending if p[0] <= self.now]
        self.pending = [p for p in self.pending if p[0] > self.now]
        for _, callback in sorted(due, key=lambda p: p[0]):
            callback()


class Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def timers():
    gc.unfreeze()
    yield Timers()
    gc.unfreeze()  # nothing of this test stays out of the collector's reach


def collector_sees(obj) -> bool:
    """Whether the collector's walks include `obj` (frozen objects are in no generation)."""
    return any(o is obj for o in gc.get_objects())


def test_a_frame_freezes_what_is_alive_at_most_once_a_second(timers):
    policy = heap.Heap(timers.schedule, timers.clock)
    before = Cycle()
    assert collector_sees(before)
    policy.after_frame()
    assert not collector_sees(before)
    fresh = Cycle()
    timers.advance(heap.FREEZE_EVERY / 2)
    policy.after_frame()
    assert collector_sees(fresh)  # too soon: nothing new frozen
    timers.advance(heap.FREEZE_EVERY / 2)
    policy.after_frame()
    assert not collector_sees(fresh)
    assert policy.sweeps == 0


def test_cycles_that_die_while_frozen_are_collected_once_frames_stop(timers):
    policy = heap.Heap(timers.schedule, timers.clock)
    doomed = Cycle()
    gone = weakref.ref(doomed)
    policy.after_frame()  # frozen while alive
    del doomed
    gc.collect()
    assert gone() is not None  # frozen: a full collection does not see it
    for _ in range(5):  # frames go on (an answer streams): no sweep while they do
        timers.advance(heap.SWEEP_AFTER * 0.6)
        policy.after_frame()
    assert policy.sweeps == 0 and gone() is not None
    timers.advance(heap.SWEEP_AFTER + 0.1)
    assert policy.sweeps == 1
    assert gone() is None
    assert gc.get_freeze_count() > 0  # what survived is frozen again
    assert len(timers.pending) == 0  # and nothing more is scheduled until the next frame
