"""The page as a new user meets it: it opens ready to type (a draft, or the latest thread, its composer focused),
the first message creates the thread, "+ New thread" leaves no empty threads behind, a message goes to the thread
shown, the URL hash opens what it names, and the layout holds at 1440 px (merge dialog + two pins) and at 390 px.

Screenshots go to test-artifacts/ (tests.browser.helpers.ARTIFACTS), with the other browser tests' ones.
"""

from __future__ import annotations

import pytest

from tests.browser.helpers import (
    ARTIFACTS,
    MAIN,
    PINS,
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
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

DRAFT = "section.panel-main[data-draft=true]"
FOCUSED_COMPOSER = """(scope) => { const box = document.activeElement;
    return !!box && box.dataset.testid === 'composer' && !box.disabled && !box.readOnly
        && !!box.closest(scope); }"""
NO_SIDEWAYS_SCROLL = """() => ({scroll: document.documentElement.scrollWidth, inner: innerWidth,
    body: document.body.scrollWidth,
    workspace: [...document.querySelectorAll('.workspace')].map(w => w.scrollWidth - w.clientWidth),
    wide: [...document.querySelectorAll('.workspace *')].filter(e => e.getBoundingClientRect().right > innerWidth)
        .slice(0, 5).map(e => `${e.tagName}.${e.className} ${e.getBoundingClientRect().right}`)})"""


async def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def thread_ids(app_server, token: str | None = None) -> list[int]:
    return [t["id"] for t in app_server.get("/api/threads", token)["threads"]]


async def assert_no_sideways_scroll(page) -> None:
    widths = await page.evaluate(NO_SIDEWAYS_SCROLL)
    assert widths["scroll"] <= widths["inner"] and widths["body"] <= widths["inner"], widths
    assert all(extra <= 0 for extra in widths["workspace"]), str(widths)


async def main_thread_other_than(page, previous: int) -> int:
    """Wait until the main panel shows a thread other than `previous`; its id."""
    await page.wait_for_function(
        "(prev) => { const p = document.querySelector('section.panel-main');"
        " return p && p.dataset.threadId && p.dataset.threadId !== String(prev); }", arg=previous)
    return int(await page.locator(MAIN).get_attribute("data-thread-id"))


async def new_context_page(browser, **options):
    context = await browser.new_context(**options)
    page = await context.new_page()
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(str(exc)))
    return page


async def test_a_new_user_lands_ready_to_type(browser, app_server):
    app_server.add_user("newcomer", "newcomer-password-1")
    token = app_server.user_token("newcomer")
    page = await new_context_page(browser, viewport={"width": 1440, "height": 900})
    try:
        await boot(page, app_server, "newcomer")
        await page.wait_for_selector(DRAFT)
        assert await page.wait_for_function(FOCUSED_COMPOSER, arg=DRAFT)
        assert await page.locator(MAIN).count() == 1
        await shot(page, "first-load-1440-light")
        assert thread_ids(app_server, token) == []

        await page.keyboard.type("Hello there " + directive("N", 5))
        await page.keyboard.press("Enter")
        await page.wait_for_selector(f"{MAIN}[data-thread-id]")
        tid = int(await page.locator(MAIN).get_attribute("data-thread-id"))
        await wait_answer(page, tid, "complete")
        assert await answer_text(page, tid) == tokens("N", 5)
        assert await page.locator(DRAFT).count() == 0
        await page.locator(f".thread-item[data-thread-id='{tid}']").wait_for()
        assert await page.evaluate("() => location.hash") == f"#t={tid}"
        assert thread_ids(app_server, token) == [tid]
        messages = app_server.get(f"/api/threads/{tid}", token)["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert messages[0]["content"] == "Hello there " + directive("N", 5)
        assert await page.wait_for_function(FOCUSED_COMPOSER, arg=f"{MAIN}[data-thread-id='{tid}']")

        # with a thread, a bare URL opens the most recent one, its composer focused
        await page.goto(app_server.url + "/")
        await wait_ready(page)
        await page.wait_for_selector(f"{MAIN}[data-thread-id='{tid}']")
        assert await page.wait_for_function(FOCUSED_COMPOSER, arg=f"{MAIN}[data-thread-id='{tid}']")
        assert page.problems == []
    finally:
        await page.context.close()


async def test_new_thread_opens_one_draft_and_leaves_no_empty_threads(app_page, app_server):
    page = app_page
    tid = await new_thread(page)
    await send(page, tid, "Something " + directive("O", 2))
    await wait_answer(page, tid, "complete")
    before = thread_ids(app_server)
    rows = await page.locator(".thread-item").count()
    for _ in range(3):
        await page.click("[data-testid=new-thread]")
    await page.wait_for_selector(DRAFT)
    assert await page.locator("section.panel-main").count() == 1
    assert await page.wait_for_function(FOCUSED_COMPOSER, arg=DRAFT)
    assert await page.evaluate("() => location.hash") == ""
    # typed, then left for another thread without sending: nothing is created
    await page.keyboard.type("never sent")
    await page.click(f".thread-item[data-thread-id='{tid}']")
    await page.wait_for_selector(f"{MAIN}[data-thread-id='{tid}']")
    assert await page.locator(DRAFT).count() == 0
    await page.click("[data-testid=new-thread]")
    await page.wait_for_selector(DRAFT)
    box = page.locator(f"{DRAFT} [data-testid=composer]")
    assert await box.input_value() == "never sent"  # kept for the next draft (unsent.py), still not created
    await box.fill("")
    await page.wait_for_timeout(300)  # the list refresh a draft starts
    assert await page.locator(".thread-item").count() == rows
    assert thread_ids(app_server) == before
    assert page.problems == []


async def test_unsent_text_survives_a_reload(app_page, app_server):
    """A composer's text not sent yet comes back after a reload (the tab's sessionStorage, per user and thread),
    a sent message leaves nothing behind, and a reload while writing a new thread's first message opens that draft."""
    page = app_page
    tid = await new_thread(page)
    composer = f"{MAIN}[data-thread-id='{tid}'] [data-testid=composer]"
    await page.locator(composer).fill("half a thought")
    await page.reload()
    await wait_ready(page)
    assert await page.locator(composer).input_value() == "half a thought"
    await send(page, tid, "Sent now " + directive("W", 2))
    await wait_answer(page, tid, "complete")
    await page.reload()
    await wait_ready(page)
    assert await page.locator(composer).input_value() == ""
    assert app_server.get(f"/api/threads/{tid}")["messages"][0]["content"].startswith("Sent now ")

    await page.click("[data-testid=new-thread]")
    await page.wait_for_selector(DRAFT)
    await page.keyboard.type("a new idea")
    before = thread_ids(app_server)
    await page.reload()
    await wait_ready(page)
    box = page.locator(f"{DRAFT} [data-testid=composer]")
    await box.wait_for()
    assert await box.input_value() == "a new idea"
    assert thread_ids(app_server) == before  # still nothing created
    await box.fill("")
    assert page.problems == []


async def test_typing_right_after_new_thread_goes_to_the_new_thread(app_page, app_server):
    page = app_page
    previous = await new_thread(page)
    text = "Straight away " + directive("A", 3)
    await page.click("[data-testid=new-thread]")
    await page.keyboard.insert_text(text)
    await page.keyboard.press("Enter")
    tid = await main_thread_other_than(page, previous)
    await wait_answer(page, tid, "complete")
    assert app_server.get(f"/api/threads/{tid}")["messages"][0]["content"] == text
    assert app_server.get(f"/api/threads/{previous}")["messages"] == []
    assert await panel(page, previous).count() == 0

    # the same with the composer filled at once (a locator, not the focus)
    text = "Filled at once " + directive("B", 2)
    await page.click("[data-testid=new-thread]")
    box = page.locator("section.panel-main [data-testid=composer]")
    await box.fill(text)
    await box.press("Enter")
    second = await main_thread_other_than(page, tid)
    await wait_answer(page, second, "complete")
    assert app_server.get(f"/api/threads/{second}")["messages"][0]["content"] == text
    assert len(app_server.get(f"/api/threads/{tid}")["messages"]) == 2


async def test_a_failed_start_keeps_the_text(app_page, app_server):
    page = app_page
    before = thread_ids(app_server)

    async def refuse(route):
        if route.request.method == "POST":
            await route.fulfill(status=503, content_type="application/json",
                                body='{"error": {"code": "unavailable", "message": "try later"}}')
        else:
            await route.continue_()

    await page.route("**/api/threads", refuse)
    text = "Do not lose me " + directive("K", 2)
    try:
        await page.click("[data-testid=new-thread]")
        await page.keyboard.insert_text(text)
        await page.keyboard.press("Enter")
        error = page.locator(f"{DRAFT} [data-testid=thread-error]")
        await error.wait_for()
        assert "try later" in await error.inner_text()
        box = page.locator(f"{DRAFT} [data-testid=composer]")
        assert await box.input_value() == text
        assert await box.is_editable()
    finally:
        await page.unroute("**/api/threads", refuse)
    assert thread_ids(app_server) == before
    await page.keyboard.press("Enter")  # again, the server answering now
    await page.wait_for_selector(f"{MAIN}[data-thread-id]")
    tid = int(await page.locator(MAIN).get_attribute("data-thread-id"))
    await wait_answer(page, tid, "complete")
    assert app_server.get(f"/api/threads/{tid}")["messages"][0]["content"] == text


async def test_hashchange_opens_the_thread_and_pins(app_page, app_server):
    page = app_page
    first = await new_thread(page)
    other = app_server.post("/api/threads", {})["id"]  # made elsewhere: this page has not listed it
    await page.evaluate("(tid) => { location.hash = `#t=${tid}`; }", other)
    await page.wait_for_selector(f"{MAIN}[data-thread-id='{other}']")
    await page.locator(f".thread-item[data-thread-id='{other}']").wait_for()
    await send(page, other, "Words " + directive("H", 6))
    await wait_answer(page, other, "complete")
    pin_id = await pin(page, other, "H2 H3")

    await page.evaluate("(tid) => { location.hash = `#t=${tid}`; }", first)
    await page.wait_for_selector(f"{MAIN}[data-thread-id='{first}']")
    assert await page.locator(PINS).count() == 0
    await page.evaluate("([tid, p]) => { location.hash = `#t=${tid}&p=${p}`; }", [other, pin_id])
    await page.wait_for_selector(f"{MAIN}[data-thread-id='{other}']")
    await panel(page, pin_id).wait_for()
    await page.go_back()  # back to the first thread, without a reload
    await page.wait_for_selector(f"{MAIN}[data-thread-id='{first}']")
    assert await page.locator(PINS).count() == 0
    await page.go_forward()
    await panel(page, pin_id).wait_for()
    assert await page.evaluate("() => performance.getEntriesByType('navigation').length") == 1
    assert page.problems == []


async def _merge_with_two_pins(page) -> tuple[int, int, int]:
    tid = await new_thread(page)
    await send(page, tid, "Tell me things " + directive("M", 12))
    await wait_answer(page, tid, "complete")
    pin_a = await pin(page, tid, "M2 M3")
    pin_b = await pin(page, tid, "M7 M8")
    await send(page, pin_a, "About M2 " + directive("P", 30))
    await wait_answer(page, pin_a, "complete")
    await page.click("[data-testid=merge-open]")
    await page.locator("[data-testid=merge-dialog]").wait_for()
    return tid, pin_a, pin_b


async def _assert_merge_list_fits(page) -> None:
    """The merge dialog's thread list stays inside the dialog: a long title (the first one is made long here, as a
    model's or a user's may be) ends in an ellipsis."""
    edges = await page.evaluate("""() => {
        document.querySelector('.merge-pick-title').textContent = 'A rather long thread title '.repeat(6);
        const dialog = document.querySelector('[data-testid=merge-dialog]').getBoundingClientRect();
        return {dialog: dialog.right, rows: [...document.querySelectorAll('.merge-picks, .merge-pick')]
            .map(e => e.getBoundingClientRect().right)};
    }""")
    assert edges["rows"] and max(edges["rows"]) <= edges["dialog"], edges


# The WCAG contrast ratio of each visible button's text against the first opaque background behind it.
LOW_CONTRAST_BUTTONS = """(scope) => {
    const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => [r, g, b].map(v => { v /= 255; return v <= .03928 ? v / 12.92 : ((v + .055) / 1.055) ** 2.4; })
        .reduce((sum, v, i) => sum + v * [.2126, .7152, .0722][i], 0);
    const behind = (el) => { for (; el; el = el.parentElement) { const c = rgb(getComputedStyle(el).backgroundColor);
        if (c.length === 3 || c[3] > 0) return c.slice(0, 3); } return [255, 255, 255]; };
    return [...document.querySelectorAll(scope + ' button')].filter(b => b.offsetParent !== null).map(b => {
        const [a, c] = [lum(rgb(getComputedStyle(b).color)), lum(behind(b))];
        return [b.dataset.testid || b.className, (Math.max(a, c) + .05) / (Math.min(a, c) + .05)];
    }).filter(([, ratio]) => ratio < 3);
}"""


async def _assert_panels_in_view(page) -> None:
    """Every panel wholly inside the viewport, left of the merge dialog, and not covering another."""
    boxes = await page.evaluate("""() => {
        const dialog = document.querySelector('[data-testid=merge-dialog]');
        const right = dialog && dialog.offsetParent !== null ? dialog.getBoundingClientRect().left : innerWidth;
        return {right, height: innerHeight, panels: [...document.querySelectorAll('section.panel')].map(p => {
            const r = p.getBoundingClientRect();
            return [p.dataset.threadId, r.left, r.right, r.top, r.bottom]; })};
    }""")
    for tid, left, right, top, bottom in boxes["panels"]:
        assert left >= 0 and right <= boxes["right"] + 0.5, (tid, boxes)
        assert top >= 0 and bottom <= boxes["height"] + 0.5, (tid, boxes)
        assert right - left >= 200, f"panel {tid} squeezed: {boxes}"


async def test_1440_merge_dialog_and_two_pins_fit(app_page, browser, app_server):
    page = app_page
    tid, pin_a, pin_b = await _merge_with_two_pins(page)
    await assert_no_sideways_scroll(page)
    await _assert_panels_in_view(page)
    await _assert_merge_list_fits(page)
    await shot(page, "merge-two-pins-1440-light")
    await page.click("[data-testid=merge-close]")
    await assert_no_sideways_scroll(page)
    await _assert_panels_in_view(page)
    await shot(page, "two-pins-1440-light")

    dark = await new_context_page(browser, viewport={"width": 1440, "height": 900}, color_scheme="dark")
    try:
        await boot(dark, app_server)
        await dark.evaluate("(h) => { location.hash = h; }", f"#t={tid}&p={pin_a},{pin_b}")
        await panel(dark, pin_b).wait_for()
        await wait_answer(dark, pin_a, "complete")
        await dark.click("[data-testid=merge-open]")
        await dark.locator("[data-testid=merge-dialog]").wait_for()
        await assert_no_sideways_scroll(dark)
        await _assert_panels_in_view(dark)
        await _assert_merge_list_fits(dark)
        await shot(dark, "merge-two-pins-1440-dark")
        assert await dark.evaluate(LOW_CONTRAST_BUTTONS, "body") == []
        await dark.click("[data-testid=merge-close]")
        await dark.click("[data-testid=account-open]")
        await dark.locator("[data-testid=account-panel]").wait_for()
        await dark.fill("[data-testid=token-name]", "dark check")
        await dark.click("[data-testid=token-create]")
        await dark.locator("[data-testid=token-revoke]").first.wait_for()
        assert await dark.evaluate(LOW_CONTRAST_BUTTONS, "[data-testid=account-panel]") == []
        await shot(dark, "account-1440-dark")
        await dark.click("[data-testid=account-panel-close]")
        await dark.click("[data-testid=new-thread]")
        await dark.wait_for_selector(DRAFT)
        await shot(dark, "draft-1440-dark")
        assert dark.problems == []
    finally:
        await dark.context.close()


async def test_390_phone_width(browser, app_server):
    page = await new_context_page(browser, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        await boot(page, app_server)
        await page.click("[data-testid=new-thread]")
        await page.wait_for_selector(DRAFT)
        await assert_no_sideways_scroll(page)
        box = page.locator(f"{DRAFT} [data-testid=composer]")
        assert await box.is_visible()
        await shot(page, "draft-390")
        await box.fill("On the phone " + directive("W", 40))
        await box.press("Enter")
        await page.wait_for_selector(f"{MAIN}[data-thread-id]")
        tid = int(await page.locator(MAIN).get_attribute("data-thread-id"))
        await wait_answer(page, tid, "complete")
        await assert_no_sideways_scroll(page)
        composer = panel(page, tid).locator("[data-testid=composer]")
        rect = await composer.bounding_box()
        assert rect and rect["y"] >= 0 and rect["y"] + rect["height"] <= 844, rect
        await shot(page, "thread-390")
        pin_id = await pin(page, tid, "W2 W3")
        await panel(page, pin_id).locator("[data-testid=composer]").scroll_into_view_if_needed()
        await assert_no_sideways_scroll(page)
        assert await panel(page, pin_id).locator("[data-testid=composer]").is_visible()
        await shot(page, "pin-390")
        await page.click("[data-testid=merge-open]")
        await page.locator("[data-testid=merge-dialog]").wait_for()
        await assert_no_sideways_scroll(page)
        await shot(page, "merge-390")
        assert page.problems == []
    finally:
        await page.context.close()


PIN_ROOM = """() => {
    const stack = document.querySelector('.pin-stack');
    return {stack: [stack.scrollWidth, stack.clientWidth, stack.scrollHeight, stack.clientHeight],
            pins: [...document.querySelectorAll('section.panel-pin')].map(p => [p.dataset.threadId,
                p.getBoundingClientRect().width, p.getBoundingClientRect().height,
                p.querySelector('.messages').clientHeight])};
}"""


async def test_many_open_pins_keep_room_for_their_messages(browser, app_server):
    """Eight pins open beside the thread: each keeps room for its messages (before, each shrank to its passage and
    composer, with a list a few pixels high), and the pin stack scrolls instead; in a narrow workspace the pins sit
    side by side under the thread, each nearly the stack's width, and are swiped through."""
    page = await new_context_page(browser, viewport={"width": 1440, "height": 900})
    try:
        await boot(page, app_server)
        tid = await new_thread(page)
        await send(page, tid, "Many words " + directive("Q", 40))
        await wait_answer(page, tid, "complete")
        answer = app_server.get(f"/api/threads/{tid}")["messages"][-1]
        pins = [app_server.post("/api/threads", {"parent_id": tid, "anchor": {
            "message_id": answer["id"], "start": 8 * i, "end": 8 * i + 5}})["id"] for i in range(8)]
        await page.evaluate("(h) => { location.hash = h; }", f"#t={tid}&p={','.join(map(str, pins))}")
        await panel(page, pins[-1]).wait_for()
        await send(page, pins[-1], "About it " + directive("R", 30))
        await wait_answer(page, pins[-1], "complete")
        room = await page.evaluate(PIN_ROOM)
        assert len(room["pins"]) == 8, room
        assert all(height >= 290 for _, _, height, _ in room["pins"]), room
        answered = next(list_height for tid_, _, _, list_height in room["pins"] if tid_ == str(pins[-1]))
        assert answered >= 90, room
        assert room["stack"][2] > room["stack"][3], f"the stack should scroll: {room}"
        await assert_no_sideways_scroll(page)
        last = panel(page, pins[-1])
        await last.locator("[data-testid=composer]").scroll_into_view_if_needed()
        assert await last.locator("[data-testid=composer]").is_visible()
        assert await answer_text(page, pins[-1]) == tokens("R", 30)
        await shot(page, "eight-pins-1440")

        # a narrow workspace (a small window; also the merge dialog open): the pins go under the thread, side by
        # side, each nearly the stack's width (they were squeezed into columns of ~50 px)
        await page.set_viewport_size({"width": 900, "height": 800})
        await page.wait_for_function("() => { const s = document.querySelector('.pin-stack');"
                                     " return s.scrollWidth > s.clientWidth; }")
        room = await page.evaluate(PIN_ROOM)
        width = room["stack"][1]
        assert all(w >= 0.8 * width for _, w, _, _ in room["pins"]), room
        await assert_no_sideways_scroll(page)
        await shot(page, "eight-pins-900")
        assert page.problems == []
    finally:
        await page.context.close()
