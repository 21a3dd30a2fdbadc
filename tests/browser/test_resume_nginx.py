"""Resume in the page through nginx over HTTPS + HTTP/2, as in production (nginx/README.md): nginx is rendered from
the repository's templates (tests/nginx_helpers.py) in front of the session's app server, and the page is signed in
and booted on nginx's HTTPS address (a self-signed certificate: the context ignores HTTPS errors). Every stream and
every reattach of the page then shares one HTTP/2 connection.

Every scenario of tests/browser/test_resume.py runs here too: a reload in the middle of a long answer goes on in
place, three seconds offline show "reconnecting…" and then the exact answer, a second tab sees the tokens arrive,
Stop in one tab ends the answer in both, a main thread and two pins reattach after one reload; each ends with
exactly the upstream's (or the saved) text.

The app answers for nginx's Host (`127.0.0.1`, a loopback name it serves without `--allowed-hosts`; scripts/nginx.sh
passes its server name with `--allowed-hosts`), and the page's Origin (`https://127.0.0.1:<port>`) names the same
host, so the CSRF check passes.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import pytest_asyncio

from tests.browser.helpers import boot
from tests.browser.test_resume import (
    main_thread_and_two_pins_reattach_after_one_reload,
    offline_reconnects,
    reload_goes_on_in_place,
    second_tab_sees_the_tokens_arrive,
    stop_in_one_tab_ends_the_answer_in_both,
)
from tests.nginx_helpers import Nginx, make_cert, nginx_binary

pytestmark = pytest.mark.asyncio(loop_scope="session")

VIEWPORT = {"width": 1440, "height": 900}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def front(app_server):
    """nginx (HTTPS + HTTP/2) in front of the session's app server, for this module."""
    if nginx_binary() is None:
        pytest.skip("no nginx (Debian: apt-get install nginx; or set PINCHAT_NGINX_BIN)")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificate")
    # a prefix everyone can traverse: started by root, nginx's workers run as `nobody` (see tests/test_nginx.py)
    base = Path(tempfile.mkdtemp(prefix="pinchat-nginx-browser-"))
    base.chmod(0o755)
    (base / "tls").mkdir()
    cert, key = make_cert(base / "tls")
    nginx = Nginx(base / "nginx", app_port=app_server.port, cert=cert, key=key)
    (base / "nginx").mkdir()
    nginx.render()
    await nginx.start()
    try:
        yield nginx
    finally:
        nginx.stop()
        log = nginx.error_log().strip()
        if log:
            print(f"--- nginx error.log ---\n{log}")
        shutil.rmtree(base, ignore_errors=True)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def h2_page(browser, app_server, front):
    """One page of a new context, signed in and booted on nginx's HTTPS address, shared by this module's tests."""
    context = await browser.new_context(viewport=VIEWPORT, ignore_https_errors=True)
    page = await context.new_page()
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(str(exc)))
    page.base = front.https_url
    await boot(page, app_server.users("login-url", "--base-url", front.https_url + "/"))
    assert await page.get_attribute("html", "data-auth") == "signed-in", "the sign-in link did not sign in"
    yield page
    await context.close()


async def protocols(page, path: str = "/api/") -> tuple[str, set[str]]:
    """The protocol the page arrived over, and those of its answered requests to `path` so far (a request that
    failed offline or was aborted before its answer has none)."""
    nav, api = await page.evaluate(
        "(path) => [performance.getEntriesByType('navigation')[0].nextHopProtocol,"
        " performance.getEntriesByType('resource').filter(e => e.name.includes(path) && e.responseStatus > 0)"
        ".map(e => e.nextHopProtocol)]", path)
    return nav, set(api)


async def test_the_page_talks_http2_to_nginx(h2_page, front):
    page = h2_page
    assert page.url.startswith(front.https_url)
    nav, api = await protocols(page)
    assert nav == "h2" and api == {"h2"}, (nav, api)
    # over HTTP/2 the page's stream cap is not the HTTP/1.1 one (api.max_streams)
    cap = await page.evaluate("pinchat.pyodide.runPython('import main; main.APP.streams.max_streams')")
    assert cap == 50


async def arrived_over_h2(page) -> None:
    assert (await protocols(page))[0] == "h2"


async def test_a_reload_goes_on_in_place_through_nginx(h2_page, app_server):
    await reload_goes_on_in_place(h2_page, app_server, on_reload=arrived_over_h2)


async def test_offline_for_three_seconds_reconnects_through_nginx(h2_page, app_server):
    tid = await offline_reconnects(h2_page, app_server)
    nav, api = await protocols(h2_page, f"/api/threads/{tid}/stream")
    assert nav == "h2" and api == {"h2"}, (nav, api)  # the reattach went through nginx over HTTP/2 too


async def test_a_second_tab_sees_the_tokens_arrive_through_nginx(h2_page):
    await second_tab_sees_the_tokens_arrive(h2_page, h2_page.base, on_open=arrived_over_h2)


async def test_stop_in_one_tab_ends_the_answer_in_both_through_nginx(h2_page, app_server):
    await stop_in_one_tab_ends_the_answer_in_both(h2_page, h2_page.base, app_server)


async def test_a_main_thread_and_two_pins_reattach_after_one_reload_through_nginx(h2_page, app_server):
    await main_thread_and_two_pins_reattach_after_one_reload(h2_page, app_server)
