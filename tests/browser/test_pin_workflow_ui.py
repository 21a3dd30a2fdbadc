"""The pin workflow in the page: the conversation tree with live streaming dots, breadcrumbs, titles without a
reload, starter questions, the hover card of an anchor, the merge dialog (stream, stop, copy, download, keep),
export / import and delete.

All tests of this module share one booted page and one conversation with nested pins (`conversation`), built once.
"""

from __future__ import annotations

import json

import httpx
import pytest
import pytest_asyncio

from tests.browser.conftest import VIEWPORT
from tests.browser.helpers import (
    ARTIFACTS,
    MAIN,
    PINS,
    answer_text,
    directive,
    new_thread,
    panel,
    pin,
    send,
    tokens,
    wait_answer,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")
TITLE = "Scripted Title"  # what the fake upstream answers to a title request


def node(page, thread_id: int):
    return page.locator(f"[data-testid=tree-node][data-thread-id='{thread_id}']")


async def tree_ids(page) -> list[tuple[int, int]]:
    return [tuple(map(int, pair)) for pair in await page.eval_on_selector_all(
        "[data-testid=tree-node]", "els => els.map(e => [e.dataset.threadId, e.dataset.depth])")]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def conversation(app_page):
    """A main thread, a pin on its answer, a pin on the pin's answer: {"main", "pin", "nested"}."""
    page = app_page
    tid = await new_thread(page)
    await send(page, tid, "Tell me things " + directive("T", 8))
    await wait_answer(page, tid, "complete")
    pin_a = await pin(page, tid, "T2 T3")
    await send(page, pin_a, "About it " + directive("U", 6))
    await wait_answer(page, pin_a, "complete")
    pin_b = await pin(page, pin_a, "U1 U2")
    await send(page, pin_b, "Deeper " + directive("D", 4))
    await wait_answer(page, pin_b, "complete")
    return {"main": tid, "pin": pin_a, "nested": pin_b}


async def test_tree_nests_pins_and_shows_live_streaming(app_page, conversation):
    page = app_page
    tid, pin_a, pin_b = conversation["main"], conversation["pin"], conversation["nested"]
    await page.wait_for_function("(n) => document.querySelectorAll('[data-testid=tree-node]').length === n", arg=3)
    assert await tree_ids(page) == [(tid, 0), (pin_a, 1), (pin_b, 2)]
    for thread in (tid, pin_a, pin_b):
        # a snapshot fetched just before an answer ended may still say "streaming": the 1 s watch corrects it
        await page.wait_for_selector(f"[data-testid=tree-node][data-thread-id='{thread}'][data-streaming=false]",
                                     timeout=5_000)

    await send(page, pin_b, "Slowly " + directive("V", 40, delay_ms=40))
    await page.wait_for_selector(f"[data-testid=tree-node][data-thread-id='{pin_b}'][data-streaming=true]")
    assert await node(page, tid).get_attribute("data-streaming") == "false"
    assert await node(page, pin_a).get_attribute("data-streaming") == "false"
    await wait_answer(page, pin_b, "complete")
    await page.wait_for_selector(f"[data-testid=tree-node][data-thread-id='{pin_b}'][data-streaming=false]")

    # Titles land in the background and show without a reload: sidebar, tree, panel headers, breadcrumbs.
    await page.wait_for_function(
        "([tid, title]) => document.querySelector(`.thread-item[data-thread-id='${tid}']`)?.textContent"
        ".includes(title)", arg=[tid, TITLE], timeout=10_000)
    for thread in (tid, pin_a, pin_b):
        await page.wait_for_function(
            "([tid, title]) => document.querySelector(`[data-testid=tree-node][data-thread-id='${tid}']`)"
            "?.textContent.includes(title)", arg=[thread, TITLE], timeout=10_000)
        await page.wait_for_function(
            "([tid, title]) => document.querySelector(`section.panel[data-thread-id='${tid}'] .panel-title`)"
            "?.textContent === title", arg=[thread, TITLE], timeout=10_000)

    # The breadcrumb of the nested pin: Main › Pin › this pin; its items open their thread.
    crumbs = panel(page, pin_b).locator("[data-testid=breadcrumb] .crumb")
    assert await crumbs.count() == 3
    assert await crumbs.last.inner_text() == TITLE
    await panel(page, pin_a).locator("[data-testid=close-pin]").click()
    await panel(page, pin_a).wait_for(state="detached")
    await panel(page, pin_b).locator(f"[data-testid=breadcrumb] button.crumb[data-thread-id='{pin_a}']").click()
    await panel(page, pin_a).wait_for()
    # A tree node opens its pin.
    await panel(page, pin_b).locator("[data-testid=close-pin]").click()
    await panel(page, pin_b).wait_for(state="detached")
    await node(page, pin_b).click()
    await panel(page, pin_b).wait_for()
    assert await panel(page, pin_b).locator(".msg[data-role=assistant]").count() == 2


async def test_hover_on_an_anchor_shows_the_pin(app_page, conversation):
    page = app_page
    tid, pin_a = conversation["main"], conversation["pin"]
    card = page.locator("[data-testid=pin-preview]")
    await panel(page, tid).locator(f"mark.pin-anchor[data-pin-id='{pin_a}']").hover()
    await card.wait_for(state="visible")
    await page.wait_for_function(
        "(title) => document.querySelector('[data-testid=pin-preview] .pin-preview-title').textContent === title",
        arg=TITLE, timeout=10_000)
    assert (await card.locator(".pin-preview-body").inner_text()).startswith("U0 U1 U2")
    await page.screenshot(path=str(ARTIFACTS / "pin-hover-preview.png"))
    await page.mouse.move(5, 890)
    await card.wait_for(state="hidden")


async def test_starter_questions_send_the_question(app_page, app_server, conversation):
    page = app_page
    tid = conversation["main"]
    new_pin = await pin(page, tid, "T6")
    buttons = panel(page, new_pin).locator("[data-testid=suggestion]")
    await buttons.first.wait_for()
    assert await buttons.count() >= 3
    # The generated questions join the fixed ones a moment later, without a reload.
    question = "What does this passage mean?"
    generated = panel(page, new_pin).locator(f"[data-testid=suggestion][data-question='{question}']")
    await generated.wait_for(timeout=10_000)
    await page.screenshot(path=str(ARTIFACTS / "pin-starter-questions.png"))
    await generated.click()
    await wait_answer(page, new_pin, "complete")
    await panel(page, new_pin).locator("[data-testid=suggestions]").wait_for(state="hidden")
    sent = app_server.get(f"/api/threads/{new_pin}")["messages"]
    assert sent[0]["role"] == "user" and sent[0]["content"] == question
    await panel(page, new_pin).locator("[data-testid=close-pin]").click()


async def test_merge_dialog_streams_saves_copies_downloads_and_keeps(app_page, app_server, conversation):
    page = app_page
    tid, pin_a, pin_b = conversation["main"], conversation["pin"], conversation["nested"]
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    # For the screenshot: the nested pin open beside the main thread (its breadcrumb shows the nesting).
    for thread in list(map(int, await page.eval_on_selector_all(PINS, "els => els.map(e => e.dataset.threadId)"))):
        await panel(page, thread).locator("[data-testid=close-pin]").click()
    await node(page, pin_b).click()
    await panel(page, pin_b).wait_for()
    await page.set_viewport_size({"width": 1720, "height": 960})
    await page.click("[data-testid=merge-open]")
    dialog = page.locator("[data-testid=merge-dialog]")
    await dialog.wait_for(state="visible")
    picks = dialog.locator("[data-testid=merge-pick]")
    ids = await picks.evaluate_all("els => els.map(e => Number(e.dataset.threadId))")
    assert ids[:3] == [tid, pin_a, pin_b] and all(await picks.evaluate_all("els => els.map(e => e.checked)"))
    for extra in ids[1:]:  # keep the main thread and the first pin
        if extra != pin_a:
            await dialog.locator(f"[data-testid=merge-pick][data-thread-id='{extra}']").uncheck()
    await dialog.locator("[data-testid=merge-format]").select_option("custom")
    await dialog.locator("[data-testid=merge-instruction]").fill("A study guide " + directive("G", 30, delay_ms=30))
    await dialog.locator("[data-testid=merge-start]").click()
    output = dialog.locator("[data-testid=merge-output]")
    await page.wait_for_selector("[data-testid=merge-output][data-status=streaming]")
    await page.wait_for_function(
        "() => document.querySelector('[data-testid=merge-output] .msg-body').textContent.includes('G3 ')")
    assert await node(page, tid).get_attribute("data-streaming") == "true", "the main thread is merging"
    await page.screenshot(path=str(ARTIFACTS / "merge-and-nested-pins.png"))
    await page.set_viewport_size(VIEWPORT)
    await page.wait_for_selector("[data-testid=merge-output][data-status=complete]", timeout=20_000)
    text = await output.locator(".msg-body").evaluate("e => e.textContent")
    assert text == tokens("G", 30)
    assert "Saved in the main thread" in await dialog.locator("[data-testid=merge-note]").inner_text()
    saved = app_server.get(f"/api/threads/{tid}")["messages"][-1]
    assert saved["kind"] == "merge" and saved["merged_ids"] == sorted([tid, pin_a])
    assert saved["status"] == "complete" and saved["content"] == text
    await page.wait_for_selector(f"[data-testid=tree-node][data-thread-id='{tid}'][data-streaming=false]")

    await dialog.locator("[data-testid=merge-copy]").click()
    await page.wait_for_function(
        "() => document.querySelector('[data-testid=merge-feedback]').textContent.length > 0")
    if "Copied" in await dialog.locator("[data-testid=merge-feedback]").inner_text():
        assert await page.evaluate("() => navigator.clipboard.readText()") == text
    async with page.expect_download() as info:
        await dialog.locator("[data-testid=merge-download]").click()
    download = await info.value
    assert download.suggested_filename == f"merge-{tid}.md"
    assert open(await download.path(), encoding="utf-8").read().strip() == text.strip()

    await dialog.locator("[data-testid=merge-keep]").click()
    await dialog.wait_for(state="hidden")
    merged = panel(page, tid).locator(f".msg[data-kind=merge][data-message-id='{saved['id']}']")
    await merged.wait_for()
    assert "Merged write-up of 2 threads" in await merged.inner_text()


async def test_stopping_a_merge_leaves_it_interrupted(app_page, app_server, conversation):
    page = app_page
    tid = conversation["main"]
    await page.click("[data-testid=merge-open]")
    dialog = page.locator("[data-testid=merge-dialog]")
    await dialog.wait_for(state="visible")
    await dialog.locator("[data-testid=merge-format]").select_option("custom")
    await dialog.locator("[data-testid=merge-instruction]").fill("Long " + directive("L", 300, delay_ms=30))
    await dialog.locator("[data-testid=merge-start]").click()
    await page.wait_for_function(
        "() => document.querySelector('[data-testid=merge-output] .msg-body')?.textContent.includes('L4 ')")
    await dialog.locator("[data-testid=merge-stop]").click()
    await page.wait_for_selector("[data-testid=merge-output][data-status=interrupted]")
    shown = await dialog.locator("[data-testid=merge-output] .msg-body").evaluate("e => e.textContent")
    assert shown.startswith(tokens("L", 5)) and len(shown) < len(tokens("L", 300))
    saved = app_server.get(f"/api/threads/{tid}")["messages"][-1]
    assert saved["kind"] == "merge" and saved["status"] == "interrupted" and saved["content"] == shown
    await dialog.locator("[data-testid=merge-close]").click()
    await dialog.wait_for(state="hidden")
    await panel(page, tid).locator(f".msg[data-kind=merge][data-message-id='{saved['id']}']"
                                   "[data-status=interrupted]").wait_for()
    # The main thread is free again.
    await send(page, tid, "After the merge " + directive("A", 3))
    await wait_answer(page, tid, "complete")
    assert await answer_text(page, tid) == tokens("A", 3)


async def test_export_markdown_then_json_import_opens_the_tree(app_page, app_server, conversation):
    page = app_page
    tid, pin_a, pin_b = conversation["main"], conversation["pin"], conversation["nested"]
    async with page.expect_download() as info:
        await page.click("[data-testid=export-md]")
    download = await info.value
    title = app_server.get(f"/api/threads/{tid}")["title"]  # the download is named after it
    assert download.suggested_filename == f"{'-'.join(title.lower().split())}-{tid}.md", title
    markdown = open(await download.path(), encoding="utf-8").read()
    for text in (tokens("T", 8), tokens("U", 6), tokens("D", 4), "Tell me things", "Deeper", "> U1 U2"):
        assert text.strip() in markdown
    assert markdown.index(tokens("T", 8).strip()) < markdown.index(tokens("U", 6).strip()) \
        < markdown.index(tokens("D", 4).strip())

    async with page.expect_download() as info:
        await page.click("[data-testid=export-json]")
    document = json.loads(open(await (await info.value).path(), encoding="utf-8").read())
    await page.set_input_files("[data-testid=import]", files=[{
        "name": "conversation.json", "mimeType": "application/json", "buffer": json.dumps(document).encode()}])
    await page.wait_for_function(
        "(tid) => document.querySelector('section.panel-main')?.dataset.threadId !== String(tid)", arg=tid)
    new_id = int(await page.locator(MAIN).get_attribute("data-thread-id"))
    await page.wait_for_function("() => document.querySelectorAll('[data-testid=tree-node]').length >= 4")
    depths = [depth for _, depth in await tree_ids(page)]
    assert depths[:3] == [0, 1, 2] and new_id not in (tid, pin_a, pin_b)
    await wait_answer(page, new_id, "complete", index=0)
    assert await answer_text(page, new_id, 0) == tokens("T", 8)
    assert await panel(page, new_id).locator(".msg[data-kind=merge]").count() == 2
    assert await page.locator(f".thread-item[data-thread-id='{new_id}']").count() == 1


async def test_delete_asks_then_deletes(app_page, app_server):
    page = app_page
    tid = await new_thread(page)
    await send(page, tid, "Short-lived " + directive("X", 2))
    await wait_answer(page, tid, "complete")
    button = page.locator(f"[data-testid=delete-thread][data-thread-id='{tid}']")
    await button.click()
    assert await button.get_attribute("data-confirm") == "true"
    assert await page.locator(f".thread-item[data-thread-id='{tid}']").count() == 1
    await button.click()
    await page.locator(f".thread-item[data-thread-id='{tid}']").wait_for(state="detached")
    assert httpx.get(f"{app_server.url}/api/threads/{tid}", headers=app_server.headers).status_code == 404
    assert await page.locator(f"section.panel[data-thread-id='{tid}']").count() == 0
    assert app_page.problems == []
