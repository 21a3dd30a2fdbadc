"""Resume in the page: a reload, a dropped network or a second tab reattaches to the answer the server is still
writing (GET /api/threads/{id}/stream from the snapshot's event), and the text ends exactly as the upstream sent
it: no token twice, none missing. The app server runs with `--detach-grace 30` (tests/browser/conftest.py).

All tests of this module share one booted page (`app_page`); a second tab is a new page of the same context.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.browser.helpers import (
    answer_text,
    boot,
    directive,
    new_thread,
    panel,
    pin,
    send,
    tokens,
    wait_answer,
    wait_ready,
    wait_text_contains,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

LONG_MS = 60_000  # a long answer on a busy 2-core machine, plus a reload


async def open_second_tab(page, app_server, tid: int):
    """A second tab of the same browser showing thread `tid` (booted before, so that it opens within the answer)."""
    other = await page.context.new_page()
    await other.goto(f"{app_server.url}/#t={tid}")
    await other.reload()  # a hash change alone does not load the page again
    await wait_ready(other)
    return other


async def saved_answer(app_server, tid: int) -> dict:
    """The thread's last message once the server no longer writes it."""
    for _ in range(100):
        detail = app_server.get(f"/api/threads/{tid}")
        if not detail["streaming"]:
            return detail["messages"][-1]
        await asyncio.sleep(0.2)
    raise AssertionError("the answer did not end")


async def test_a_reload_goes_on_in_place(app_page, app_server):
    page = app_page
    tid = await new_thread(page)
    await send(page, tid, "Long " + directive("R", 300, delay_ms=60))
    await wait_text_contains(page, tid, "R5 ")
    await page.reload()
    await wait_ready(page)
    await wait_answer(page, tid, "streaming", timeout=LONG_MS)  # the snapshot, followed live
    shown = await answer_text(page, tid)
    assert shown.startswith(tokens("R", 6)) and len(shown) < len(tokens("R", 300))
    await wait_answer(page, tid, "complete", timeout=LONG_MS)
    assert await answer_text(page, tid) == tokens("R", 300)
    saved = await saved_answer(app_server, tid)
    assert (saved["status"], saved["content"]) == ("complete", tokens("R", 300))
    assert len(await panel(page, tid).locator(".msg").all()) == 2  # no answer shown twice
    assert page.problems == []


async def test_offline_for_three_seconds_reconnects(app_page, app_server):
    page = app_page
    tid = await new_thread(page)
    await send(page, tid, "Long " + directive("O", 300, delay_ms=40))
    await wait_text_contains(page, tid, "O5 ")
    await page.context.set_offline(True)
    # Chromium's offline emulation fails new requests but leaves an established stream open: cut it too, as a
    # real network drop does (its controller, not the page's Stop: a failed read, not an abort of ours)
    await page.evaluate("(tid) => pinchat.pyodide.runPython("
                        "`import main; main.APP.streams.live[${tid}].request.controller.abort()`)", tid)
    try:
        await page.wait_for_function(
            "(tid) => document.querySelector(`section.panel[data-thread-id='${tid}'] .panel-state`)"
            ".textContent === 'reconnecting…'", arg=tid, timeout=10_000)
        await asyncio.sleep(3)
    finally:
        await page.context.set_offline(False)
    await wait_answer(page, tid, "complete", timeout=LONG_MS)
    assert await answer_text(page, tid) == tokens("O", 300)
    await page.wait_for_function(  # "reconnecting…" is gone
        "(tid) => document.querySelector(`section.panel[data-thread-id='${tid}'] .panel-state`).textContent === ''",
        arg=tid, timeout=10_000)
    saved = await saved_answer(app_server, tid)
    assert (saved["status"], saved["content"]) == ("complete", tokens("O", 300))


async def test_a_second_tab_sees_the_tokens_arrive(app_page, app_server):
    page = app_page
    tid = await new_thread(page)
    warm = await page.context.new_page()
    await boot(warm, app_server.url)  # Pyodide in the browser's cache: the second tab opens in a few seconds
    await warm.close()
    await send(page, tid, "Long " + directive("T", 300, delay_ms=60))
    await wait_text_contains(page, tid, "T3 ")
    other = await open_second_tab(page, app_server, tid)
    try:
        await wait_answer(other, tid, "streaming", timeout=LONG_MS)
        shown = len((await answer_text(other, tid)).split())  # the snapshot: tokens so far
        assert shown < 300, "the second tab opened after the answer ended"
        await wait_text_contains(other, tid, f"T{min(shown + 2, 299)} ", timeout=LONG_MS)  # then live tokens
        await wait_answer(other, tid, "complete", timeout=LONG_MS)
        await wait_answer(page, tid, "complete", timeout=LONG_MS)
        assert await answer_text(other, tid) == await answer_text(page, tid) == tokens("T", 300)
    finally:
        await other.close()


async def test_stop_in_one_tab_ends_the_answer_in_both(app_page, app_server):
    page = app_page
    tid = await new_thread(page)
    warm = await page.context.new_page()
    await boot(warm, app_server.url)  # Pyodide in the browser's cache: the second tab opens in a few seconds
    await warm.close()
    await send(page, tid, "Long " + directive("S", 300, delay_ms=60))
    await wait_text_contains(page, tid, "S3 ")
    other = await open_second_tab(page, app_server, tid)
    try:
        await wait_answer(other, tid, "streaming", timeout=LONG_MS)
        await wait_text_contains(other, tid, "S20 ", timeout=LONG_MS)
        await panel(other, tid).locator("[data-testid=stop]").click()
        await wait_answer(other, tid, "interrupted", timeout=LONG_MS)
        await wait_answer(page, tid, "interrupted", timeout=LONG_MS)
        saved = await saved_answer(app_server, tid)
        assert saved["status"] == "interrupted" and len(saved["content"]) < len(tokens("S", 300))
        assert await answer_text(other, tid) == await answer_text(page, tid) == saved["content"]
    finally:
        await other.close()


async def test_a_main_thread_and_two_pins_reattach_after_one_reload(app_page, app_server):
    page = app_page
    tid = await new_thread(page)
    await send(page, tid, "Words " + directive("W", 10))
    await wait_answer(page, tid, "complete")
    pin_a = await pin(page, tid, "W2 W3")
    pin_b = await pin(page, tid, "W6 W7")
    for thread_id, prefix in ((tid, "M"), (pin_a, "A"), (pin_b, "B")):
        await send(page, thread_id, "Long " + directive(prefix, 200, delay_ms=80))
    for thread_id, prefix in ((tid, "M"), (pin_a, "A"), (pin_b, "B")):
        await wait_text_contains(page, thread_id, f"{prefix}3 ")
    await page.reload()
    await wait_ready(page)
    for thread_id, prefix in ((tid, "M"), (pin_a, "A"), (pin_b, "B")):
        await wait_answer(page, thread_id, "complete", timeout=LONG_MS)
        assert await answer_text(page, thread_id) == tokens(prefix, 200)
        saved = await saved_answer(app_server, thread_id)
        assert (saved["status"], saved["content"]) == ("complete", tokens(prefix, 200))
