"""What the browser tests do to the page: boot it, open threads, send, select and pin, read what is shown."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
BOOT_TIMEOUT_MS = 60_000
STREAM_TIMEOUT_MS = 20_000

MAIN = "section.panel-main"
PINS = "section.panel-pin"
ASSISTANT = ".msg[data-role=assistant]"


def tokens(prefix: str, count: int) -> str:
    """The text the fake upstream streams for `[[tokens=count prefix=prefix]]`."""
    return "".join(f"{prefix}{i} " for i in range(count))


def directive(prefix: str, count: int, delay_ms: int = 0, **extra) -> str:
    more = "".join(f" {k}={v}" for k, v in extra.items())
    return f"[[tokens={count} delay_ms={delay_ms} prefix={prefix}{more}]]"


async def boot(page, server, user: str | None = None) -> float:
    """Sign the page's browser context in (as the owner, or `user`) with a fresh one-time sign-in link of `server`
    (an AppServer), which lands on the app; wait until Python has started it. Return the seconds it took.
    `server` may also be a plain URL: then the page opens it as it is (signed in already, or not)."""
    url = server.login_url(user) if hasattr(server, "login_url") else server
    start = time.monotonic()
    await page.goto(url)
    await wait_ready(page)
    if hasattr(server, "login_url"):
        assert await page.get_attribute("html", "data-auth") == "signed-in", "the sign-in link did not sign in"
    return time.monotonic() - start


async def wait_ready(page) -> None:
    """Wait until the page's Python is up and shows the app or the sign-in form, and its Markdown renderer is
    loaded (it loads just after the page is usable; answers are plain text until then)."""
    await page.wait_for_selector("html[data-app-state=ready], html[data-app-state=error]", timeout=BOOT_TIMEOUT_MS)
    state = await page.get_attribute("html", "data-app-state")
    assert state == "ready", await page.inner_text("#boot")
    await page.wait_for_selector("html[data-renderer=ready], html[data-renderer=warm]", state="attached",
                                 timeout=BOOT_TIMEOUT_MS)


async def sign_in(page, username: str, password: str) -> None:
    """Fill the sign-in form and wait for the app."""
    await page.fill("[data-testid=signin-username]", username)
    await page.fill("[data-testid=signin-password]", password)
    await page.click("[data-testid=signin-submit]")
    await page.wait_for_selector("html[data-auth=signed-in] [data-testid=new-thread]")


def panel(page, thread_id: int):
    return page.locator(f"section.panel[data-thread-id='{thread_id}']")


async def new_thread(page) -> int:
    """Create an empty thread, show it in the main panel (as a pasted `#t=<id>` link does) and return its id.

    "+ New thread" only opens a draft (the thread is created with its first message), so the thread is created
    here by the page itself: a same-origin fetch with the page's session cookie, which passes the CSRF check."""
    tid = await page.evaluate(
        """async () => {
            const resp = await fetch('/api/threads', {method: 'POST', headers: {'content-type': 'application/json'},
                                                      body: '{}'});
            if (!resp.ok) throw new Error(`POST /api/threads: HTTP ${resp.status} ${await resp.text()}`);
            const thread = await resp.json();
            location.hash = `#t=${thread.id}`;
            return thread.id;
        }""")
    await page.wait_for_function(
        """(tid) => { const box = document.querySelector(
                `section.panel-main[data-thread-id='${tid}'] [data-testid=composer]`);
            return box && !box.disabled && box.offsetParent !== null; }""", arg=tid)
    return int(tid)


async def send(page, thread_id: int, text: str, *, enter: bool = True) -> None:
    box = panel(page, thread_id).locator("[data-testid=composer]")
    await box.fill(text)
    if enter:
        await box.press("Enter")
    else:
        await panel(page, thread_id).locator("[data-testid=send]").click()


def answers(page, thread_id: int):
    return panel(page, thread_id).locator(ASSISTANT)


async def wait_answer(page, thread_id: int, status: str, index: int = -1, timeout: int = STREAM_TIMEOUT_MS):
    """Wait until the thread's answer number `index` (default: the last) has `status`; return its element."""
    await page.wait_for_function(
        """([tid, status, index]) => {
            const all = document.querySelectorAll(`section.panel[data-thread-id='${tid}'] .msg[data-role=assistant]`);
            const msg = all[index < 0 ? all.length + index : index];
            return msg && msg.dataset.status === status;
        }""", arg=[thread_id, status, index], timeout=timeout)
    items = answers(page, thread_id)
    return items.nth(index if index >= 0 else await items.count() + index)


async def answer_text(page, thread_id: int, index: int = -1) -> str:
    """The exact text of an answer (textContent: no layout-dependent whitespace changes)."""
    return await page.evaluate(
        """([tid, index]) => {
            const all = document.querySelectorAll(
                `section.panel[data-thread-id='${tid}'] .msg[data-role=assistant] .msg-body`);
            const body = all[index < 0 ? all.length + index : index];
            return body ? body.textContent : null;
        }""", [thread_id, index])


async def wait_text_contains(page, thread_id: int, needle: str, timeout: int = STREAM_TIMEOUT_MS) -> None:
    await page.wait_for_function(
        """([tid, needle]) => {
            const all = document.querySelectorAll(
                `section.panel[data-thread-id='${tid}'] .msg[data-role=assistant] .msg-body`);
            return all.length && all[all.length - 1].textContent.includes(needle);
        }""", arg=[thread_id, needle], timeout=timeout)


async def select_in_answer(page, thread_id: int, needle: str, index: int = -1) -> None:
    """Select `needle` inside an answer as a user would (a DOM selection, then the mouseup that ends a drag)."""
    ok = await page.evaluate(
        """([tid, needle, index]) => {
            const all = document.querySelectorAll(
                `section.panel[data-thread-id='${tid}'] .msg[data-role=assistant] .msg-body`);
            const body = all[index < 0 ? all.length + index : index];
            const walker = document.createTreeWalker(body, NodeFilter.SHOW_TEXT);
            for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                const at = node.data.indexOf(needle);
                if (at < 0) continue;
                const range = document.createRange();
                range.setStart(node, at);
                range.setEnd(node, at + needle.length);
                const sel = getSelection();
                sel.removeAllRanges();
                sel.addRange(range);
                const r = range.getBoundingClientRect();
                body.dispatchEvent(new MouseEvent('mouseup', {bubbles: true, clientX: r.right, clientY: r.bottom}));
                return true;
            }
            return false;
        }""", [thread_id, needle, index])
    assert ok, f"{needle!r} not found in a single text node of the answer"


async def pin(page, thread_id: int, needle: str, index: int = -1) -> int:
    """Select `needle` in an answer, press the pin button, and return the new pin's thread id."""
    before = set(await page.eval_on_selector_all(PINS, "els => els.map(e => e.dataset.threadId)"))
    await select_in_answer(page, thread_id, needle, index)
    await page.locator("[data-testid=pin]").click()
    await page.wait_for_function(
        "(n) => document.querySelectorAll('section.panel-pin').length > n", arg=len(before))
    after = await page.eval_on_selector_all(PINS, "els => els.map(e => e.dataset.threadId)")
    (new,) = set(after) - before
    return int(new)


async def sample_lengths(page, thread_ids: list[int], *, until_done: bool = True, interval: float = 0.08,
                         limit: float = 20.0) -> list[dict[int, tuple[str | None, int]]]:
    """Sample (status, text length) of the last answer of each thread every `interval` s until all are final."""
    samples = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        sample = await page.evaluate(
            """(ids) => Object.fromEntries(ids.map((tid) => {
                const all = document.querySelectorAll(`section.panel[data-thread-id='${tid}'] .msg[data-role=assistant]`);
                const msg = all[all.length - 1];
                return [tid, msg ? [msg.dataset.status, msg.querySelector('.msg-body').textContent.length] : [null, 0]];
            }))""", thread_ids)
        samples.append({int(k): tuple(v) for k, v in sample.items()})
        if until_done and all(v[0] not in ("streaming", None) for v in sample.values()):
            break
        await asyncio.sleep(interval)
    return samples
