"""server/pacing.py: starts wait while the event loop is behind, on a real asyncio loop kept busy by a hog task.

Margins: each check's "not before" is what the pacer decides; each "by" bound is seconds wide, so a stall of a
loaded CI box cannot fail it, while a pacer that ignored the load (or its deadline) would.
"""

from __future__ import annotations

import asyncio
import time

from server.keys import PACER
from server.pacing import StartPacer
from tests.fake_upstream import Script


async def hog(seconds: float, slice_s: float = 0.005) -> None:
    """Keep the loop behind: a callback of `slice_s` of CPU in every turn for `seconds`, like a burst of starts."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(slice_s)
        await asyncio.sleep(0)


async def timed_turn(pacer: StartPacer, t0: float) -> float:
    await pacer.turn()
    return time.monotonic() - t0


async def test_an_idle_loop_lets_a_start_through_at_once():
    pacer = StartPacer(max_lag=0.002, max_wait=5.0)
    t0 = time.monotonic()
    for _ in range(20):
        await pacer.turn()
    assert time.monotonic() - t0 < 1.0  # 20 turns of an idle loop, not one max_wait


async def test_a_start_waits_until_the_loop_has_caught_up():
    pacer = StartPacer(max_lag=0.002, max_wait=5.0)
    t0 = time.monotonic()
    busy = asyncio.create_task(hog(0.4))
    await asyncio.sleep(0)  # the hog is running
    passed = await timed_turn(pacer, t0)
    await busy
    assert passed >= 0.4  # not while every turn of the loop took 5 ms
    assert passed < 3.0  # the first quiet turn after it, long before max_wait


async def test_a_saturated_loop_still_starts_every_chat_within_max_wait_of_its_arrival():
    pacer = StartPacer(max_lag=0.002, max_wait=0.3)
    t0 = time.monotonic()
    busy = asyncio.create_task(hog(4.0))
    await asyncio.sleep(0)
    waits = await asyncio.gather(*(timed_turn(pacer, t0) for _ in range(5)))
    assert busy.done() is False  # all five passed while the loop was still behind
    busy.cancel()
    # each from its own arrival: five in line do not wait 5 x 0.3 s
    assert all(0.3 <= wait < 1.2 for wait in waits), waits


async def test_starts_pass_one_at_a_time_in_the_order_they_came():
    pacer = StartPacer(max_lag=0.002, max_wait=5.0)
    passed: list[tuple[int, float]] = []
    work_done: dict[int, float] = {}

    async def start(n: int) -> None:
        await pacer.turn()
        passed.append((n, time.monotonic()))
        await hog(0.03, slice_s=0.004)  # the start's own work, over several turns of the loop
        work_done[n] = time.monotonic()

    busy = asyncio.create_task(hog(0.2))
    await asyncio.sleep(0)
    await asyncio.gather(*(start(n) for n in range(6)))
    await busy
    assert [n for n, _ in passed] == list(range(6))
    # the next in line went on only once the loop had caught up with the one before
    assert all(at >= work_done[n - 1] for n, at in passed[1:]), (passed, work_done)


async def test_a_chat_that_comes_while_the_loop_is_behind_starts_once_it_has_caught_up(app, fake):
    """Through the real app (routes.stream_answer): the answer's headers and `start` event wait for the loop."""
    app.client.server.app[PACER].max_wait = 60.0  # here the hog alone decides when the loop has caught up
    thread = await app.new_thread()
    fake.push(Script(tokens=["caught ", "up"]))
    t0 = time.monotonic()
    busy = asyncio.create_task(hog(1.5))
    await asyncio.sleep(0)
    resp = await app.post(f"/api/threads/{thread['id']}/chat", {"message": "hello"})  # back at the headers
    started = time.monotonic() - t0
    body = await resp.text()
    await busy
    assert resp.status == 200
    # Unpaced, the start's few dozen turns of 5 ms each would have it going within a fraction of the 1.5 s
    assert started >= 1.5
    assert '"caught ' in body and '"type":"done"' in body


async def test_starts_waiting_in_line_count_for_admission_so_a_full_house_is_told_at_once(make_app, settings, fake):
    app = await make_app(settings, max_generations=2)
    app.client.server.app[PACER].max_wait = 60.0
    threads = [await app.new_thread() for _ in range(3)]
    for _ in range(2):
        fake.push(Script(tokens=["in ", "time"]))
    answered: dict[int, tuple[int, float]] = {}

    async def chat(http, thread_id: int) -> None:
        resp = await http.post(f"/api/threads/{thread_id}/chat", json={"message": "hello"})
        answered[thread_id] = (resp.status_code, time.monotonic() - t0)

    t0 = time.monotonic()
    busy = asyncio.create_task(hog(1.5))
    async with app.http(timeout=30) as http:
        await asyncio.gather(*(chat(http, thread["id"]) for thread in threads))
    await busy
    statuses = sorted(status for status, _ in answered.values())
    assert statuses == [200, 200, 503]
    (refused_after,) = [after for status, after in answered.values() if status == 503]
    assert refused_after < 1.5  # while the two before it were still in line, not after its own turn
    assert len(app.rows("SELECT id FROM messages WHERE role = 'user'")) == 2
