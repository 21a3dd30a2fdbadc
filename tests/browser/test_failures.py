"""What the user sees when things go wrong: a busy thread (409), a failing provider, an unreachable server, a cut
stream; and closing the tab leaves its answers running on the server (a reload reattaches)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.browser.helpers import (
    answer_text,
    boot,
    directive,
    new_thread,
    panel,
    send,
    tokens,
    wait_answer,
    wait_ready,
    wait_text_contains,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_busy_thread_shows_the_409(app_page, app_server):
    """Another client answers in the thread: our question is refused (409) and nothing of it is lost: it comes back
    to the composer (and survives a reload), the page says why, and shows and follows the other answer instead."""
    page = app_page
    tid = await new_thread(page)
    async with app_server.client(timeout=30) as http:
        async with http.stream("POST", f"/api/threads/{tid}/chat",
                               json={"message": "elsewhere " + directive("X", 40, delay_ms=50)}) as other:
            assert other.status_code == 200
            await send(page, tid, "Me too")
            error = panel(page, tid).locator("[data-testid=thread-error]")
            await error.wait_for()
            assert "already answering" in await error.inner_text()
            composer = panel(page, tid).locator("[data-testid=composer]")
            assert await composer.input_value() == "Me too"
            user = panel(page, tid).locator(".msg[data-role=user]")
            await user.filter(has_text="elsewhere").wait_for()
            assert await user.count() == 1  # the other client's question; ours was not sent
            async for _ in other.aiter_bytes():
                pass
    await wait_answer(page, tid, "complete")
    assert await answer_text(page, tid) == tokens("X", 40)  # followed live to its end
    assert not await panel(page, tid).locator("[data-testid=thread-error]").is_visible()
    await page.reload()
    await wait_ready(page)
    await panel(page, tid).locator("[data-testid=composer]").wait_for()
    assert await panel(page, tid).locator("[data-testid=composer]").input_value() == "Me too"
    await panel(page, tid).locator("[data-testid=composer]").fill("")  # leave the shared page as it was


async def test_provider_error_is_shown_on_the_answer(app_page, app_server):
    page = app_page
    tid = await new_thread(page)
    await send(page, tid, "Fail " + directive("Z", 5, status=500))
    answer = await wait_answer(page, tid, "error")
    assert "failed" in (await answer.locator(".msg-error").inner_text()).lower()
    assert app_server.get(f"/api/threads/{tid}")["messages"][-1]["status"] == "error"
    # A provider that fails mid-answer keeps the partial text, marked as an error.
    await send(page, tid, "Half " + directive("Y", 6, fail_after=3))
    await wait_answer(page, tid, "error", index=1)  # not the first answer, which is in error already
    assert await answer_text(page, tid) == tokens("Y", 3)


async def test_unreachable_server_is_shown(app_page):
    page = app_page
    tid = await new_thread(page)
    await page.route("**/api/threads/*/chat", lambda route: route.abort("connectionrefused"))
    try:
        await send(page, tid, "Hello?")
        user = panel(page, tid).locator(".msg[data-role=user][data-status=error]")
        await user.wait_for()
        assert "Cannot reach the server" in await user.inner_text()
    finally:
        await page.unroute("**/api/threads/*/chat")
    # Once the server is back, the same thread works.
    await send(page, tid, "Now " + directive("O", 3))
    await wait_answer(page, tid, "complete")


async def test_cut_stream_is_reported_as_truncated(app_page):
    page = app_page
    tid = await new_thread(page)
    body = ('id: 1\ndata: {"type":"start","user_message_id":1,"message_id":2}\n\n'
            'id: 2\ndata: {"type":"token","text":"half an ans"}\n\nid: 3\ndata: {"type":"tok')

    async def cut(route):
        await route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)

    await page.route("**/api/threads/*/chat", cut)
    try:
        await send(page, tid, "Cut me")
        answer = await wait_answer(page, tid, "error")
        assert await answer_text(page, tid) == "half an ans"
        assert "ended before the answer was complete" in await answer.inner_text()
    finally:
        await page.unroute("**/api/threads/*/chat")


async def test_boot_with_the_api_down_says_so(fresh_page, app_server):
    page = fresh_page
    await page.route("**/api/threads", lambda route: route.abort("connectionrefused"))
    await boot(page, app_server)
    error = page.locator("[data-testid=global-error]")
    await error.wait_for()
    assert "Cannot reach the server" in await error.inner_text()
    await page.unroute("**/api/threads")
    await error.wait_for(state="hidden", timeout=10_000)  # the page retries by itself


async def test_closing_the_page_leaves_its_answer_running(fresh_page, app_server):
    """A closed tab is not a stop: the server writes the answer to its end (a reload would follow it)."""
    page = fresh_page
    await boot(page, app_server)
    tid = await new_thread(page)
    await send(page, tid, "Long " + directive("G", 80, delay_ms=40))
    await wait_text_contains(page, tid, "G3 ")
    await page.goto("about:blank")  # pagehide: the fetch is aborted, no cancel is sent
    deadline = time.monotonic() + 20
    while True:
        detail = app_server.get(f"/api/threads/{tid}")
        if not detail["streaming"]:
            break
        assert time.monotonic() < deadline, "the answer did not end"
        await asyncio.sleep(0.2)
    saved = detail["messages"][-1]
    assert (saved["status"], saved["content"]) == ("complete", tokens("G", 80))
