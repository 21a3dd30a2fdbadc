"""Streaming in the page: incremental tokens, batching, main thread + two pins at once, Stop, Esc, reload, XSS.

All tests of this module share one booted page (`app_page`); each works in threads it creates itself.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.browser.helpers import (
    ARTIFACTS,
    PINS,
    answer_text,
    answers,
    directive,
    new_thread,
    panel,
    pin,
    sample_lengths,
    send,
    tokens,
    wait_answer,
    wait_ready,
    wait_text_contains,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_tokens_appear_incrementally(app_page, app_server):
    page = app_page
    tid = await new_thread(page)
    await send(page, tid, "Count slowly " + directive("S", 40, delay_ms=50))
    samples = sample_lengths(page, [tid], interval=0.1)
    samples = await samples
    streaming_lengths = [length for s in samples for status, length in [s[tid]] if status == "streaming"]
    distinct = sorted(set(streaming_lengths))
    assert len(distinct) >= 5, f"text did not grow in steps while streaming: {samples}"
    assert streaming_lengths == sorted(streaming_lengths), "shown text shrank during the stream"
    final = await wait_answer(page, tid, "complete")
    assert await answer_text(page, tid) == tokens("S", 40)
    assert await final.get_attribute("data-message-id")
    # The user's message got its server id too, and the page agrees with the database.
    detail = app_server.get(f"/api/threads/{tid}")
    assert [(m["role"], m["status"]) for m in detail["messages"]] == [("user", "complete"), ("assistant", "complete")]
    assert detail["messages"][1]["content"] == tokens("S", 40)
    assert await final.get_attribute("data-message-id") == str(detail["messages"][1]["id"])


async def test_enter_sends_and_shift_enter_is_a_new_line(app_page, app_server):
    page = app_page
    tid = await new_thread(page)
    box = panel(page, tid).locator("[data-testid=composer]")
    await box.click()
    await box.type("first line")
    await box.press("Shift+Enter")
    await box.type("second line " + directive("Z", 2))
    assert await panel(page, tid).locator(".msg").count() == 0
    await box.press("Enter")
    await wait_answer(page, tid, "complete")
    assert await box.input_value() == ""
    sent = app_server.get(f"/api/threads/{tid}")["messages"][0]["content"]
    assert sent == "first line\nsecond line " + directive("Z", 2)


async def test_rendering_is_batched_per_animation_frame(app_page):
    page = app_page
    tid = await new_thread(page)
    renders_before = int(await panel(page, tid).get_attribute("data-renders"))
    await send(page, tid, "Firehose " + directive("F", 600))
    await wait_answer(page, tid, "complete")
    assert await answer_text(page, tid) == tokens("F", 600)
    renders = int(await panel(page, tid).get_attribute("data-renders")) - renders_before
    assert renders < 150, f"{renders} renders for 600 tokens: not batched per frame"


async def test_main_thread_and_two_pins_stream_at_once(app_page, app_server):
    page = app_page
    tid = await new_thread(page)
    # Non-BMP emoji before the pinned spans: the anchor offsets are code points (Python) and the DOM counts
    # UTF-16 units; the server checks that content[start:end] is the selected text.
    await send(page, tid, "Give me words, 中文 and emoji 🙂 " + directive("W🙂", 12))
    await wait_answer(page, tid, "complete")
    pin_a = await pin(page, tid, "W🙂2 W🙂3")
    pin_b = await pin(page, tid, "W🙂7 W🙂8 W🙂9")
    assert await page.locator(PINS).count() == 2
    marks = panel(page, tid).locator("mark.pin-anchor")
    assert await marks.all_inner_texts() == ["W🙂2 W🙂3", "W🙂7 W🙂8 W🙂9"]

    await send(page, tid, "Main again " + directive("M", 40, delay_ms=60))
    await send(page, pin_a, "About W2 " + directive("A", 30, delay_ms=70), enter=False)
    await send(page, pin_b, "À propos de W7, 説明して " + directive("B文", 35, delay_ms=55))
    await wait_text_contains(page, tid, "M3 ")
    await wait_text_contains(page, pin_a, "A3 ")
    await wait_text_contains(page, pin_b, "B文3 ")
    samples = await sample_lengths(page, [tid, pin_a, pin_b], interval=0.1)  # before the (slow) screenshot
    await page.screenshot(path=str(ARTIFACTS / "main-and-two-pins.png"))
    all_streaming = [s for s in samples if all(status == "streaming" for status, _ in s.values())]
    assert len(all_streaming) >= 3, f"the three answers did not stream at the same time: {samples}"
    # each grew while the others were streaming too
    for thread in (tid, pin_a, pin_b):
        assert len({s[thread][1] for s in all_streaming}) >= 2

    for thread, prefix, count in ((tid, "M", 40), (pin_a, "A", 30), (pin_b, "B文", 35)):
        await wait_answer(page, thread, "complete")
        assert await answer_text(page, thread) == tokens(prefix, count), f"thread {thread} got mixed text"
        saved = app_server.get(f"/api/threads/{thread}")["messages"][-1]
        assert saved["status"] == "complete" and saved["content"] == tokens(prefix, count)
    pins = app_server.get(f"/api/threads/{tid}")["pins"]
    assert sorted((p["id"], p["anchor"]["text"]) for p in pins) == [(pin_a, "W🙂2 W🙂3"), (pin_b, "W🙂7 W🙂8 W🙂9")]
    await page.screenshot(path=str(ARTIFACTS / "main-and-two-pins-done.png"))


async def stop_and_wait(page, tid: int):
    """Press the panel's Stop; the answer, once it shows as interrupted."""
    await panel(page, tid).locator("[data-testid=stop]").click()
    return await wait_answer(page, tid, "interrupted")


async def test_stop_keeps_the_partial_answer_marked_interrupted(app_page, app_server):
    page = app_page
    tid = await new_thread(page)
    await send(page, tid, "Long one " + directive("L", 200, delay_ms=40))
    await wait_text_contains(page, tid, "L5 ")
    answer = await stop_and_wait(page, tid)
    shown = await answer_text(page, tid)
    assert shown.startswith(tokens("L", 6)) and len(shown) < len(tokens("L", 200))
    assert "interrupted" in await answer.inner_text()
    saved = app_server.get(f"/api/threads/{tid}")["messages"][-1]
    assert saved["status"] == "interrupted"
    assert saved["content"] == shown, "the page and the database disagree on the partial answer"
    # The thread is usable again at once.
    await send(page, tid, "Next " + directive("N", 3))
    await wait_answer(page, tid, "complete")
    assert await answer_text(page, tid) == tokens("N", 3)


async def test_an_answer_stopped_before_its_first_token_says_so(app_page, app_server):
    """Stop while the model has not written anything yet: the empty answer is kept as interrupted, and its badge
    says that it was stopped before any text (an empty bubble marked only "interrupted" read as a fault), also after
    a reload."""
    page = app_page
    tid = await new_thread(page)
    await send(page, tid, "Slow start " + directive("S", 3, first_delay_ms=8000))
    await wait_answer(page, tid, "streaming")
    answer = await stop_and_wait(page, tid)
    assert await answer.locator(".msg-badge").inner_text() == "stopped before any text"
    assert await answer_text(page, tid) == ""
    assert app_server.get(f"/api/threads/{tid}")["messages"][-1]["content"] == ""
    await page.reload()
    await wait_ready(page)
    answer = await wait_answer(page, tid, "interrupted")
    assert await answer.locator(".msg-badge").inner_text() == "stopped before any text"


async def test_an_answer_cut_at_the_token_limit_is_marked(app_page):
    """An answer that stopped at the model's token limit (finish reason "length") ends mid-sentence: its badge
    says it was cut off, while it streams in and after a reload; a whole answer has no badge."""
    page = app_page
    tid = await new_thread(page)
    await send(page, tid, "Long " + directive("C", 8, finish="length"))
    answer = await wait_answer(page, tid, "complete")
    assert await answer.locator(".msg-badge").inner_text() == "cut off: length limit"
    await send(page, tid, "Short " + directive("W", 3))
    whole = await wait_answer(page, tid, "complete", index=1)  # the second answer (the first is complete too)
    assert await whole.locator(".msg-badge").is_hidden()
    await page.reload()
    await wait_ready(page)
    await wait_answer(page, tid, "complete", index=1)
    first = await wait_answer(page, tid, "complete", index=0)
    assert await first.locator(".msg-badge").inner_text() == "cut off: length limit"
    assert await answers(page, tid).nth(1).locator(".msg-badge").is_hidden()


async def test_escape_stops_only_its_own_thread(app_page, app_server):
    page = app_page
    tid = await new_thread(page)
    await send(page, tid, "Words " + directive("E", 4))
    await wait_answer(page, tid, "complete")
    pin_id = await pin(page, tid, "E1 E2")
    await send(page, tid, "Main " + directive("K", 80, delay_ms=40))
    await send(page, pin_id, "Pin " + directive("Q", 80, delay_ms=40))
    await wait_text_contains(page, pin_id, "Q3 ")
    await wait_text_contains(page, tid, "K3 ")
    await panel(page, pin_id).locator("[data-testid=composer]").press("Escape")
    await wait_answer(page, pin_id, "interrupted")
    status = await panel(page, tid).locator(".msg[data-role=assistant]").last.get_attribute("data-status")
    assert status == "streaming", "Esc in the pin must not stop the main thread"
    await panel(page, tid).locator("[data-testid=stop]").click()
    await wait_answer(page, tid, "interrupted")
    assert app_server.get(f"/api/threads/{pin_id}")["messages"][-1]["status"] == "interrupted"


async def test_model_text_is_inserted_as_text(app_page):
    page = app_page
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))
    payload = "<img/src=x/onerror=alert(1)><script>alert(2)</script><b>bold</b>"
    tid = await new_thread(page)
    await send(page, tid, "Echo " + directive(payload, 3))
    await wait_answer(page, tid, "complete")
    assert await answer_text(page, tid) == tokens(payload, 3)
    injected = await page.evaluate(
        "() => document.querySelectorAll('.messages img, .messages script, .messages b').length")
    assert injected == 0
    await page.wait_for_timeout(300)  # an onerror handler would have fired by now
    assert dialogs == []
    assert page.problems == []


async def test_reload_restores_history_and_pins(app_page, app_server):
    page = app_page
    tid = await new_thread(page)
    await send(page, tid, "First " + directive("H", 10))
    await wait_answer(page, tid, "complete")
    pin_id = await pin(page, tid, "H4 H5")
    await send(page, pin_id, "Pin q " + directive("P", 4))
    await wait_answer(page, pin_id, "complete")
    await send(page, tid, "Second " + directive("I", 100, delay_ms=40))
    await wait_text_contains(page, tid, "I2 ")
    await panel(page, tid).locator("[data-testid=stop]").click()
    await wait_answer(page, tid, "interrupted")
    partial = await answer_text(page, tid)

    await page.reload()
    await wait_ready(page)
    await wait_answer(page, tid, "interrupted", index=1)
    first = await wait_answer(page, tid, "complete", index=0)
    assert await answer_text(page, tid, 0) == tokens("H", 10)
    assert await answer_text(page, tid, 1) == partial
    assert await first.locator("mark.pin-anchor").inner_text() == "H4 H5"
    roles = await panel(page, tid).locator(".msg").evaluate_all("els => els.map(e => e.dataset.role)")
    assert roles == ["user", "assistant", "user", "assistant"]
    # The pin panel was open before the reload and is open again, with its history.
    await wait_answer(page, pin_id, "complete")
    assert await answer_text(page, pin_id) == tokens("P", 4)
    # Closing it and clicking the highlighted span reopens it.
    await panel(page, pin_id).locator("[data-testid=close-pin]").click()
    await panel(page, pin_id).wait_for(state="detached")
    await first.locator("mark.pin-anchor").click()
    await wait_answer(page, pin_id, "complete")
    # The sidebar lists the thread; opening another and coming back shows the same history.
    await page.locator(f".thread-item[data-thread-id='{tid}']").wait_for()


async def test_no_proxy_leak_per_message(app_page):
    page = app_page
    tid = await new_thread(page)
    await send(page, tid, "Warm up " + directive("U", 5))
    await wait_answer(page, tid, "complete")
    await page.evaluate("() => pinchat.pyodide._module.enable_pyproxy_allocation_tracing()")
    try:
        base = await page.evaluate("() => pinchat.pyodide._module.pyproxy_alloc_map.size")
        for i in range(5):
            await send(page, tid, f"Again {i} " + directive(f"R{i}x", 20, delay_ms=2))
            await wait_answer(page, tid, "complete")
        await page.wait_for_timeout(100)  # let the last animation frame run
        live = await page.evaluate("() => pinchat.pyodide._module.pyproxy_alloc_map.size")
        assert live - base <= 1, f"{live - base} PyProxies left alive after 5 messages"
    finally:
        await page.evaluate("() => pinchat.pyodide._module.disable_pyproxy_allocation_tracing()")


async def test_a_finished_answer_is_kept_out_of_the_cycle_collectors_walks(app_page):
    """web/py/heap.py through the view: after a frame, what is alive is frozen (at most once a second), so Python's
    collector no longer walks a finished answer's blocks at every pass (in a long answer that walk took 131 ms)."""
    page = app_page
    await page.wait_for_selector("html[data-renderer=warm]", state="attached")  # its one freeze of the start-up heap
    tid = await new_thread(page)
    await send(page, tid, "Blocks " + directive("G", 50))
    await wait_answer(page, tid, "complete")
    seen = f"""
import gc, main
answer = [v for v in main.APP.view.panels[{tid}].messages.values() if v.md is not None and v.md.entries][-1]
node = answer.md.entries[0].block.node
any(o is node for o in gc.get_objects())
"""
    await page.wait_for_timeout(1100)  # a second after the last freeze: the next frame freezes again
    await page.evaluate("pinchat.pyodide.runPython('import main; main.APP.view.schedule()')")
    await page.wait_for_timeout(200)
    assert await page.evaluate("(code) => pinchat.pyodide.runPython(code)", seen) is False
