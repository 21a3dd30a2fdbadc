"""The page with the keyboard only: after an action whose button goes away or is disabled (Stop, deleting a thread,
closing a pin, starting a merge, closing a dialog), the focus lands somewhere that goes on working, never on the
page's body; a pin's passage is reached with Tab and opened with Enter."""

from __future__ import annotations

import pytest

from tests.browser.helpers import directive, new_thread, panel, pin, send, tokens, wait_answer

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def focused(page) -> str:
    """`tag[data-testid]` of the focused element (`BODY` when the keyboard fell to the page)."""
    return await page.evaluate(
        "() => { const e = document.activeElement; return e.tagName + (e.dataset.testid ? '#' + e.dataset.testid : ''); }")


async def test_stop_delete_close_pin_and_merge_keep_the_focus(app_page, app_server):
    page = app_page
    tid = await new_thread(page)
    # Stop: its button is disabled once pressed; the focus goes to the composer (Esc there stops too)
    await send(page, tid, "Long " + directive("S", 300, delay_ms=30))
    # The button is disabled until the answer streams (a disabled button takes no focus: Enter would go nowhere)
    await panel(page, tid).locator("[data-testid=stop]:not([disabled])").focus()
    await page.keyboard.press("Enter")
    await wait_answer(page, tid, "interrupted")
    assert await focused(page) == "TEXTAREA#composer"

    # A pin closed with its button: back to the main thread's composer
    await send(page, tid, "Short " + directive("P", 6))
    await wait_answer(page, tid, "complete")
    pin_id = await pin(page, tid, tokens("P", 6).split()[2])
    await panel(page, pin_id).locator("[data-testid=close-pin]").focus()
    await page.keyboard.press("Enter")
    await panel(page, pin_id).wait_for(state="detached")
    assert await focused(page) == "TEXTAREA#composer"
    assert await page.evaluate(f"() => document.activeElement.closest('[data-thread-id]').dataset.threadId") == str(tid)
    # ... and its passage, reached with the keyboard, opens it again with Enter
    await panel(page, tid).locator("mark.pin-anchor").first.focus()
    await page.keyboard.press("Enter")
    await panel(page, pin_id).wait_for()
    await panel(page, pin_id).locator("[data-testid=close-pin]").focus()
    await page.keyboard.press("Enter")
    await panel(page, pin_id).wait_for(state="detached")

    # The merge dialog: started with Enter, the keyboard stays in it (Esc closes it), and closing gives the focus
    # back to the button that opened it
    await page.locator("[data-testid=merge-open]").focus()
    await page.keyboard.press("Enter")
    dialog = page.locator("[data-testid=merge-dialog]")
    await dialog.wait_for()
    assert await focused(page) == "BUTTON#merge-start"
    await page.keyboard.press("Enter")
    await dialog.locator("[data-testid=merge-output][data-status=complete]").wait_for()
    assert await focused(page) != "BODY"
    await page.keyboard.press("Escape")
    await dialog.wait_for(state="hidden")
    assert await focused(page) == "BUTTON#merge-open"

    # Deleting a thread from the sidebar: Enter asks "Delete?", a second Enter deletes
    other = await new_thread(page)
    delete = page.locator(f"[data-testid=delete-thread][data-thread-id='{other}']")
    await delete.focus()
    await page.keyboard.press("Enter")
    await page.locator(f"[data-testid=delete-thread][data-thread-id='{other}'][data-confirm=true]").wait_for()
    assert await focused(page) == "BUTTON#delete-thread"
    await page.keyboard.press("Enter")
    await delete.wait_for(state="detached")
    async with app_server.client() as http:
        assert (await http.get(f"/api/threads/{other}")).status_code == 404

    # The account and users panels: opened with Enter, closed with Esc, the focus back on the button that opened it
    for opener, dialog in (("account-open", "account-panel"), ("users-open", "users-panel")):
        await page.locator(f"[data-testid={opener}]").focus()
        await page.keyboard.press("Enter")
        await page.locator(f"[data-testid={dialog}]").wait_for()
        await page.keyboard.press("Escape")
        await page.locator(f"[data-testid={dialog}]").wait_for(state="hidden")
        assert await focused(page) == f"BUTTON#{opener}"
