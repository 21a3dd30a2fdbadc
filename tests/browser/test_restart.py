"""A server restart in the middle of an answer, as the page lives it: the stream breaks, the page retries with
Last-Event-ID ("reconnecting…") until the server is back, finds nothing running (204) and shows the answer as the
server saved it on shutdown: interrupted, with every token the page had shown and no more.

Its own app server (a restart would disturb the session's), on the same fake upstream.
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from tests.browser.conftest import booted_page, running_app
from tests.browser.helpers import answer_text, directive, new_thread, send, wait_answer, wait_text_contains
from tests.browser.test_resume import LONG_MS, saved_answer

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def own_server(tmp_path_factory, fake_upstream_url, vendored):
    with running_app(tmp_path_factory.mktemp("browser-restart"), fake_upstream_url) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser, own_server):
    async with booted_page(browser, own_server) as page:
        yield page


async def test_a_server_restart_mid_answer_shows_the_saved_interrupted_answer(page, own_server):
    tid = await new_thread(page)
    await send(page, tid, "Long " + directive("K", 2000, delay_ms=50))
    await wait_text_contains(page, tid, "K10 ")
    await asyncio.get_running_loop().run_in_executor(None, own_server.restart)
    await wait_answer(page, tid, "interrupted", timeout=LONG_MS)
    saved = await saved_answer(own_server, tid)
    assert saved["status"] == "interrupted"
    assert saved["content"].startswith("K0 K1 ") and len(saved["content"].split()) < 2000
    assert await answer_text(page, tid) == saved["content"]  # nothing lost, nothing made up
    assert page.problems == []
