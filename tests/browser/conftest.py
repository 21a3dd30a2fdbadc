"""Browser tests: Debian's Chromium driven by Python Playwright, against the real app process and the scripted fake
upstream process (answers chosen by `[[tokens=... delay_ms=... prefix=...]]` directives in the messages).

One fake upstream and one app process serve the whole session; one browser too. Each test module shares one booted
page (`app_page`: Pyodide boots once per module); tests that need a pristine or disposable page use `fresh_page`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from tests.browser.helpers import ARTIFACTS, boot
from tests.conftest import write_models_file
from tests.server_process import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("PINCHAT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1440, "height": 900}


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{proc.stdout.read() if proc.stdout else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not open port {port}") from None
            time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def vendored() -> None:
    """The Pyodide bundle (idempotent, instant when present)."""
    subprocess.run([str(ROOT / "scripts" / "vendor_pyodide.sh")], check=True, cwd=ROOT)


@pytest.fixture(scope="session")
def fake_upstream_url():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.fake_upstream", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_port(port, proc, "fake upstream")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        _stop(proc)


class AppServer:
    """The real app (`python -m server`) on a free port, and a small client for its JSON API."""

    def __init__(self, tmp: Path, upstream_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = tmp / "chat.db"
        models = write_models_file(tmp / "models.yaml", types.SimpleNamespace(url=upstream_url))
        self.log = (tmp / "server.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(self.port), "--db", str(self.db),
             "--models", str(models), "--flush-interval", "0.1"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, text=True)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited early, see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("app did not start")
            time.sleep(0.1)

    def get(self, path: str) -> dict:
        resp = httpx.get(self.url + path, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def post(self, path: str, body: dict | None = None) -> dict:
        resp = httpx.post(self.url + path, json=body or {}, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def stop(self) -> None:
        _stop(self.proc)
        self.log.close()


@pytest.fixture(scope="session")
def app_server(tmp_path_factory, fake_upstream_url, vendored):
    server = AppServer(tmp_path_factory.mktemp("browser-app"), fake_upstream_url)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser():
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (set PINCHAT_CHROMIUM)")
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def app_page(browser, app_server):
    """One booted app page shared by the tests of a module."""
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    page.problems = []  # uncaught page errors, seen by tests that care
    page.on("pageerror", lambda exc: page.problems.append(str(exc)))
    await boot(page, app_server.url)
    yield page
    await context.close()


@pytest_asyncio.fixture(loop_scope="session")
async def fresh_page(browser, app_server):
    """A new context (empty cache) and page, not yet navigated."""
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(str(exc)))
    yield page
    await context.close()
