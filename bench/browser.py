"""The `browser` figure: the Pyodide page in headless Chromium (Playwright, /usr/bin/chromium).

- Cold load: a new browser context (empty cache) opens `/#t=<thread>`; time to interactive = navigation start to
  the moment `[data-testid=composer]` is in the DOM and enabled (a MutationObserver installed before any page
  script stamps `performance.now()`). Warm: `reload()` in the same context (HTTP cache filled).
- Streaming: one thread with an answer plus 9 pins on it (made through the API), opened together (`#t=..&p=..`),
  then each of the 10 panels' composers sends a message asking the bench upstream for 100 tokens/s. For each
  token: arrival = when its bytes come out of `fetch()`'s body stream in the page (a wrapper around
  `window.fetch` installed before the app loads, reading the time-stamp markers in the bytes), DOM = when a
  MutationObserver sees the marker inside a `[data-role=assistant]` message. Token-to-DOM = DOM - arrival (p50,
  p99, max). The longest main-thread task comes from the Long Tasks API over the streaming window.
- Through nginx over HTTPS + HTTP/2 when `app+nginx` can run (10 streams on one connection); else straight to the
  app over HTTP/1.1, where Chromium allows only 6 concurrent streams per origin (reported).

Skips with a message if the page is not ready (no composer within the timeout) or Chromium/Playwright is missing.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from . import stacks
from .stacks import Server, Upstream

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
READY_TIMEOUT_MS = 30_000

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
        B.longtasks.push(e.duration);
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
    const ts = new TransformStream({
      transform(chunk, ctl) {
        const t = now();
        const text = tail + dec.decode(chunk, {stream: true});
        let m, last = 0;
        MARK.lastIndex = 0;
        while ((m = MARK.exec(text)) !== null) { if (!(m[1] in B.arrivals)) B.arrivals[m[1]] = t; last = MARK.lastIndex; }
        tail = text.slice(last).slice(-48);
        ctl.enqueue(chunk);
      }
    });
    return new Response(resp.body.pipeThrough(ts), {status: resp.status, statusText: resp.statusText, headers: resp.headers});
  };
  // DOM: scan only the text added to assistant messages since the last look
  const seen = new WeakMap();
  const dmo = new MutationObserver(() => {
    if (!B.measuring) return;
    const t = now();
    for (const el of document.querySelectorAll('[data-role=assistant]')) {
      const text = el.textContent;
      const from = seen.get(el) || 0;
      if (text.length === from) continue;
      const part = text.slice(Math.max(0, from - 40));
      let m;
      MARK.lastIndex = 0;
      while ((m = MARK.exec(part)) !== null) { if (!(m[1] in B.dom)) B.dom[m[1]] = t; }
      seen.set(el, text.length);
    }
  });
  const startDom = () => dmo.observe(document.documentElement, {childList: true, subtree: true, characterData: true});
  if (document.documentElement) startDom(); else document.addEventListener('readystatechange', startDom, {once: true});
})();
"""


async def api(base: str, method: str, path: str, body: dict | None = None, *, ssl=None) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async with s.request(method, base + path, json=body, ssl=ssl) as resp:
            if resp.content_type == "application/json":
                return await resp.json()
            await resp.read()
            return {}


async def prepare_threads(base: str) -> tuple[int, list[int]]:
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
    return main["id"], pins


async def stream_round(page, panels, count: int, tokens: int, rate: float) -> dict:
    """Send one message per panel asking for `tokens` at `rate`; measure arrival -> DOM for every token."""
    await page.evaluate("Object.assign(window.__bench, {measuring: true, arrivals: {}, dom: {}, longest: 0, "
                        "longtasks: []})")
    message = f"[[bench tokens={tokens} rate={rate:g}]] go"
    for i in range(count):
        panel = panels.nth(i)
        await panel.locator("[data-testid=composer]").fill(message)
        await panel.locator("[data-testid=send]").click()
    await page.wait_for_timeout(int(tokens / rate * 1000) + 2000)
    await page.wait_for_function(
        "document.querySelectorAll('[data-role=assistant][data-status=streaming]').length === 0", timeout=30_000)
    await page.evaluate("window.__bench.measuring = false")
    b = await page.evaluate("({arrivals: window.__bench.arrivals, dom: window.__bench.dom, "
                            "longest: window.__bench.longest, longtasks: window.__bench.longtasks, "
                            "noLongTasks: window.__bench.noLongTasks, errors: Array.from(document.querySelectorAll("
                            "'[data-testid=thread-error]:not([hidden])')).map(e => e.textContent).filter(t => t)})")
    delays = sorted(b["dom"][k] - b["arrivals"][k] for k in b["dom"] if k in b["arrivals"])
    return {
        "streams_sent": count, "rate": rate, "streams_started": round(len(b["arrivals"]) / tokens),
        "tokens_arrived": len(b["arrivals"]), "tokens_matched": len(delays),
        "token_to_dom_p50_ms": delays[len(delays) // 2] if delays else None,
        "token_to_dom_p99_ms": delays[min(len(delays) - 1, int(0.99 * len(delays)))] if delays else None,
        "token_to_dom_max_ms": delays[-1] if delays else None,
        "longest_task_ms": b["longest"], "long_tasks": len(b["longtasks"]),
        "long_tasks_api": b.get("noLongTasks") or "ok", "ui_errors": sorted(set(b["errors"]))[:3],
    }


async def measure(url: str, api_base: str, tokens: int, rate: float) -> dict:
    from playwright.async_api import async_playwright

    main_id, pins = await prepare_threads(api_base)
    page_url = f"{url}/#t={main_id}&p={','.join(map(str, pins))}"
    out: dict = {"url": url, "threads": 1 + len(pins)}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            ctx = await browser.new_context(ignore_https_errors=True, viewport={"width": 1600, "height": 1000})
            await ctx.add_init_script(INIT_SCRIPT)
            page = await ctx.new_page()
            await page.goto(page_url)
            try:
                await page.wait_for_function("window.__bench && window.__bench.tti !== null", timeout=READY_TIMEOUT_MS)
            except Exception:  # noqa: BLE001
                state = await page.evaluate("document.documentElement.dataset.appState || ''")
                out["skipped"] = (f"page not ready: no enabled [data-testid=composer] within "
                                  f"{READY_TIMEOUT_MS / 1000:.0f}s (app state {state!r})")
                return out
            out["cold_tti_ms"] = await page.evaluate("window.__bench.tti")
            warm = []
            for _ in range(2):
                await page.reload()
                await page.wait_for_function("window.__bench && window.__bench.tti !== null", timeout=READY_TIMEOUT_MS)
                warm.append(await page.evaluate("window.__bench.tti"))
            out["warm_tti_ms"] = statistics.median(warm)
            # ---- 10 concurrent streams -------------------------------------------------------------------------
            panels = page.locator("[data-thread-id]:has([data-testid=composer])")
            try:
                await page.wait_for_function(
                    f"document.querySelectorAll('[data-thread-id] [data-testid=composer]').length >= {1 + len(pins)}",
                    timeout=15_000)
            except Exception:  # noqa: BLE001
                pass
            count = await panels.count()
            out["panels"] = count
            if count == 0:
                out["stream_skipped"] = "no thread panel with a composer"
                return out
            await page.wait_for_timeout(500)
            rounds = [await stream_round(page, panels, count, tokens, rate)]
            started = rounds[0]["streams_started"]
            if 0 < started < count:  # the frontend refused some: same total token rate on fewer streams
                await page.wait_for_timeout(500)
                rounds.append(await stream_round(page, panels, started, tokens, rate * count / started))
            out["rounds"] = rounds
        finally:
            await browser.close()
    return out


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
    try:
        server.start()
        url = getattr(server, "https_url", None) if use_nginx else server.url
        url = (url or server.url).replace("localhost", "127.0.0.1")
        out = asyncio.run(measure(url, server.url, tokens, 100.0))
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
    rounds = out.get("rounds") or []
    if rounds:  # the figure: the last round (10 streams if the UI allows them, else the same total rate)
        last = rounds[-1]
        out.update({k: last[k] for k in ("token_to_dom_p50_ms", "token_to_dom_p99_ms", "token_to_dom_max_ms",
                                         "longest_task_ms", "long_tasks")})
    lines = [f"cold load {out['cold_tti_ms'] / 1000:.2f} s, warm {out['warm_tti_ms'] / 1000:.2f} s (to an enabled "
             f"composer, {out['via']})"]
    for r in rounds:
        if r["token_to_dom_p99_ms"] is None:
            lines.append(f"{r['streams_sent']} streams sent: no token reached the DOM {r['ui_errors']}")
            continue
        lines.append(f"{r['streams_started']} of {r['streams_sent']} streams x {r['rate']:g} tok/s: token-to-DOM "
                     f"p50 {r['token_to_dom_p50_ms']:.1f} ms, p99 {r['token_to_dom_p99_ms']:.1f} ms, max "
                     f"{r['token_to_dom_max_ms']:.1f} ms; longest task {r['longest_task_ms']:.0f} ms "
                     f"({r['long_tasks']} > 50 ms); {r['tokens_matched']} tokens"
                     + (f"; UI refused the rest: {r['ui_errors'][0]!r}" if r["ui_errors"] else ""))
    if not rounds:
        lines.append(f"streaming not measured: {out.get('stream_skipped', 'no tokens seen')}")
    out["summary"] = "\n".join(lines)
    print(f"[bench] browser: {' / '.join(lines)}", file=sys.stderr)
    return out
