"""The `browser` figure: the Pyodide page in headless Chromium (Playwright, /usr/bin/chromium).

- Cold load: a new browser context (empty cache) opens `/#t=<thread>&p=<pins>`; time to interactive = navigation
  start to the moment a `[data-testid=composer]` is in the DOM and enabled (a MutationObserver installed before any
  page script stamps `performance.now()`); the median of `cold_runs` new contexts (1 with --quick, else 3).
  Warm: `reload()` in the same context (HTTP cache filled), median of 2.
- Streaming: one thread with an answer plus 9 pins on it (made through the API, never through the UI), opened
  together (`#t=..&p=..`); the panels measured are the ones whose `data-thread-id` is one of those ids (a draft
  panel without a server thread is never counted). Each of the 10 composers sends a message asking the bench
  upstream for 100 tokens/s, first plain tokens (`~<time>~ `), then Markdown-heavy ones (`md=1`: headings, lists,
  code, tables, math; bench/upstream.py). For each token: arrival = when its bytes come out of `fetch()`'s body
  stream in the page (a wrapper around `window.fetch` installed before the app loads, reading the time-stamp
  markers in the bytes), DOM = when a MutationObserver sees the marker in text added inside a
  `[data-role=assistant]` message (the page renders Markdown once per animation frame, so this is the end of the
  frame task that rendered it). Token-to-DOM = DOM - arrival (p50, p99, max). The longest main-thread task and the
  number of tasks over 50 ms come from the Long Tasks API over the streaming window. After each round the final
  DOM text is searched for every marker that arrived (`tokens_in_dom`): a marker lost by the renderer shows there.
- Long answer: a new thread of its own, opened alone in a new page of the same context, gets one Markdown answer
  of `long_tokens` (8,000; --quick 2,000) at `long_rate` tokens/s (400, so that it takes 20 s rather than 80 s:
  the page renders once per frame, so a frame's work - re-parsing and rebuilding the answer's tail - does not grow
  with the rate, only the tokens per frame do): longest task, tasks over 50 ms, token-to-DOM p50/p99.
- Through nginx over HTTPS + HTTP/2 when `app+nginx` can run (10 streams on one connection); else straight to the
  app over HTTP/1.1, where Chromium allows only 6 concurrent streams per origin (reported).

Skips with a message if the page is not ready (no composer within the timeout) or Chromium/Playwright is missing.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path

from . import stacks
from .stacks import Server, Upstream

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# wait_for_function predicates are written as functions: the page's CSP (no 'unsafe-eval') refuses the eval()
# Playwright wraps a bare expression in
READY = "() => window.__bench && window.__bench.tti !== null"
READY_TIMEOUT_MS = 60_000  # the page's own boot timeout (web/boot.js TIMEOUT_MS); a loaded 2-core machine needs it

INIT_SCRIPT = r"""
(() => {
  const B = window.__bench = {tti: null, longest: 0, longtasks: [], arrivals: {}, dom: {}, measuring: false};
  const composerReady = () => {
    const c = document.querySelector('[data-testid=composer]');
    return c && !c.disabled;
  };
  const mo = new MutationObserver(() => {
    if (B.tti === null && composerReady()) { B.tti = performance.now(); }
  });
  const startObs = () => mo.observe(document.documentElement, {childList: true, subtree: true, attributes: true});
  if (document.documentElement) startObs(); else document.addEventListener('readystatechange', startObs, {once: true});
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        if (!B.measuring) continue;
        B.longtasks.push([performance.timeOrigin + e.startTime, e.duration]);
        if (e.duration > B.longest) B.longest = e.duration;
      }
    }).observe({type: 'longtask', buffered: false});
  } catch (e) { B.noLongTasks = String(e); }
  const MARK = /~(\d+\.\d+)~/g;
  const now = () => performance.timeOrigin + performance.now();
  // arrival: wrap fetch so each chunk of a chat stream is stamped as it comes out of the body stream
  const origFetch = window.fetch.bind(window);
  window.fetch = async (...args) => {
    const resp = await origFetch(...args);
    const url = String(args[0] && args[0].url || args[0]);
    if (!/\/chat$/.test(url) || !resp.body) return resp;
    const dec = new TextDecoder();
    let tail = '';
    const re = new RegExp(MARK.source, 'g');
    const ts = new TransformStream({
      transform(chunk, ctl) {
        const t = now();
        const text = tail + dec.decode(chunk, {stream: true});
        let m, last = 0;
        re.lastIndex = 0;
        while ((m = re.exec(text)) !== null) { if (!(m[1] in B.arrivals)) B.arrivals[m[1]] = t; last = re.lastIndex; }
        tail = text.slice(last).slice(-48);
        ctl.enqueue(chunk);
      }
    });
    return new Response(resp.body.pipeThrough(ts), {status: resp.status, statusText: resp.statusText, headers: resp.headers});
  };
  // DOM: scan only what the mutations added (a rebuilt Markdown block, appended text) inside assistant messages;
  // rendering may also shorten the text (a paragraph becoming a table), so offsets into textContent would not do
  const A = '[data-role=assistant]';
  const domRe = new RegExp(MARK.source, 'g');
  const scan = (text, t) => {
    let m;
    domRe.lastIndex = 0;
    while ((m = domRe.exec(text)) !== null) { if (!(m[1] in B.dom)) B.dom[m[1]] = t; }
  };
  const dmo = new MutationObserver((records) => {
    if (!B.measuring) return;
    const t = now();
    for (const r of records) {
      if (r.type === 'characterData') {
        const p = r.target.parentElement;
        if (p && r.target.isConnected && p.closest(A)) scan(r.target.data, t);
        continue;
      }
      if (!r.addedNodes.length) continue;
      const inside = r.target.nodeType === 1 && r.target.closest(A);
      for (const n of r.addedNodes) {
        if (!n.isConnected) continue;  // added and removed again before anything could paint it
        if (inside) { scan(n.textContent, t); continue; }
        if (n.nodeType !== 1) continue;
        if (n.matches(A)) scan(n.textContent, t);
        else for (const el of n.querySelectorAll(A)) scan(el.textContent, t);
      }
    }
  });
  const startDom = () => dmo.observe(document.documentElement, {childList: true, subtree: true, characterData: true});
  if (document.documentElement) startDom(); else document.addEventListener('readystatechange', startDom, {once: true});
  // after a round: how many of the markers that arrived are in the assistant messages' text now
  B.inDom = () => {
    const found = new Set();
    const re = new RegExp(MARK.source, 'g');
    for (const el of document.querySelectorAll(A)) {
      const text = el.textContent;
      let m;
      while ((m = re.exec(text)) !== null) { if (m[1] in B.arrivals) found.add(m[1]); }
    }
    return found.size;
  };
})();
"""


async def api(base: str, method: str, path: str, body: dict | None = None, *, ssl=None) -> dict:
    import aiohttp

    # Origin: the app runs with --auth none here, whose state changes must come from its own origin (CSRF check)
    async with aiohttp.ClientSession() as s:
        async with s.request(method, base + path, json=body, ssl=ssl, headers={"Origin": base}) as resp:
            if resp.content_type == "application/json":
                return await resp.json()
            await resp.read()
            return {}


async def prepare_threads(base: str) -> tuple[int, list[int], int]:
    """(main thread with an answer, its 9 pins, an empty thread for the long answer), all made through the API."""
    main = await api(base, "POST", "/api/threads", {"title": "bench browser"})
    await api(base, "POST", f"/api/threads/{main['id']}/chat", {"message": "[[bench tokens=20 rate=1000]] hello"})
    thread = await api(base, "GET", f"/api/threads/{main['id']}")
    answer = next(m for m in thread["messages"] if m["role"] == "assistant")
    pins = []
    for i in range(9):
        start = (i * 7) % max(1, len(answer["content"]) - 10)
        pin = await api(base, "POST", "/api/threads", {"parent_id": main["id"], "anchor": {
            "message_id": answer["id"], "start": start, "end": start + 5}})
        pins.append(pin["id"])
    long = await api(base, "POST", "/api/threads", {"title": "bench long answer"})
    return main["id"], pins, long["id"]


async def renderer_warm(page) -> None:
    """Wait until the page's Markdown renderer is loaded and warmed up (it loads after the composer is usable, which
    is what the load figures time); streams are measured after that."""
    await page.wait_for_function("() => ['warm', 'failed'].includes(document.documentElement.dataset.renderer)",
                                 timeout=READY_TIMEOUT_MS)


def panel_selector(thread_id: int) -> str:
    """The panel of one server thread (a draft panel has no numeric id; sidebar rows hold no composer)."""
    return f'[data-thread-id="{int(thread_id)}"]:has([data-testid=composer])'


async def ready_panels(page, ids: list[int], timeout_ms: int = 15_000) -> list:
    """Locators of the panels, among `ids`, that show a composer (waits up to `timeout_ms` for all of them)."""
    sels = [panel_selector(i) for i in ids]
    check = " + ".join(f"(document.querySelector({s!r}) ? 1 : 0)" for s in sels)
    try:
        await page.wait_for_function(f"() => ({check}) >= {len(ids)}", timeout=timeout_ms)
    except Exception:  # noqa: BLE001 - measure the panels that are there
        pass
    return [page.locator(s).first for s in sels if await page.locator(s).count()]


async def stream_round(page, panels: list, tokens: int, rate: float, md: bool = False) -> dict:
    """Send one message per panel asking for `tokens` at `rate`; measure arrival -> DOM for every token."""
    await page.evaluate("Object.assign(window.__bench, {measuring: true, arrivals: {}, dom: {}, longest: 0, "
                        "longtasks: []})")
    message = f"[[bench tokens={tokens} rate={rate:g}{' md=1' if md else ''}]] go"
    for panel in panels:
        await panel.locator("[data-testid=composer]").fill(message)
        await panel.locator("[data-testid=send]").click()
    await page.wait_for_timeout(int(tokens / rate * 1000) + 2000)
    await page.wait_for_function(
        "() => document.querySelectorAll('[data-role=assistant][data-status=streaming]').length === 0",
        timeout=max(30_000, int(tokens / rate * 1000)))
    await page.evaluate("window.__bench.measuring = false")
    b = await page.evaluate("({arrivals: window.__bench.arrivals, dom: window.__bench.dom, "
                            "longest: window.__bench.longest, longtasks: window.__bench.longtasks, "
                            "noLongTasks: window.__bench.noLongTasks, inDom: window.__bench.inDom(), "
                            "errors: Array.from(document.querySelectorAll("
                            "'[data-testid=thread-error]:not([hidden])')).map(e => e.textContent).filter(t => t)})")
    delays = sorted(b["dom"][k] - b["arrivals"][k] for k in b["dom"] if k in b["arrivals"])
    first, last = (min(b["arrivals"].values()), max(b["arrivals"].values())) if b["arrivals"] else (0.0, 0.0)
    # each long task: (start relative to the first token's arrival, duration) in ms; after the last arrival means
    # the work of a finished answer, not of streaming
    tasks = sorted(((round(t0 - first), round(d)) for t0, d in b["longtasks"]), key=lambda x: -x[1])
    return {
        "text": "markdown" if md else "plain", "streams_sent": len(panels), "tokens": tokens, "rate": rate,
        "streams_started": round(len(b["arrivals"]) / tokens),
        "tokens_arrived": len(b["arrivals"]), "tokens_matched": len(delays), "tokens_in_dom": b["inDom"],
        "token_to_dom_p50_ms": delays[len(delays) // 2] if delays else None,
        "token_to_dom_p99_ms": delays[min(len(delays) - 1, int(0.99 * len(delays)))] if delays else None,
        "token_to_dom_max_ms": delays[-1] if delays else None,
        "longest_task_ms": b["longest"], "long_tasks": len(b["longtasks"]),
        "stream_ms": round(last - first), "long_tasks_at_ms": tasks[:20],
        "long_tasks_after_last_token": sum(1 for t0, _ in tasks if t0 > last - first),
        "long_tasks_api": b.get("noLongTasks") or "ok", "ui_errors": sorted(set(b["errors"]))[:3],
    }


async def streams_figure(page, panels: list, tokens: int, rate: float, md: bool) -> list[dict]:
    """The 10-panel round; if the frontend refused some streams, once more with the same total rate on fewer."""
    rounds = [await stream_round(page, panels, tokens, rate, md)]
    started = rounds[0]["streams_started"]
    if 0 < started < len(panels):
        await page.wait_for_timeout(500)
        rounds.append(await stream_round(page, panels[:started], tokens, rate * len(panels) / started, md))
    return rounds


async def open_ready(ctx, url: str):
    """A new page of `ctx` at `url`, once a composer is enabled; (page, tti ms) or (page, None) on timeout."""
    page = await ctx.new_page()
    await page.goto(url)
    try:
        await page.wait_for_function(READY, timeout=READY_TIMEOUT_MS)
    except Exception:  # noqa: BLE001
        return page, None
    return page, await page.evaluate("window.__bench.tti")


async def measure(url: str, api_base: str, tokens: int, rate: float, *, cold_runs: int = 3,
                  long_tokens: int = 8000, long_rate: float = 400.0) -> dict:
    from playwright.async_api import async_playwright

    main_id, pins, long_id = await prepare_threads(api_base)
    page_url = f"{url}/#t={main_id}&p={','.join(map(str, pins))}"
    out: dict = {"url": url, "threads": 1 + len(pins)}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            cold = []
            for k in range(max(1, cold_runs)):  # each in a new context: empty HTTP cache; the last one is kept
                ctx = await browser.new_context(ignore_https_errors=True, viewport={"width": 1600, "height": 1000})
                await ctx.add_init_script(INIT_SCRIPT)
                page, tti = await open_ready(ctx, page_url)
                if tti is None:
                    state = await page.evaluate("document.documentElement.dataset.appState || ''")
                    shown = await page.evaluate("(document.body && document.body.innerText || '').slice(0, 400)")
                    out["skipped"] = (f"page not ready: no enabled [data-testid=composer] within "
                                      f"{READY_TIMEOUT_MS / 1000:.0f}s (app state {state!r}; page shows "
                                      f"{' '.join(shown.split())[:300]!r})")
                    return out
                cold.append(tti)
                if k < max(1, cold_runs) - 1:
                    await ctx.close()
            out["cold_tti_ms"] = statistics.median(cold)
            out["cold_runs_ms"] = cold
            warm = []
            for _ in range(2):
                await page.reload()
                await page.wait_for_function(READY, timeout=READY_TIMEOUT_MS)
                warm.append(await page.evaluate("window.__bench.tti"))
            out["warm_tti_ms"] = statistics.median(warm)
            # ---- 10 concurrent streams: plain, then Markdown ---------------------------------------------------
            await renderer_warm(page)
            panels = await ready_panels(page, [main_id, *pins])
            out["panels"] = len(panels)
            if not panels:
                out["stream_skipped"] = "no thread panel with a composer"
                return out
            await page.wait_for_timeout(500)
            out["rounds"] = await streams_figure(page, panels, tokens, rate, md=False)
            await page.wait_for_timeout(500)
            out["md_rounds"] = await streams_figure(page, panels, tokens, rate, md=True)
            # ---- one long Markdown answer, alone in a page -----------------------------------------------------
            if long_tokens > 0:
                await page.close()
                page, tti = await open_ready(ctx, f"{url}/#t={long_id}")
                if tti is not None:
                    await renderer_warm(page)
                long_panels = await ready_panels(page, [long_id]) if tti is not None else []
                if long_panels:
                    await page.wait_for_timeout(500)
                    out["long"] = await stream_round(page, long_panels, long_tokens, long_rate, md=True)
                else:
                    out["long"] = {"skipped": f"no panel with a composer for thread {long_id}"}
        finally:
            await browser.close()
    return out


FIGURE_KEYS = ("token_to_dom_p50_ms", "token_to_dom_p99_ms", "token_to_dom_max_ms", "longest_task_ms", "long_tasks")


def round_line(r: dict) -> str:
    if r.get("skipped"):
        return f"not measured: {r['skipped']}"
    if r["token_to_dom_p99_ms"] is None:
        return f"{r['streams_sent']} streams sent: no token reached the DOM {r['ui_errors']}"
    lost = r["tokens_arrived"] - r["tokens_in_dom"]
    return (f"{r['streams_started']} of {r['streams_sent']} streams x {r['tokens']} {r['text']} tokens at "
            f"{r['rate']:g} tok/s: token-to-DOM p50 {r['token_to_dom_p50_ms']:.1f} ms, p99 "
            f"{r['token_to_dom_p99_ms']:.1f} ms, max {r['token_to_dom_max_ms']:.1f} ms; longest task "
            f"{r['longest_task_ms']:.0f} ms ({r['long_tasks']} > 50 ms"
            + (f", {r['long_tasks_after_last_token']} after the last token" if r["long_tasks_after_last_token"] else "")
            + f"); {r['tokens_matched']} tokens"
            + (f"; {lost} arrived markers not in the final DOM text" if lost else "")
            + (f"; UI refused the rest: {r['ui_errors'][0]!r}" if r["ui_errors"] else ""))


def run_browser(args, tmp: Path) -> dict:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return {"skipped": "playwright not installed", "summary": "not measured: playwright not installed"}
    if not Path(CHROMIUM).exists():
        return {"skipped": f"{CHROMIUM} missing", "summary": f"not measured: {CHROMIUM} missing"}
    subject, load = stacks.cores()
    upstream = Upstream(load).start()
    use_nginx = stacks.nginx_available() is None
    server = Server("app+nginx" if use_nginx else "app", tmp / "browser", upstream.url, None)
    tokens = 100 if args.quick else 300
    long_tokens = getattr(args, "long_tokens", None)
    long_tokens = (2000 if args.quick else 8000) if long_tokens is None else long_tokens
    long_rate = getattr(args, "long_rate", None) or 400.0
    cold_runs = getattr(args, "cold_runs", None) or (1 if args.quick else 3)
    try:
        server.start()
        url = getattr(server, "https_url", None) if use_nginx else server.url
        url = (url or server.url).replace("localhost", "127.0.0.1")
        out = asyncio.run(measure(url, server.url, tokens, 100.0, cold_runs=cold_runs, long_tokens=long_tokens,
                                  long_rate=long_rate))
        out["via"] = "nginx HTTPS HTTP/2" if use_nginx else "app HTTP/1.1 (6 streams per origin)"
    except Exception as exc:  # noqa: BLE001
        out = {"skipped": f"{type(exc).__name__}: {exc}"[:500]}
    finally:
        server.stop()
        upstream.stop()
    if out.get("skipped"):
        print(f"[bench] browser not measured: {out['skipped']}", file=sys.stderr)
        out["summary"] = f"not measured: {out['skipped']}"
        return out
    # the figures: the last round of each (10 streams if the UI allows them, else the same total rate on fewer)
    rounds, md_rounds, long = out.get("rounds") or [], out.get("md_rounds") or [], out.get("long")
    if rounds:
        out.update({k: rounds[-1][k] for k in FIGURE_KEYS})
    if md_rounds:
        out["markdown"] = {k: md_rounds[-1][k] for k in FIGURE_KEYS + ("streams_started", "tokens_matched")}
    if long and not long.get("skipped"):
        out["long_answer"] = {k: long[k] for k in FIGURE_KEYS + ("tokens", "rate", "tokens_matched")}
    cold_all = ", ".join(f"{c / 1000:.2f}" for c in out.get("cold_runs_ms", []))
    lines = [f"cold load {out['cold_tti_ms'] / 1000:.2f} s (median of {cold_all}), warm "
             f"{out['warm_tti_ms'] / 1000:.2f} s (to an enabled composer, {out['via']})"]
    lines += [f"plain: {round_line(r)}" for r in rounds]
    lines += [f"markdown: {round_line(r)}" for r in md_rounds]
    if long:
        lines.append(f"long answer: {round_line(long)}")
    if not rounds:
        lines.append(f"streaming not measured: {out.get('stream_skipped', 'no tokens seen')}")
    out["summary"] = "\n".join(lines)
    print(f"[bench] browser: {' / '.join(lines)}", file=sys.stderr)
    return out
