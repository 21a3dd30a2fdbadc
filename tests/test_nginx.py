"""nginx in front of the app (issue 4), proven with a real nginx started from the repository's templates.

Each test renders nginx/*.template (with nginx/render.py, as `just nginx` does) into a private prefix, starts a real
nginx in front of the real app (in-process on a real port; `python -m server` started by scripts/nginx.sh in the
`just nginx` test) and the scripted fake upstream, and talks to it over real sockets. Chromium drives the HTTP/2
tests. Without nginx the module is skipped; without openssl or Chromium, the tests that need them are.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import api_token, write_models_file
from tests.fake_upstream import FakeUpstream, Record
from tests.nginx_helpers import ROOT, Nginx, TimedStream, client_session, make_cert, nginx_binary, timed_chat
from tests.server_process import free_port
from tests.test_chat_stream import kinds

NGINX = nginx_binary()
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx; or set PINCHAT_NGINX_BIN)")

# A token may reach the client through nginx at most this long after the upstream sent it (the issue's "small
# delay"); on loopback it takes ~1-3 ms, straight from the app or through nginx alike.
MAX_TOKEN_LAG = 0.030
HICCUPS, HICCUP_MAX = 2, 0.250  # see assert_streamed
MAX_EXTRA_MEDIAN = 0.005  # the median through nginx vs the median straight from the app, measured side by side


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificate")
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def start_nginx(tls_cert):
    """Start nginx in front of an app port; `variant` may edit the rendered config before it starts."""
    # A prefix everyone can traverse: started by root (CI containers), nginx's workers run as `nobody` and must
    # reach their temp folders, which pytest's 0700 tmp_path would hide.
    base = Path(tempfile.mkdtemp(prefix="pinchat-nginx-"))
    base.chmod(0o755)
    started: list[Nginx] = []

    async def start(app_port: int, *, read_timeout: str = "120s", variant=None) -> Nginx:
        prefix = base / str(len(started))
        prefix.mkdir()
        nginx = Nginx(prefix, app_port=app_port, cert=tls_cert[0], key=tls_cert[1], read_timeout=read_timeout)
        nginx.render()
        if variant is not None:
            variant(nginx)
        started.append(nginx)
        return await nginx.start()

    yield start
    for nginx in started:
        nginx.stop()
    for nginx in started:
        log = nginx.error_log().strip()
        if log:
            print(f"--- nginx error.log ({nginx.prefix}) ---\n{log}")
    shutil.rmtree(base, ignore_errors=True)


def app_port(app) -> int:
    return app.client.server.port


def record_for(fake: FakeUpstream, marker: str) -> Record:
    (record,) = [r for r in fake.records if marker in r.messages[-1]["content"]]
    return record


def token_lags(stream: TimedStream, record: Record, prefix: str) -> list[float]:
    """Per token: arrival at the client minus the moment the fake upstream wrote it."""
    tokens = stream.tokens()
    assert [text for _, text in tokens] == [f"{prefix}{i} " for i in range(len(record.send_times))]
    return [arrived - sent for (arrived, _), sent in zip(tokens, record.send_times, strict=True)]


async def measure_side_by_side(app, fake, nginx_base: str, count: int = 40, delay_ms: int = 50):
    """The same slow answer twice at once: straight from the app and through nginx. Returns both per-token lags."""
    direct_thread, proxied_thread = await app.new_thread(), await app.new_thread()
    # Warm-up: the first streamed answer of a process pays one-off costs (LiteLLM's lazy set-up blocks the event
    # loop for ~0.1-0.4 s) that are not what we measure, and nginx opens its keep-alive connection to the app.
    await timed_chat(nginx_base, direct_thread["id"], "[[tokens=3 prefix=W]]", headers=app.headers)
    direct, proxied = await asyncio.gather(
        timed_chat(app.base.rstrip("/"), direct_thread["id"], f"[[tokens={count} delay_ms={delay_ms} prefix=D]]",
                   headers=app.headers),
        timed_chat(nginx_base, proxied_thread["id"], f"[[tokens={count} delay_ms={delay_ms} prefix=N]]",
                   headers=app.headers),
    )
    for stream in (direct, proxied):
        assert stream.status == 200 and stream.error is None and stream.types[-1] == "done", stream
    return token_lags(direct, record_for(fake, "prefix=D"), "D"), token_lags(proxied, record_for(fake, "prefix=N"), "N")


def describe(lags: list[float]) -> str:
    ms = sorted(x * 1000 for x in lags)
    return f"median {statistics.median(ms):.1f} ms, p90 {ms[int(len(ms) * 0.9)]:.1f} ms, max {ms[-1]:.1f} ms"


def late_tokens(lags: list[float]) -> list[int]:
    return [i for i, lag in enumerate(lags) if lag > MAX_TOKEN_LAG]


def assert_streamed(direct: list[float], proxied: list[float]) -> None:
    """Every token, one by one: through nginx within MAX_TOKEN_LAG of the same token straight from the app.

    The two answers run at once in one process, token i of each sent by the fake upstream at the same moment, so a
    stall of the process (a loaded 2-core CI box deschedules it for tens, now and then hundreds, of ms) delays both
    alike; what nginx adds is the difference. Up to HICCUPS tokens may still be late by less than HICCUP_MAX.
    Buffering looks nothing like that: it holds ~every token, the first ones for seconds.
    """
    added = [through - straight for through, straight in zip(proxied, direct, strict=True)]
    late = late_tokens(added)
    detail = [(i, round(proxied[i] * 1000, 1), round(direct[i] * 1000, 1)) for i in late]
    assert len(late) <= HICCUPS and max(added) < HICCUP_MAX, (
        f"tokens held back by nginx (index, ms through nginx, ms direct): {detail}")
    assert statistics.median(proxied) < statistics.median(direct) + MAX_EXTRA_MEDIAN


def assert_burst(direct: list[float], proxied: list[float]) -> None:
    assert len(late_tokens(direct)) <= HICCUPS  # the app itself streamed ...
    assert len(late_tokens(proxied)) >= 30, f"expected a burst, got {describe(proxied)}"  # ... nginx held them
    assert max(proxied) > 1.0  # the first tokens waited for most of the 2 s answer


# ---- 1. the shipped config streams every token as it comes --------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_each_token_passes_nginx_without_delay(make_app, settings, fake, start_nginx, scheme):
    """40 tokens 50 ms apart; per token, the arrival through nginx vs the upstream's send time, next to the same
    measured straight from the app at the same time. https: the TLS server block (HTTP/1.1 over TLS here; HTTP/2
    is covered by the browser test)."""
    app = await make_app(settings)
    nginx = await start_nginx(app_port(app))
    direct, proxied = await measure_side_by_side(app, fake, nginx.http_url if scheme == "http" else nginx.https_url)
    print(f"\n{scheme}: direct {describe(direct)}; through nginx {describe(proxied)}")
    assert_streamed(direct, proxied)


# ---- 2. the measurement can fail: variants of the config --------------------------------------------------------

# (rendered file, old text, new text)
COMMON, PROXY = "pinchat-common.conf", "pinchat-proxy.conf"
BUFFERING_ON = (COMMON, "proxy_buffering off;", "proxy_buffering on; proxy_ignore_headers X-Accel-Buffering;")
HTTP_1_0 = (PROXY, "proxy_http_version 1.1;", "proxy_http_version 1.0;")  # nginx's default
HONOUR_HEADER = (COMMON, "proxy_buffering off;", "proxy_buffering on;")  # X-Accel-Buffering from the app counts
GZIP_SSE = (COMMON, "gzip off;", "gzip on; gzip_types text/event-stream;")

VARIANTS = {
    # The negative control: what a stock `proxy_pass` does (buffering on, HTTP/1.0 to the app, which then sends an
    # unchunked body), with the app's `X-Accel-Buffering: no` ignored. nginx holds the stream until the end.
    "stock-proxy-header-ignored": ([BUFFERING_ON, HTTP_1_0], "burst"),
    # Compressing the event stream in a buffering proxy brings the burst back even over HTTP/1.1.
    "buffering-and-gzip-on-sse": ([BUFFERING_ON, GZIP_SSE], "burst"),
    # The app's header alone rescues a stock proxy: nginx honours X-Accel-Buffering and streams.
    "stock-proxy-header-honoured": ([HONOUR_HEADER, HTTP_1_0], "stream"),
    # Found while writing these tests (nginx 1.22): buffering on with the app's header ignored does NOT burst over
    # HTTP/1.1, because nginx hands every complete chunk of a chunked body to the client at once. The burst needs an
    # unchunked body (HTTP/1.0, nginx's default) or a compressor in the path. Kept to pin that behaviour down.
    "buffering-on-header-ignored-http1.1": ([BUFFERING_ON], "stream"),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_config_variants_negative_controls(make_app, settings, fake, start_nginx, variant):
    edits, expected = VARIANTS[variant]

    def edit(nginx: Nginx) -> None:
        for filename, old, new in edits:
            nginx.replace_once(filename, old, new)

    app = await make_app(settings)
    nginx = await start_nginx(app_port(app), variant=edit)
    direct, proxied = await measure_side_by_side(app, fake, nginx.http_url)
    print(f"\n{variant}: direct {describe(direct)}; through nginx {describe(proxied)}")
    if expected == "burst":
        assert_burst(direct, proxied)
    else:
        assert_streamed(direct, proxied)


# ---- 3. read timeout vs heartbeat ---------------------------------------------------------------------------------


@pytest.mark.parametrize("heartbeat", [0.5, 0], ids=["heartbeat-0.5s", "heartbeat-off"])
async def test_silence_longer_than_nginx_read_timeout(make_app, settings, fake, start_nginx, heartbeat):
    """proxy_read_timeout 2 s; the provider is silent for 3 s before its first token."""
    app = await make_app(settings, heartbeat=heartbeat)
    nginx = await start_nginx(app_port(app), read_timeout="2s")
    thread = await app.new_thread()
    stream = await timed_chat(nginx.http_url, thread["id"], "[[tokens=3 first_delay_ms=3000 prefix=S]]",
                              headers=app.headers)
    assert stream.status == 200
    if heartbeat:
        # The `: ping` comments pass nginx and each one restarts its read timer: the answer completes.
        assert stream.error is None, stream.error
        assert kinds([e for _, e in stream.events]) == ["start", "token", "done"]  # 3 tokens, in 1-3 frames
        assert stream.token_count() == 3
        assert len(stream.pings) >= 4
        arrivals = sorted([stream.started, *stream.pings, *(t for t, _ in stream.events)])
        assert max(b - a for a, b in zip(arrivals, arrivals[1:])) < 2.0
        assert "timed out" not in nginx.error_log()
    else:
        # Without heartbeats nginx gives up after 2 s of silence and cuts the stream: no terminal event.
        elapsed = stream.ended - stream.started
        assert stream.types == ["start"] and stream.terminal is None, stream.types
        assert stream.error is not None  # a truncated chunked body, not a clean end
        assert 1.8 < elapsed < 2.9, elapsed
        assert "upstream timed out" in nginx.error_log()
        # nginx hung up on the app too: the (empty) answer is saved as interrupted and the provider call closed.
        message = await wait_answer_status(nginx.http_url, thread["id"], "interrupted", app.headers)
        assert message["content"] == ""
        assert (await fake.wait_ended()).outcome == "client_closed"


async def wait_answer_status(base: str, thread_id: int, status: str, headers: dict[str, str],
                             timeout: float = 3.0) -> dict:
    """Poll the thread through nginx (as the owner: `headers`) until its last message has `status`; return it."""
    deadline = time.monotonic() + timeout
    async with client_session(headers=headers) as http:
        while True:
            async with http.get(f"{base}/api/threads/{thread_id}") as resp:
                assert resp.status == 200
                last = (await resp.json())["messages"][-1]
            if last["status"] == status:
                return last
            assert time.monotonic() < deadline, f"the answer stayed {last['status']}: {last}"
            await asyncio.sleep(0.02)


# ---- 4. an abort through nginx reaches the app ----------------------------------------------------------------------


@pytest.mark.parametrize("when", ["mid-stream", "while-provider-silent"])
async def test_client_abort_through_nginx_stops_the_generation(make_app, settings, fake, start_nginx, when):
    """The client drops its connection to nginx; nginx must drop its connection to the app, which saves the partial
    answer as interrupted and closes the provider call. Heartbeats are 15 s apart (the default) so no write of the
    app's can be what notices: the close travels from the client through nginx."""
    app = await make_app(settings)
    nginx = await start_nginx(app_port(app))
    thread = await app.new_thread()
    if when == "mid-stream":
        message, keep = "[[tokens=300 delay_ms=20 prefix=A]]", 5
    else:
        message, keep = "[[tokens=5 hang_after=2 prefix=A]]", 2
    stream = await timed_chat(nginx.http_url, thread["id"], message, stop_after_tokens=keep, headers=app.headers)
    closed = time.monotonic()
    assert stream.token_count() >= keep and stream.terminal is None

    answer = await wait_answer_status(nginx.http_url, thread["id"], "interrupted", app.headers)
    noticed = time.monotonic() - closed
    record = await fake.wait_ended()
    assert record.outcome == "client_closed"
    sent = "".join(f"A{i} " for i in range(record.tokens_sent))
    received = "".join(text for _, text in stream.tokens())
    # Saved: everything the client saw, and at most what the provider had sent by then.
    assert answer["content"].startswith(received) and sent.startswith(answer["content"])
    tokens_when_closed = record.tokens_sent
    await asyncio.sleep(0.2)
    assert record.tokens_sent == tokens_when_closed  # the provider really stopped
    print(f"\n{when}: abort noticed by the app {noticed * 1000:.0f} ms after the client closed")
    assert noticed < 1.0


# ---- static files and headers -----------------------------------------------------------------------------------------


def web_paths() -> list[str]:
    web = ROOT / "web"
    paths = ["/"] + [f"/{p.name}" for p in sorted([*web.glob("*.css"), *web.glob("*.js")])]
    paths += [f"/py/{p.name}" for p in sorted((web / "py").glob("*.py"))]
    paths += ["/" + str(p.relative_to(web)) for p in sorted((web / "vendor").glob("pyodide/*/*"))
              if not p.name.startswith(".")]
    return paths


# What the app's own static routes send with every file (server/static.py, server/security.py); nginx must match.
STATIC_HEADERS = ("Content-Type", "Cache-Control", "X-Content-Type-Options", "Content-Security-Policy",
                  "Referrer-Policy", "X-Frame-Options", "Cross-Origin-Opener-Policy")


async def test_static_files_are_served_like_the_app_serves_them(make_app, settings, fake, start_nginx):
    """nginx serves web/ itself (the page `/` comes from the app, for its one-time sign-in URL); each file gets the
    content type, caching and security headers (CSP, no framing, ...) the app's own static routes give it, and no
    version banner."""
    app = await make_app(settings)
    nginx = await start_nginx(app_port(app))
    paths = web_paths()
    async with client_session() as http:
        for path in paths:
            heads = []
            for base in (app.base.rstrip("/"), nginx.https_url):
                async with http.head(base + path) as resp:
                    heads.append((resp.status, *(resp.headers.get(name) for name in STATIC_HEADERS)))
                    if base == nginx.https_url:
                        assert resp.headers["Server"] == "nginx", (path, resp.headers["Server"])  # server_tokens off
            assert heads[0][0] == 200 and heads[1] == heads[0], (path, heads)
            assert None not in heads[0], (path, heads[0])
        wasm = [p for p in paths if p.endswith(".wasm")]
        if wasm:  # present after `just setup` (scripts/vendor_pyodide.sh)
            async with http.head(nginx.https_url + wasm[0]) as resp:
                assert resp.headers["Content-Type"] == "application/wasm"
                assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        # gzip for static text; a big vendor module is compressed on the way out.
        text = [p for p in paths if p.endswith((".mjs", ".py"))]
        async with http.get(nginx.https_url + max(text, key=lambda p: (ROOT / "web" / p.lstrip("/")).stat().st_size),
                            headers={"Accept-Encoding": "gzip"}) as resp:
            assert resp.status == 200 and resp.headers.get("Content-Encoding") == "gzip"
        # Dot-files are never served (the vendor folder's .complete stamp exists), missing files are a 404,
        # folders are not listed.
        dotfiles = ["/" + str(p.relative_to(ROOT / "web")) for p in (ROOT / "web").glob("vendor/pyodide/*/.*")]
        for path in [*dotfiles, "/.git/config", "/nope.css", "/py/"]:
            async with http.get(nginx.https_url + path) as resp:
                assert resp.status in (403, 404), (path, resp.status)


async def test_event_stream_is_never_compressed(make_app, settings, fake, start_nginx):
    app = await make_app(settings)
    nginx = await start_nginx(app_port(app))
    for base in (nginx.http_url, nginx.https_url):
        thread = await app.new_thread()
        stream = await timed_chat(base, thread["id"], "[[tokens=3]]",
                                  headers={**app.headers, "Accept-Encoding": "gzip, br"})
        assert stream.status == 200 and stream.types[-1] == "done"
        assert stream.headers["Content-Type"] == "text/event-stream"
        assert stream.headers.get("Cache-Control") == "no-cache"
        assert "Content-Encoding" not in stream.headers
        assert "X-Accel-Buffering" not in stream.headers  # an instruction to nginx, not passed on


# ---- `just nginx` (scripts/nginx.sh) and the client address behind nginx -----------------------------------------


async def test_just_nginx_script_end_to_end(tmp_path, fake):
    """scripts/nginx.sh as `just nginx --models ...` runs it (ports and prefix moved by its environment variables):
    it renders the config, makes a certificate, starts `python -m server` and nginx and prints the URLs; a chat
    streams through its TLS block; the app's access log (the real entry point's logger) shows the client's address
    (127.0.0.2), not nginx's 127.0.0.1, whatever forwarding headers the client sends; Ctrl-C stops both."""
    prefix = Path(tempfile.mkdtemp(prefix="pinchat-just-nginx-"))
    prefix.chmod(0o755)
    app_port, http_port, https_port = free_port(), free_port(), free_port()
    env = {**os.environ, "PINCHAT_NGINX_PREFIX": str(prefix), "PINCHAT_PORT": str(app_port),
           "PINCHAT_NGINX_HTTP_PORT": str(http_port), "PINCHAT_NGINX_HTTPS_PORT": str(https_port),
           "PINCHAT_NGINX_BIN": NGINX, "PINCHAT_PYTHON": sys.executable}
    models = write_models_file(tmp_path / "models.yaml", fake)
    owner = {"Authorization": f"Bearer {await api_token(tmp_path / 'chat.db')}"}  # the database the app will open
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / "scripts" / "nginx.sh"), "--models", str(models), "--db", str(tmp_path / "chat.db"),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    lines: list[str] = []
    ready = asyncio.Event()

    async def drain() -> None:
        async for raw in proc.stdout:
            lines.append(raw.decode(errors="replace").rstrip("\n"))
            if "Ctrl-C stops both" in lines[-1]:
                ready.set()

    reader = asyncio.create_task(drain())
    try:
        await asyncio.wait({asyncio.create_task(ready.wait()), reader}, timeout=60,
                                     return_when=asyncio.FIRST_COMPLETED)
        assert ready.is_set(), "scripts/nginx.sh did not start:\n" + "\n".join(lines)
        output = "\n".join(lines)
        assert f"https://localhost:{https_port}/" in output and f"http://localhost:{http_port}/" in output
        assert (prefix / "tls" / "cert.pem").is_file() and (prefix / "conf" / "pinchat.conf").is_file()

        https, http = f"https://127.0.0.1:{https_port}", f"http://127.0.0.1:{http_port}"
        async with client_session(local_addr="127.0.0.2", headers=owner) as client:
            async with client.post(f"{https}/api/threads", json={}) as resp:
                assert resp.status == 201, await resp.text()
                thread_id = (await resp.json())["id"]
            async with client.get(f"{http}/api/health?probe=via-nginx") as resp:
                assert resp.status == 200
            async with client.get(f"{https}/api/health?probe=via-nginx-spoofed",
                                  headers={"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"}) as resp:
                assert resp.status == 200
            async with client.get(f"http://127.0.0.1:{app_port}/api/health?probe=direct-spoofed",
                                  headers={"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"}) as resp:
                assert resp.status == 200
        stream = await timed_chat(https, thread_id, "[[tokens=5 delay_ms=10]]", headers=owner)
        assert kinds([e for _, e in stream.events]) == ["start", "token", "done"] and stream.token_count() == 5

        proc.send_signal(signal.SIGINT)  # what Ctrl-C does to the script
        assert await asyncio.wait_for(proc.wait(), 20) == 130
        await asyncio.wait_for(reader, 5)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        reader.cancel()
    output = "\n".join(lines)
    assert "nginx.sh: stopped nginx and the app" in output
    for port in (app_port, http_port, https_port):  # both processes are gone: nothing listens any more
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
    assert not (prefix / "nginx.pid").exists()  # nginx exited cleanly and removed its pid file
    for probe in ("via-nginx", "via-nginx-spoofed", "direct-spoofed"):
        (line,) = [line for line in output.splitlines() if f"probe={probe} " in line]
        assert "aiohttp.access" in line and " 127.0.0.2 " in line and "203.0.113.9" not in line, line
    nginx_log = (prefix / "logs" / "access.log").read_text()
    assert nginx_log.count("127.0.0.2 ") >= 3 and "HTTP/2.0" not in nginx_log  # aiohttp speaks HTTP/1.1 over TLS
    shutil.rmtree(prefix, ignore_errors=True)


# ---- 5. a browser tab streams eight threads at once over HTTPS + HTTP/2 ------------------------------------------

CHROMIUM = os.environ.get("PINCHAT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--ignore-certificate-errors"]

# Runs in the page: create `count` threads, then stream one answer in each at the same time with plain fetch()
# (independent of the Pyodide frontend), reading every body to its end. Times are ms since the streams started.
STREAM_MANY_JS = """
async ({count, message}) => {
  const json = {'Content-Type': 'application/json'};
  const ids = [];
  for (let i = 0; i < count; i++) {
    const r = await fetch('/api/threads', {method: 'POST', headers: json, body: JSON.stringify({title: `t${i}`})});
    ids.push((await r.json()).id);
  }
  performance.clearResourceTimings();
  const t0 = performance.now();
  const one = async (id, i) => {
    const resp = await fetch(`/api/threads/${id}/chat`,
                             {method: 'POST', headers: json, body: JSON.stringify({message: message.replace('#', i)})});
    const headers = performance.now() - t0;
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let text = '', first = null;
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      text += decoder.decode(value, {stream: true});
      if (first === null && text.includes('"type":"token"')) first = performance.now() - t0;
    }
    return {id, status: resp.status, headers, first, end: performance.now() - t0, text};
  };
  const streams = await Promise.all(ids.map(one));
  const protocols = performance.getEntriesByType('resource')
    .filter(e => e.name.endsWith('/chat')).map(e => e.nextHopProtocol);
  return {streams, protocols};
}
"""


def sse_events(text: str) -> list[dict]:
    events = []
    for frame in text.split("\n\n"):
        data = [line[5:].removeprefix(" ") for line in frame.split("\n") if line.startswith("data:")]
        if data:
            events.append(json.loads("\n".join(data)))
    return events


@pytest.fixture
async def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"Chromium not found at {CHROMIUM} (Debian: apt-get install chromium; or set PINCHAT_CHROMIUM)")
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def owner_login_link(app, base_url: str) -> str:
    """A fresh one-time sign-in URL for the owner (what `python -m server users login-url` prints)."""
    from server.credentials import login_link
    from server.keys import DB, OWNER

    server_app = app.client.server.app
    return await login_link(server_app[DB].accounts, server_app[OWNER]["id"], base_url)


async def signed_in_page(browser, app, origin: str, *, open_app: bool = False):
    """A new page (in its own browser context) signed in as the owner through nginx: it opens a one-time sign-in
    URL, which nginx passes to the app; the app answers with a session cookie and a redirect to `/`. Without
    `open_app` it then parks on `/api/health` (any page of the origin: the tests' fetches are same-origin)."""
    page = await browser.new_page()
    await page.goto(await owner_login_link(app, origin + "/"), wait_until="load" if open_app else "commit")
    assert page.url == origin + "/", page.url  # redirected: the token left the address bar
    (cookie,) = await page.context.cookies()
    assert cookie["name"] == "pinchat_session" and cookie["httpOnly"], cookie
    assert cookie["secure"] == origin.startswith("https:"), cookie  # nginx's X-Forwarded-Proto reached the app
    if not open_app:
        await page.goto(f"{origin}/api/health")
    return page


async def stream_many(browser, app, origin: str, count: int, message: str) -> dict:
    page = await signed_in_page(browser, app, origin)
    try:
        return await page.evaluate(STREAM_MANY_JS, {"count": count, "message": message})
    finally:
        await page.close()


def overlap_summary(result: dict) -> str:
    streams = result["streams"]
    first_end = min(s["end"] for s in streams)
    waited = [s for s in streams if s["first"] is None or s["first"] > first_end]
    return (f"{len(streams) - len(waited)} of {len(streams)} streams had tokens before the first one ended; "
            f"{len(waited)} waited (first token at {sorted(round(s['first'] or -1) for s in waited)} ms, "
            f"first end at {round(first_end)} ms); protocols {sorted(set(result['protocols']))}")


async def test_browser_streams_eight_threads_at_once_over_http2(make_app, settings, fake, start_nginx, browser):
    """Eight answers of 15 tokens, 100 ms apart (1.5 s each), started together in one tab over HTTPS.

    Over HTTP/2 they share one connection and all stream at once. The same page over plain HTTP (HTTP/1.1) is run
    and printed for the record, not asserted: Chromium opens at most six connections per origin, so two of the
    eight wait until a first stream has ended (typical output: "6 of 8 ... 2 waited").
    """
    app = await make_app(settings)
    nginx = await start_nginx(app_port(app))
    message = "[[tokens=15 delay_ms=100 prefix=P#_]]"

    result = await stream_many(browser, app, nginx.https_url, 8, message)
    print(f"\nHTTPS + HTTP/2: {overlap_summary(result)}")
    streams = result["streams"]
    assert result["protocols"] == ["h2"] * 8, result["protocols"]
    for i, stream in enumerate(streams):
        events = sse_events(stream["text"])
        assert stream["status"] == 200 and events[-1]["type"] == "done", stream
        assert "".join(e["text"] for e in events if e["type"] == "token") == "".join(f"P{i}_{k} " for k in range(15))
        assert stream["end"] - stream["first"] > 1.0  # its tokens came one by one, not in a burst at the end
    # All eight were streaming at the same moment: every one had its first token before any one had finished.
    assert max(s["first"] for s in streams) < min(s["end"] for s in streams), overlap_summary(result)

    http1 = await stream_many(browser, app, nginx.http_url, 8, message)
    print(f"plain HTTP/1.1 (documented, not asserted): {overlap_summary(http1)}")


ABORT_ONE_JS = """
async ({abortAfter}) => {
  const json = {'Content-Type': 'application/json'};
  const thread = async () => (await (await fetch('/api/threads', {method: 'POST', headers: json,
                                                                   body: '{}'})).json()).id;
  const [victim, survivor] = [await thread(), await thread()];
  const read = async (id, message, controller) => {
    const resp = await fetch(`/api/threads/${id}/chat`, {method: 'POST', headers: json,
                             body: JSON.stringify({message}), signal: controller?.signal});
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let text = '';
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return text;
      text += decoder.decode(value, {stream: true});
      if (controller && (text.match(/"type":"token"/g) || []).length >= abortAfter) {
        controller.abort();
        return text;
      }
    }
  };
  const controller = new AbortController();
  const [victimText, survivorText] = await Promise.all([
    read(victim, '[[tokens=300 delay_ms=20 prefix=V]]', controller),
    read(survivor, '[[tokens=40 delay_ms=25 prefix=S]]', null),
  ]);
  const protocols = performance.getEntriesByType('resource')
    .filter(e => e.name.endsWith('/chat')).map(e => e.nextHopProtocol);
  return {victim, victimText, survivorText, protocols};
}
"""


async def test_browser_abort_over_http2_stops_only_that_stream(make_app, settings, fake, start_nginx, browser):
    """AbortController on one of two streams sharing an HTTP/2 connection: nginx resets that stream only, the app
    saves the partial answer as interrupted and closes its provider call; the other stream finishes."""
    app = await make_app(settings)
    nginx = await start_nginx(app_port(app))
    page = await signed_in_page(browser, app, nginx.https_url)
    try:
        result = await page.evaluate(ABORT_ONE_JS, {"abortAfter": 5})
    finally:
        await page.close()
    assert "h2" in result["protocols"], result["protocols"]
    survivor = sse_events(result["survivorText"])
    assert survivor[-1]["type"] == "done" and sum(e["type"] == "token" for e in survivor) == 40
    answer = await wait_answer_status(nginx.https_url, result["victim"], "interrupted", app.headers)
    received = "".join(e["text"] for e in sse_events(result["victimText"]) if e["type"] == "token")
    record = await fake.wait_ended(index=[i for i, r in enumerate(fake.records)
                                          if "prefix=V" in r.messages[-1]["content"]][0])
    assert record.outcome == "client_closed"
    assert answer["content"].startswith(received) and len(received) >= len("V0 V1 V2 V3 V4 ")
    assert record.tokens_sent < 300


# Runs Python inside the booted page: start one answer in each thread through the app's own FFI stream code
# (web/py/api.py), then report what the app's store holds. Results come back as JSON text.
START_IN_APP = """
import json, main
app = main.APP
json.dumps([app.streams.start(tid, f"[[tokens=15 delay_ms=100 prefix=P{tid}_]]") for tid in IDS] +
           [len(app.streams.live), app.streams.max_streams])
"""
STATE_IN_APP = """
import json, main
store = main.APP.store
json.dumps([[store.thread(t).streaming, store.thread(t).messages[-1].status, store.thread(t).messages[-1].text]
            for t in IDS])
"""


async def test_the_pyodide_app_streams_eight_threads_at_once_over_http2(make_app, settings, fake, start_nginx,
                                                                       browser):
    """The real frontend, not plain fetch: booted from nginx over HTTPS + HTTP/2, its Streams start eight answers
    at once (over HTTP/1.1 it would refuse a sixth, to keep a connection for the API) and all eight finish."""
    app = await make_app(settings)
    nginx = await start_nginx(app_port(app))
    ids = [(await app.new_thread(title=f"h2 {i}"))["id"] for i in range(8)]
    page = await signed_in_page(browser, app, nginx.https_url, open_app=True)  # lands on the app, signed in
    try:
        # (a selector, not wait_for_function: the page's Content-Security-Policy forbids the eval() it uses)
        await page.wait_for_selector("html[data-app-state=ready], html[data-app-state=error]", timeout=60_000)
        assert await page.get_attribute("html", "data-app-state") == "ready", await page.inner_text("#boot")
        assert await page.get_attribute("html", "data-auth") == "signed-in"
        run = f"IDS = {ids!r}\n"
        started = json.loads(await page.evaluate("code => globalThis.pinchat.pyodide.runPython(code)",
                                                 run + START_IN_APP))
        assert started[:8] == [True] * 8 and started[8] == 8 and started[9] > 8, started
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            state = json.loads(await page.evaluate("code => globalThis.pinchat.pyodide.runPython(code)",
                                                   run + STATE_IN_APP))
            if not any(streaming for streaming, _, _ in state):
                break
            assert asyncio.get_running_loop().time() < deadline, state
            await asyncio.sleep(0.2)
        for tid, (_, status, text) in zip(ids, state):
            assert (status, text) == ("complete", "".join(f"P{tid}_{k} " for k in range(15)))
        protocols = await page.evaluate(
            "performance.getEntriesByType('resource').filter(e => e.name.endsWith('/chat'))"
            ".map(e => e.nextHopProtocol)")
        assert protocols == ["h2"] * 8, protocols
        sends = [r.send_times for r in fake.records[-8:]]
        assert max(s[0] for s in sends) < min(s[-1] for s in sends)  # all eight were streaming at once
    finally:
        await page.close()


# ---- 6. accounts behind nginx: allowed hosts, Secure cookies, single sign-on ------------------------------------


async def test_foreign_host_through_nginx_is_refused_by_the_app(make_app, settings, fake, start_nginx):
    """DNS rebinding: nginx passes the client's Host on (`proxy_set_header Host $host`), so a page of another site
    whose name resolves to this server gets 421 from the app, for the API and for the page itself; the names the
    app serves pass. A production server_name is given to the app with --allowed-hosts (nginx/README.md)."""
    app = await make_app(settings, allowed_hosts=("chat.example.org",))
    nginx = await start_nginx(app_port(app))
    async with client_session(headers=app.headers) as http:
        for base in (nginx.http_url, nginx.https_url):
            for host, expected in (("127.0.0.1", 200), ("localhost", 200), ("chat.example.org", 200),
                                   ("CHAT.example.org:443", 200), ("evil.example", 421), ("attacker.test:80", 421)):
                for path in ("/api/threads", "/"):
                    async with http.get(base + path, headers={"Host": host}, allow_redirects=False) as resp:
                        assert resp.status == expected, (base, host, path, resp.status, await resp.text())
                        if expected == 421:
                            assert (await resp.json())["error"]["code"] == "host_not_allowed"


def set_cookie(resp) -> tuple[str, set[str]]:
    """The session cookie a response sets: (its value, its attribute names, lower case)."""
    (header,) = [h for h in resp.headers.getall("Set-Cookie", []) if h.startswith("pinchat_session=")]
    value, *attributes = [part.strip() for part in header.split(";")]
    return value.split("=", 1)[1], {a.split("=", 1)[0].lower() for a in attributes}


async def test_session_cookie_is_secure_over_https_through_nginx(make_app, settings, fake, start_nginx):
    """nginx sends `X-Forwarded-Proto $scheme`; the app (nginx being a trusted proxy) marks the session cookie
    Secure when the browser came over HTTPS, and not over plain HTTP, whatever X-Forwarded-Proto the client sends.
    Both sign-in paths: the password form (POST /api/auth/login) and the one-time sign-in URL (`/?token=`)."""
    app = await make_app(settings)
    resp = await app.post("/api/users", {"username": "dora", "password": "correct horse battery"})
    assert resp.status == 201, await resp.text()
    nginx = await start_nginx(app_port(app))
    login = {"username": "dora", "password": "correct horse battery"}
    cases = [(nginx.https_url, {}, True), (nginx.http_url, {}, False),
             (nginx.http_url, {"X-Forwarded-Proto": "https"}, False)]  # nginx overwrites the client's claim
    async with client_session() as http:
        for base, extra, secure in cases:
            async with http.post(f"{base}/api/auth/login", json=login,
                                 headers={"Origin": base, **extra}) as resp:
                assert resp.status == 200, await resp.text()
                cookie, attributes = set_cookie(resp)
            assert ("secure" in attributes) == secure, (base, extra, attributes)
            assert {"httponly", "path", "samesite"} <= attributes
            async with http.get(f"{base}/api/auth/me", headers={"Cookie": f"pinchat_session={cookie}"}) as resp:
                assert resp.status == 200 and (await resp.json())["user"]["username"] == "dora"
            # A cookie-authenticated change needs a same-site Origin, which nginx leaves as it is.
            async with http.post(f"{base}/api/threads", json={}, headers={"Cookie": f"pinchat_session={cookie}",
                                                                         "Origin": base, **extra}) as resp:
                assert resp.status == 201, await resp.text()
            async with http.post(f"{base}/api/threads", json={}, headers={"Cookie": f"pinchat_session={cookie}",
                                                                         "Origin": "https://evil.example"}) as resp:
                assert resp.status == 403 and (await resp.json())["error"]["code"] == "csrf_rejected"

            # The one-time sign-in URL reaches the app through nginx (the page `/` is proxied), sets the cookie
            # and sends the browser on to `/`; a second use of it is refused.
            link = await owner_login_link(app, base + "/")
            for attempt in range(2):
                async with http.get(link, headers=extra, allow_redirects=False) as resp:
                    assert resp.status == 303, await resp.text()
                    if attempt == 0:
                        assert resp.headers["Location"] == "/"
                        cookie, attributes = set_cookie(resp)
                        assert ("secure" in attributes) == secure, (base, extra, attributes)
                    else:
                        assert resp.headers["Location"] == "/#signin-expired"
            async with http.get(f"{base}/api/auth/me", headers={"Cookie": f"pinchat_session={cookie}"}) as resp:
                assert (await resp.json())["user"]["username"] == "owner"
            secret = link.split("?token=")[1]
            assert secret not in nginx.access_log() and "GET /?token=[hidden]" in nginx.access_log()


# Single sign-on: nginx asks an auth service (oauth2-proxy, Authelia, ... here a 20-line stand-in) about every
# request with `auth_request`, and passes the user it names to the app in Remote-User; the app runs with
# `--auth-header Remote-User` and believes that header only from its --trusted-proxies (nginx on 127.0.0.1).
# The lines added to the config are the ones nginx/README.md documents, read from it.


def readme_sso_blocks() -> tuple[str, str]:
    """The two nginx blocks of nginx/README.md's "Single sign-on" section: server context, pinchat-proxy.conf."""
    text = (ROOT / "nginx" / "README.md").read_text()
    section = text[text.index("### Single sign-on"):]
    blocks = section.split("```nginx\n")[1:3]
    server, proxy = (block.split("```")[0] for block in blocks)
    assert "auth_request /oauth2/auth;" in server and "proxy_pass http://127.0.0.1:4180;" in server
    assert proxy.startswith("proxy_set_header Remote-User $user;")
    return server, proxy


async def test_single_sign_on_with_auth_request(make_app, settings, fake, start_nginx, aiohttp_server):
    """nginx/README.md's auth_request example in a real nginx, in front of the app run with --auth-header
    Remote-User: the auth service's approval signs erin in; without it nginx answers 401; a client's own
    Remote-User never counts, through nginx or straight to the app from an untrusted address."""
    from aiohttp import web

    asked: list[tuple[str, str]] = []

    async def auth_service(request: web.Request) -> web.Response:
        """Approves a request whose cookie names a signed-in user of the service (202 + the user); else 401."""
        user = request.cookies.get("sso_user", "")
        asked.append((request.headers.get("X-Forwarded-Uri", ""), user))
        if user in ("erin", "frank"):
            return web.Response(status=202, headers={"X-Auth-Request-User": user})
        return web.Response(status=401)

    service = web.Application()
    service.router.add_get("/oauth2/auth", auth_service)
    service_server = await aiohttp_server(service)

    app = await make_app(settings, auth_header="Remote-User")  # trusts 127.0.0.1 (the default): nginx

    server_lines, proxy_lines = readme_sso_blocks()

    def sso(nginx: Nginx) -> None:
        nginx.replace_once(COMMON, "autoindex off;\n", "autoindex off;\n" + server_lines.replace(
            "127.0.0.1:4180", f"127.0.0.1:{service_server.port}"))
        nginx.replace_once(PROXY, 'proxy_set_header Remote-User "";', proxy_lines.strip())

    nginx = await start_nginx(app_port(app), variant=sso)
    base = nginx.https_url
    erin = {"Cookie": "sso_user=erin", "Origin": base}
    async with client_session() as http:
        # Approved by the auth service: erin is signed in (her account made on first sight) and can work.
        async with http.get(f"{base}/api/auth/me", headers=erin) as resp:
            assert resp.status == 200, await resp.text()
            me = await resp.json()
        assert me["user"]["username"] == "erin" and not me["user"]["is_admin"] and me["sso"] is True
        async with http.post(f"{base}/api/threads", json={"title": "erin's"}, headers=erin) as resp:
            assert resp.status == 201, await resp.text()
            thread = await resp.json()
        async with http.get(f"{base}/api/threads", headers=erin) as resp:
            assert [t["id"] for t in (await resp.json())["threads"]] == [thread["id"]]
        assert ("/api/threads", "erin") in asked
        # The stream works the same way, identified by the header.
        stream = await timed_chat(base, thread["id"], "[[tokens=3]]", headers=erin)
        assert stream.status == 200 and stream.types[-1] == "done", stream
        # Her thread is hers: the owner does not see it.
        owner_threads = await (await app.client.get("/api/threads")).json()
        assert thread["id"] not in [t["id"] for t in owner_threads["threads"]]

        # Without the auth service's approval nginx itself answers 401 (the app is never asked), also when the
        # client names a user itself, and for the page and the static files too.
        for path in ("/api/auth/me", "/api/threads", "/", "/style.css"):
            for headers in ({}, {"Remote-User": "owner"}, {"Cookie": "sso_user=mallory", "Remote-User": "owner"}):
                async with http.get(base + path, headers=headers) as resp:
                    assert resp.status == 401, (path, headers, resp.status)
                    assert not resp.headers["Content-Type"].startswith("application/json")  # nginx's own page

        # Approved as erin but claiming to be the owner: nginx replaces the client's Remote-User with the user the
        # auth service named.
        async with http.get(f"{base}/api/auth/me", headers={**erin, "Remote-User": "owner"}) as resp:
            assert (await resp.json())["user"]["username"] == "erin"
        async with http.get(f"{base}/api/auth/me", headers={"Cookie": "sso_user=frank",
                                                            "Remote-User": "erin"}) as resp:
            assert (await resp.json())["user"]["username"] == "frank"

    # The shipped config (no auth_request) drops a client's Remote-User, so an app switched to --auth-header behind
    # it cannot be fooled either; the negative control: without that line the client would be the owner.
    shipped = await start_nginx(app_port(app))
    unguarded = await start_nginx(app_port(app), variant=lambda nginx: nginx.replace_once(
        PROXY, 'proxy_set_header Remote-User "";', ""))
    async with client_session() as http:
        async with http.get(f"{shipped.https_url}/api/auth/me", headers={"Remote-User": "owner"}) as resp:
            assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthenticated"
        async with http.get(f"{unguarded.https_url}/api/auth/me", headers={"Remote-User": "owner"}) as resp:
            assert (await resp.json())["user"]["username"] == "owner"

    # Straight to the app from an address it does not trust (127.0.0.2), the header is ignored: no identity.
    async with client_session(local_addr="127.0.0.2") as direct:
        for name in ("owner", "erin"):
            async with direct.get(f"{app.base.rstrip('/')}/api/auth/me", headers={"Remote-User": name}) as resp:
                assert resp.status == 401, (name, await resp.text())
                assert (await resp.json())["error"]["code"] == "unauthenticated"
            async with direct.post(f"{app.base.rstrip('/')}/api/threads", json={},
                                   headers={"Remote-User": name, "Origin": app.base.rstrip("/")}) as resp:
                assert resp.status == 401, (name, await resp.text())
