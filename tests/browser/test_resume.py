"""Resume in the page: a reload, a dropped network or a second tab reattaches to the answer the server is still
writing (GET /api/threads/{id}/stream from the snapshot's event), and the text ends exactly as the upstream sent
it: no token twice, none missing. The app server runs with `--detach-grace 30` (tests/browser/conftest.py).
Offline is only Playwright's `context.set_offline()` (see `go_offline_and_back`): the page reacts to the window's
`offline` / `online` events itself. tests/browser/test_resume_nginx.py runs the same through nginx over HTTP/2.

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
LONG_TOKENS = 500  # 30 s at 60 ms: a reload or a second tab (Pyodide boots again) lands within it, even when busy


async def open_second_tab(page, base: str, tid: int):
    """A second tab of the same browser showing thread `tid` (booted before, so that it opens within the answer)."""
    other = await page.context.new_page()
    await other.goto(f"{base}/#t={tid}")  # from about:blank: a full load (one boot, not two)
    await wait_ready(other)
    return other


async def warm_cache(page, base: str) -> None:
    """Boot the page once in another tab, so Pyodide is in the browser's cache and a second tab opens in seconds."""
    warm = await page.context.new_page()
    await boot(warm, base)
    await warm.close()


async def saved_answer(app_server, tid: int) -> dict:
    """The thread's last message once the server no longer writes it."""
    for _ in range(100):
        detail = app_server.get(f"/api/threads/{tid}")
        if not detail["streaming"]:
            return detail["messages"][-1]
        await asyncio.sleep(0.2)
    raise AssertionError("the answer did not end")


async def reload_goes_on_in_place(page, app_server, on_reload=None) -> None:
    """A reload in the middle of a long answer: the snapshot shows, is followed live and ends exactly."""
    tid = await new_thread(page)
    await send(page, tid, "Long " + directive("R", LONG_TOKENS, delay_ms=60))
    await wait_text_contains(page, tid, "R5 ")
    await page.reload()
    await wait_ready(page)
    if on_reload is not None:
        await on_reload(page)
    await wait_answer(page, tid, "streaming", timeout=LONG_MS)  # the snapshot, followed live
    shown = await answer_text(page, tid)
    assert shown.startswith(tokens("R", 6)) and len(shown) < len(tokens("R", LONG_TOKENS))
    await wait_answer(page, tid, "complete", timeout=LONG_MS)
    assert await answer_text(page, tid) == tokens("R", LONG_TOKENS)
    saved = await saved_answer(app_server, tid)
    assert (saved["status"], saved["content"]) == ("complete", tokens("R", LONG_TOKENS))
    assert len(await panel(page, tid).locator(".msg").all()) == 2  # no answer shown twice
    assert page.problems == []


async def test_a_reload_goes_on_in_place(app_page, app_server):
    await reload_goes_on_in_place(app_page, app_server)


async def go_offline_and_back(page, tid: int, seconds: float = 3.0) -> None:
    """The browser loses the network for `seconds` while thread `tid` streams: the page shows "reconnecting…".

    Only Playwright's `context.set_offline()`: in this Chromium (Debian's 156) it fires the window's `offline` /
    `online` events and flips `navigator.onLine` (checked by hand, no CDP needed), but it leaves an established
    fetch stream open (only new requests fail: the first version of this test aborted the fetch by hand). So the
    page itself drops its streams on `offline` (streams.py, api.Transport.on_network_change) and reattaches with
    Last-Event-ID on `online`."""
    await page.context.set_offline(True)
    try:
        await page.wait_for_function(
            "(tid) => document.querySelector(`section.panel[data-thread-id='${tid}'] .panel-state`)"
            ".textContent === 'reconnecting…'", arg=tid, timeout=10_000)
        assert await page.evaluate("navigator.onLine") is False
        await asyncio.sleep(seconds)
        assert await answer_status(page, tid) == "streaming"  # neither an error nor stopped meanwhile
    finally:
        await page.context.set_offline(False)


async def answer_status(page, tid: int) -> str | None:
    return await page.evaluate(
        "(tid) => { const all = document.querySelectorAll("
        "`section.panel[data-thread-id='${tid}'] .msg[data-role=assistant]`);"
        " return all.length ? all[all.length - 1].dataset.status : null; }", tid)


async def offline_reconnects(page, app_server) -> int:
    """Three seconds offline in the middle of an answer: "reconnecting…", then exactly the upstream's text, and the
    server wrote it to its end (no cancel was sent). Returns the thread's id."""
    tid = await new_thread(page)
    await send(page, tid, "Long " + directive("O", 300, delay_ms=40))
    await wait_text_contains(page, tid, "O5 ")
    await go_offline_and_back(page, tid)
    await wait_answer(page, tid, "complete", timeout=LONG_MS)
    assert await answer_text(page, tid) == tokens("O", 300)
    await page.wait_for_function(  # "reconnecting…" is gone
        "(tid) => document.querySelector(`section.panel[data-thread-id='${tid}'] .panel-state`).textContent === ''",
        arg=tid, timeout=10_000)
    saved = await saved_answer(app_server, tid)
    assert (saved["status"], saved["content"]) == ("complete", tokens("O", 300))
    return tid


async def test_offline_for_three_seconds_reconnects(app_page, app_server):
    await offline_reconnects(app_page, app_server)


async def second_tab_sees_the_tokens_arrive(page, base: str, on_open=None) -> None:
    """A second tab opened on a thread while its answer streams shows the snapshot, then the tokens as they come."""
    tid = await new_thread(page)
    await warm_cache(page, base)
    await send(page, tid, "Long " + directive("T", LONG_TOKENS, delay_ms=60))
    await wait_text_contains(page, tid, "T3 ")
    other = await open_second_tab(page, base, tid)
    try:
        if on_open is not None:
            await on_open(other)
        await wait_answer(other, tid, "streaming", timeout=LONG_MS)
        shown = len((await answer_text(other, tid)).split())  # the snapshot: tokens so far
        assert shown < LONG_TOKENS, "the second tab opened after the answer ended"
        await wait_text_contains(other, tid, f"T{min(shown + 2, LONG_TOKENS - 1)} ", timeout=LONG_MS)  # then live
        await wait_answer(other, tid, "complete", timeout=LONG_MS)
        await wait_answer(page, tid, "complete", timeout=LONG_MS)
        assert await answer_text(other, tid) == await answer_text(page, tid) == tokens("T", LONG_TOKENS)
    finally:
        await other.close()


async def test_a_second_tab_sees_the_tokens_arrive(app_page, app_server):
    await second_tab_sees_the_tokens_arrive(app_page, app_server.url)


async def stop_in_one_tab_ends_the_answer_in_both(page, base: str, app_server) -> None:
    """Stop in a second tab ends the answer in both tabs, with the same text as the server saved."""
    tid = await new_thread(page)
    await warm_cache(page, base)
    await send(page, tid, "Long " + directive("S", LONG_TOKENS, delay_ms=60))
    await wait_text_contains(page, tid, "S3 ")
    other = await open_second_tab(page, base, tid)
    try:
        await wait_answer(other, tid, "streaming", timeout=LONG_MS)
        await wait_text_contains(other, tid, "S20 ", timeout=LONG_MS)
        await panel(other, tid).locator("[data-testid=stop]").click()
        await wait_answer(other, tid, "interrupted", timeout=LONG_MS)
        await wait_answer(page, tid, "interrupted", timeout=LONG_MS)
        saved = await saved_answer(app_server, tid)
        assert saved["status"] == "interrupted" and len(saved["content"]) < len(tokens("S", LONG_TOKENS))
        assert await answer_text(other, tid) == await answer_text(page, tid) == saved["content"]
    finally:
        await other.close()


async def test_stop_in_one_tab_ends_the_answer_in_both(app_page, app_server):
    await stop_in_one_tab_ends_the_answer_in_both(app_page, app_server.url, app_server)


async def test_a_main_thread_and_two_pins_reattach_after_one_reload(app_page, app_server):
    await main_thread_and_two_pins_reattach_after_one_reload(app_page, app_server)


async def main_thread_and_two_pins_reattach_after_one_reload(page, app_server) -> None:
    """A main thread and two pins, all streaming, all follow on after one reload and end exactly."""
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
