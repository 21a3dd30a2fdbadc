"""Accounts in the page: the one-time sign-in link, the sign-in form, two users side by side, the users panel (an
admin adds, disables, resets and removes a user), the account panel (password, API tokens), and a whole session run
under the Content-Security-Policy with no violation."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from tests.browser.conftest import VIEWPORT
from tests.browser.helpers import (
    ARTIFACTS,
    answer_text,
    boot,
    directive,
    new_thread,
    panel,
    pin,
    sample_lengths,
    send,
    sign_in,
    tokens,
    wait_answer,
    wait_ready,
    wait_text_contains,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

SIGNED_OUT = "html[data-auth=signed-out] [data-testid=signin-form]"
CSP_RECORDER = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
                          (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
"""


async def new_page(browser, **options):
    context = await browser.new_context(viewport=VIEWPORT, **options)
    page = await context.new_page()
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(str(exc)))
    return page


async def thread_ids_shown(page) -> set[int]:
    return {int(x) for x in await page.eval_on_selector_all(".thread-item", "els => els.map(e => e.dataset.threadId)")}


async def test_the_printed_link_signs_in_once_and_leaves_the_address_bar(browser, app_server):
    printed = re.findall(r"https?://\S+/\?token=[\w\-]+", app_server.log_text())
    assert printed, "the server printed no sign-in link at start"
    link = re.sub(r"^https?://[^/]+", app_server.url, printed[0])
    page = await new_page(browser)
    second = await new_page(browser)
    try:
        response = await page.goto(link)
        await wait_ready(page)
        assert await page.get_attribute("html", "data-auth") == "signed-in"
        assert "token" not in page.url and page.url.startswith(app_server.url + "/")
        assert await page.inner_text("[data-testid=topbar-user]") == "owner"
        assert response.request.redirected_from is not None  # the server answered the link with a redirect
        assert await page.evaluate("() => location.search") == ""

        await second.goto(link)  # the same link again, in another browser context: refused
        await wait_ready(second)
        await second.wait_for_selector(SIGNED_OUT)
        note = second.locator("[data-testid=signin-note]")
        assert await note.is_visible()
        # the command to run names this page's own address, so the link it prints opens here (not localhost:8080)
        command = f"just users login-url --base-url {app_server.url}/"
        assert command in await note.inner_text()
        assert command in await second.inner_text("[data-testid=signin-hint]")
        await second.screenshot(path=str(ARTIFACTS / "signin-link-expired.png"))
        assert "token" not in second.url
        assert page.problems == [] and second.problems == []
    finally:
        await page.context.close()
        await second.context.close()


async def test_password_sign_in_form(browser, app_server):
    app_server.add_user("dana", "dana-password-1")
    page = await new_page(browser)
    try:
        await page.goto(app_server.url)
        await wait_ready(page)
        await page.wait_for_selector(SIGNED_OUT)
        assert not await page.locator("[data-testid=signin-note]").is_visible()
        await page.screenshot(path=str(ARTIFACTS / "signin-form.png"))

        await page.fill("[data-testid=signin-username]", "dana")
        await page.fill("[data-testid=signin-password]", "not her password")
        await page.click("[data-testid=signin-submit]")
        error = page.locator("[data-testid=signin-error]")
        await error.wait_for()
        assert await error.inner_text() == "Wrong user name or password."  # the server's own message
        assert await page.input_value("[data-testid=signin-password]") == ""

        async def throttled(route):  # the UI path of a 429, without throttling this test address for real
            await route.fulfill(status=429, headers={"Retry-After": "42"}, content_type="application/json",
                                body='{"error": {"code": "too_many_attempts", "message": "Too many failed sign-ins."}}')

        await page.route("**/api/auth/login", throttled)
        await page.fill("[data-testid=signin-password]", "whatever")
        await page.click("[data-testid=signin-submit]")
        await page.wait_for_function(
            "() => document.querySelector('[data-testid=signin-error]').textContent.includes('42 seconds')")
        assert "Too many failed sign-ins." in await error.inner_text()
        await page.unroute("**/api/auth/login")

        await sign_in(page, "dana", "dana-password-1")
        assert await page.inner_text("[data-testid=topbar-user]") == "dana"
        assert not await page.locator("[data-testid=users-open]").is_visible()  # not an admin
        tid = await new_thread(page)
        await send(page, tid, "Hi " + directive("D", 3))
        await wait_answer(page, tid, "complete")

        await page.reload()  # the session cookie holds
        await wait_ready(page)
        assert await page.get_attribute("html", "data-auth") == "signed-in"
        await wait_answer(page, tid, "complete")
        await panel(page, tid).locator("[data-testid=composer]").fill("not for the next user")
        unsent = "() => Object.keys(sessionStorage).filter(k => k.startsWith('pinchat.unsent.'))"
        assert len(await page.evaluate(unsent)) == 1

        await page.click("[data-testid=signout]")
        await page.wait_for_selector(SIGNED_OUT)
        assert await page.evaluate(unsent) == []  # the tab keeps no unsent text of hers
        await page.reload()
        await wait_ready(page)
        await page.wait_for_selector(SIGNED_OUT)
        assert page.problems == []
    finally:
        await page.context.close()


async def test_two_users_stream_at_once_and_see_only_their_own(browser, app_server):
    app_server.add_user("alice", "alice-password-1")
    app_server.add_user("bob", "bob-password-1")
    alice, bob = await new_page(browser), await new_page(browser)
    try:
        await asyncio.gather(boot(alice, app_server, "alice"), boot(bob, app_server, "bob"))
        threads = {}
        for page, name in ((alice, "alice"), (bob, "bob")):
            assert await page.inner_text("[data-testid=topbar-user]") == name
            tid = await new_thread(page)
            await send(page, tid, f"{name} asks " + directive(name.upper(), 6))
            await wait_answer(page, tid, "complete")
            threads[name] = (tid, await pin(page, tid, f"{name.upper()}2 {name.upper()}3"))

        (a_main, a_pin), (b_main, b_pin) = threads["alice"], threads["bob"]
        await send(alice, a_main, "long " + directive("LA", 40, delay_ms=50))
        await send(alice, a_pin, "pin " + directive("PA", 30, delay_ms=60))
        await send(bob, b_main, "long " + directive("LB", 40, delay_ms=50))
        await wait_text_contains(alice, a_main, "LA3 ")
        await wait_text_contains(bob, b_main, "LB3 ")
        samples_a, samples_b = await asyncio.gather(sample_lengths(alice, [a_main, a_pin], interval=0.1),
                                                    sample_lengths(bob, [b_main], interval=0.1))
        assert sum(all(st == "streaming" for st, _ in s.values()) for s in samples_a) >= 3, samples_a
        assert sum(s[b_main][0] == "streaming" for s in samples_b) >= 3, samples_b
        for page, tid, prefix, count in ((alice, a_main, "LA", 40), (alice, a_pin, "PA", 30), (bob, b_main, "LB", 40)):
            await wait_answer(page, tid, "complete")
            assert await answer_text(page, tid) == tokens(prefix, count)

        assert await thread_ids_shown(alice) == {a_main}
        assert await thread_ids_shown(bob) == {b_main}
        tree_ids = await alice.eval_on_selector_all("[data-testid=tree-node]", "els => els.map(e => +e.dataset.threadId)")
        assert set(tree_ids) == {a_main, a_pin}
        # Each one's API token reaches only their own threads; another's answers like a missing one.
        a_token, b_token = app_server.user_token("alice"), app_server.user_token("bob")
        assert [t["id"] for t in app_server.get("/api/threads", token=a_token)["threads"]] == [a_main]
        async with app_server.client(b_token) as http:
            for tid in (a_main, a_pin):
                assert (await http.get(f"/api/threads/{tid}")).status_code == 404
            assert (await http.get(f"/api/threads/{b_pin}")).status_code == 200
        # Opening another user's thread by address shows nothing of it.
        await bob.goto(f"{app_server.url}/#t={a_main}")
        await bob.reload()
        await wait_ready(bob)
        await bob.wait_for_selector("[data-testid=global-error]")
        assert await bob.locator(f"section.panel[data-thread-id='{a_main}']").count() == 0
        assert alice.problems == [] and bob.problems == []
    finally:
        await alice.context.close()
        await bob.context.close()


async def test_users_panel_adds_disables_resets_and_removes(browser, app_server):
    admin, carol = await new_page(browser), await new_page(browser)
    try:
        await boot(admin, app_server)
        await admin.click("[data-testid=users-open]")
        dialog = admin.locator("[data-testid=users-panel]")
        await dialog.wait_for()
        await admin.wait_for_selector("[data-testid=user-row][data-username=owner]")
        await admin.fill("[data-testid=user-add-name]", "carol")
        await admin.fill("[data-testid=user-add-password]", "short")
        await admin.click("[data-testid=user-add-submit]")
        assert "8 characters" in await admin.inner_text("[data-testid=user-add-feedback]")
        await admin.fill("[data-testid=user-add-password]", "carol-password-1")
        await admin.click("[data-testid=user-add-submit]")
        row = admin.locator("[data-testid=user-row][data-username=carol]")
        await row.wait_for()
        assert "Added carol" in await admin.inner_text("[data-testid=user-add-feedback]")
        await admin.screenshot(path=str(ARTIFACTS / "users-panel.png"))
        await admin.fill("[data-testid=user-add-name]", "carol")  # the same name again: the server's 409
        await admin.fill("[data-testid=user-add-password]", "another-password")
        await admin.click("[data-testid=user-add-submit]")
        await admin.wait_for_function("() => document.querySelector('[data-testid=user-add-feedback]')"
                                      ".textContent.includes('already')")
        await admin.fill("[data-testid=user-add-name]", "")
        await admin.fill("[data-testid=user-add-password]", "")

        # carol signs in with the password the admin gave her and starts a long answer
        await carol.goto(app_server.url)
        await wait_ready(carol)
        await sign_in(carol, "carol", "carol-password-1")
        tid = await new_thread(carol)
        await send(carol, tid, "long " + directive("C", 300, delay_ms=40))
        await wait_text_contains(carol, tid, "C3 ")

        # disabled: her stream and session end, her page falls back to the sign-in form
        await row.locator("[data-testid=user-toggle]").click()
        await admin.wait_for_selector("[data-testid=user-row][data-username=carol][data-disabled=true]")
        await carol.wait_for_selector(SIGNED_OUT, timeout=15_000)
        assert "session has ended" in await carol.inner_text("[data-testid=signin-error]")
        await carol.fill("[data-testid=signin-username]", "carol")
        await carol.fill("[data-testid=signin-password]", "carol-password-1")
        await carol.click("[data-testid=signin-submit]")
        await carol.wait_for_function("() => document.querySelector('[data-testid=signin-error]')"
                                      ".textContent.includes('Wrong user name or password')")

        # enabled again, with a new password
        await row.locator("[data-testid=user-toggle]").click()
        await admin.wait_for_selector("[data-testid=user-row][data-username=carol][data-disabled=false]")
        await row.locator("[data-testid=user-reset]").click()
        await row.locator("[data-testid=user-reset-password]").fill("carol-password-2")
        await row.locator("[data-testid=user-reset-save]").click()
        await admin.wait_for_function("() => document.querySelector('[data-testid=users-feedback]')"
                                      ".textContent.includes('New password set for carol')")
        await sign_in(carol, "carol", "carol-password-2")
        # what streamed before the disable is kept: ending her session detaches her stream (it is not a stop), so
        # the answer is interrupted or, written on within the grace, complete
        await carol.wait_for_function(
            "(tid) => ['interrupted', 'complete'].includes(document.querySelector("
            "`section.panel[data-thread-id='${tid}'] .msg[data-role=assistant]:last-of-type`)?.dataset.status)",
            arg=tid, timeout=60_000)
        assert (await answer_text(carol, tid)).startswith(tokens("C", 3))

        # removed (asks first): her next request answers 401 and her page falls back to the sign-in form
        await row.locator("[data-testid=user-remove]").click()
        assert await row.locator("[data-testid=user-remove]").inner_text() == "Remove?"
        await row.locator("[data-testid=user-remove]").click()
        await row.wait_for(state="detached")
        await carol.click("[data-testid=new-thread]")
        await carol.wait_for_selector(SIGNED_OUT, timeout=10_000)
        # the admin's own row has no disable/remove buttons
        own = admin.locator("[data-testid=user-row][data-username=owner]")
        assert await own.locator("[data-testid=user-toggle]").count() == 0
        await admin.keyboard.press("Escape")
        await dialog.wait_for(state="hidden")
        assert admin.problems == [] and carol.problems == []
    finally:
        await admin.context.close()
        await carol.context.close()


async def test_account_panel_password_and_tokens(browser, app_server):
    app_server.add_user("erin", "erin-password-1")
    page = await new_page(browser, permissions=["clipboard-read", "clipboard-write"])
    other = await new_page(browser)
    try:
        await boot(page, app_server, "erin")
        await boot(other, app_server, "erin")  # another session of hers, ended by the password change
        await page.click("[data-testid=account-open]")
        await page.locator("[data-testid=account-panel]").wait_for()
        assert await page.locator("[data-testid=password-current]").is_visible()

        await page.fill("[data-testid=password-current]", "wrong-password")
        await page.fill("[data-testid=password-new]", "erin-password-2")
        await page.fill("[data-testid=password-repeat]", "erin-password-2")
        await page.click("[data-testid=password-submit]")
        feedback = page.locator("[data-testid=password-feedback]")
        await page.wait_for_function("() => document.querySelector('[data-testid=password-feedback]')"
                                     ".dataset.kind === 'error'")
        assert await feedback.inner_text()  # the server's 403 message
        await page.fill("[data-testid=password-current]", "erin-password-1")
        await page.fill("[data-testid=password-new]", "erin-password-2")
        await page.fill("[data-testid=password-repeat]", "erin-password-2")
        await page.click("[data-testid=password-submit]")
        await page.wait_for_function("() => document.querySelector('[data-testid=password-feedback]')"
                                     ".textContent.includes('Password changed')")
        # this page goes on (its session was rotated); the other one is signed out at its next request
        await page.click("[data-testid=account-panel-close]")
        await new_thread(page)
        await other.click("[data-testid=new-thread]")
        await other.wait_for_selector(SIGNED_OUT, timeout=10_000)

        await page.click("[data-testid=account-open]")
        await page.fill("[data-testid=token-name]", "backup script")
        await page.click("[data-testid=token-create]")
        value = page.locator("[data-testid=token-value]")
        await value.wait_for()
        token = await value.inner_text()
        assert token.startswith("pc_")
        await page.click("[data-testid=token-copy]")
        await page.wait_for_function("() => document.querySelector('[data-testid=token-feedback]')"
                                     ".textContent === 'Copied.'")
        assert await page.evaluate("() => navigator.clipboard.readText()") == token
        row = page.locator("[data-testid=token-row]").filter(has_text="backup script")
        await row.wait_for()
        await page.screenshot(path=str(ARTIFACTS / "account-panel.png"))
        me = httpx.get(f"{app_server.url}/api/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200 and me.json()["user"]["username"] == "erin"

        await row.locator("[data-testid=token-revoke]").click()
        await row.locator("[data-testid=token-revoke][data-confirm=true]").click()
        await row.wait_for(state="detached")
        me = httpx.get(f"{app_server.url}/api/threads", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 401
        await page.keyboard.press("Escape")  # closing the panel forgets the secret
        assert await page.locator("[data-testid=token-value]").inner_text() == ""
        assert page.problems == []
    finally:
        await page.context.close()
        await other.context.close()


async def test_the_owner_sets_a_first_password_without_a_current_one(browser, app_server):
    page = await new_page(browser)
    try:
        await boot(page, app_server)
        await page.click("[data-testid=account-open]")
        await page.locator("[data-testid=account-panel]").wait_for()
        users = app_server.get("/api/users")["users"]
        owner = next(u for u in users if u["username"] == "owner")
        if owner["has_password"]:
            pytest.skip("the owner has a password already")
        assert not await page.locator("[data-testid=password-current]").is_visible()
        assert await page.inner_text("[data-testid=password-submit]") == "Set password"
        await page.fill("[data-testid=password-new]", "owner-password-1")
        await page.fill("[data-testid=password-repeat]", "owner-password-1")
        await page.click("[data-testid=password-submit]")
        await page.wait_for_function("() => document.querySelector('[data-testid=password-feedback]')"
                                     ".textContent.includes('Password changed')")
        assert await page.locator("[data-testid=password-current]").is_visible()
        assert page.problems == []
    finally:
        await page.context.close()


async def test_no_csp_violation_in_a_chat_with_a_pin_and_a_merge(browser, app_server):
    page = await new_page(browser)
    try:
        await page.add_init_script(CSP_RECORDER)
        response = await page.goto(app_server.login_url())
        await wait_ready(page)
        policy = (await response.all_headers()).get("content-security-policy", "")
        assert "script-src 'self' 'wasm-unsafe-eval'" in policy and "style-src 'self'" in policy, policy
        tid = await new_thread(page)
        await send(page, tid, "Words " + directive("V", 8, delay_ms=5))
        await wait_answer(page, tid, "complete")
        pin_id = await pin(page, tid, "V2 V3")
        await send(page, pin_id, "About it " + directive("Q", 5, delay_ms=5))
        await wait_answer(page, pin_id, "complete")
        await page.locator(f"section.panel[data-thread-id='{tid}'] mark.pin-anchor").hover()
        await page.locator("[data-testid=pin-preview]").wait_for()
        await page.click("[data-testid=merge-open]")
        await page.select_option("[data-testid=merge-format]", "custom")
        await page.fill("[data-testid=merge-instruction]", "A digest " + directive("M", 10, delay_ms=5))
        await page.click("[data-testid=merge-start]")
        await page.wait_for_selector("[data-testid=merge-output][data-status=complete]", timeout=20_000)
        await page.click("[data-testid=merge-close]")
        for opener, dialog in (("account-open", "account-panel"), ("users-open", "users-panel")):
            await page.click(f"[data-testid={opener}]")
            await page.locator(f"[data-testid={dialog}]").wait_for()
            await page.keyboard.press("Escape")
        await page.reload()
        await wait_ready(page)
        await wait_answer(page, tid, "complete", index=0)
        assert await panel(page, tid).locator("mark.pin-anchor").count() == 1
        await page.wait_for_timeout(200)
        assert await page.evaluate("() => window.__csp") == []
        assert page.problems == []
    finally:
        await page.context.close()


async def test_stop_cancel_passes_the_csrf_check(app_page, app_server):
    """The cancel request Stop sends (a JSON POST with the page's cookie) is accepted by the server."""
    page = app_page
    tid = await new_thread(page)
    await send(page, tid, "Long " + directive("K", 300, delay_ms=40))
    await wait_text_contains(page, tid, "K3 ")
    await page.evaluate("(tid) => pinchat.pyodide.runPython(`import asyncio, api; "
                        "asyncio.ensure_future(api.cancel_thread(${tid}))`)", tid)
    await wait_answer(page, tid, "interrupted", timeout=5_000)
    assert app_server.get(f"/api/threads/{tid}")["messages"][-1]["status"] == "interrupted"
