"""The page's cycle collector, kept out of the frames of a streaming answer (plain Python, no `js`).

Python 3.14's collector pauses in proportion to the objects it tracks, and the page's objects are long-lived: the
blocks of every answer on screen (their Node trees, the text pieces the pins map through), the views. In Pyodide a
collection during an 8,000-token answer took up to 131 ms inside a frame (140,000 tracked objects), while the whole
answer left 48 objects of cyclic garbage (measured in bench's browser figure; bench/README.md). So:

* `after_frame()` (the view calls it after each frame it draws) freezes what is alive at most once every
  `FREEZE_EVERY` seconds: `gc.freeze()` moves it out of the collector's reach in O(1), and each collection then
  sees only the objects of the last second.
* Something frozen that becomes garbage later in a reference cycle (a closed panel with its views) is not
  collected while frozen. `SWEEP_AFTER` seconds after the last freeze (frames that go on freeze again and push it
  back: it comes when no answer streams and nobody uses the page), `sweep()` unfreezes everything, collects it in
  one pass (~0.3 s for that heap) and freezes what is left.
"""

from __future__ import annotations

import gc
import time

__all__ = ["Heap", "FREEZE_EVERY", "SWEEP_AFTER"]

FREEZE_EVERY = 1.0  # seconds between two freezes while frames run
SWEEP_AFTER = 10.0  # seconds without a frame before the frozen heap is collected once


class Heap:
    """`schedule(ms, callback)` runs a callback later (dom.after in the page); `clock` gives seconds."""

    def __init__(self, schedule, clock=time.monotonic) -> None:
        self.schedule = schedule
        self.clock = clock
        self.frozen_at: float | None = None  # when after_frame last froze
        self.sweep_pending = False
        self.sweeps = 0  # full collections made (tests read it)

    def after_frame(self) -> None:
        now = self.clock()
        if self.frozen_at is not None and now - self.frozen_at < FREEZE_EVERY:
            return
        gc.freeze()
        self.frozen_at = now
        if not self.sweep_pending:
            self.sweep_pending = True
            self.schedule(int(SWEEP_AFTER * 1000), self._sweep_when_quiet)

    def _sweep_when_quiet(self) -> None:
        wait = self.frozen_at + SWEEP_AFTER - self.clock()
        if wait > 0:  # frames ran since it was scheduled: look again once they have been quiet long enough
            self.schedule(int(wait * 1000) + 1, self._sweep_when_quiet)
            return
        self.sweep_pending = False
        self.sweep()

    def sweep(self) -> None:
        """Collect everything once, frozen or not, and freeze what survives."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.sweeps += 1
