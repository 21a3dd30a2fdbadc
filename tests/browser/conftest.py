"""Browser tests: Debian's Chromium driven by Python Playwright, against the real app process and the scripted fake
upstream process (answers chosen by `[[tokens=... delay_ms=... prefix=...]]` directives in the messages).

One fake upstream and one app process serve the whole session; one browser too. Each test module shares one booted
page (`app_page`: Pyodide boots once per module); tests that need a pristine or disposable page use `fresh_page`.
Pages sign in as the owner with a fresh one-time sign-in link (`boot(page, app_server)`); the test's own API calls
(`app_server.get/post`, `app_server.client()`) use an owner API token made with `python -m server users token`.
"""

from __future__ import annotations

import contextlib
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
OWNER = "owner"  # the account the server creates on first start (an admin, signed in by the printed link)


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
    """The real app (`python -m server`) on a free port, its `users` command line, and a small client for its JSON
    API signed in with an API token of the owner."""

    def __init__(self, tmp: Path, upstream_url: str, detach_grace: float = 30) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = tmp / "chat.db"
        models = write_models_file(tmp / "models.yaml", types.SimpleNamespace(url=upstream_url))
        self.log = (tmp / "server.log").open("w")
        self.command = (
            [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(self.port), "--db", str(self.db),
             "--models", str(models), "--flush-interval", "0.1",
             # a page that goes (reload, offline) leaves its answer running for a reattach (tests/conftest.py sets
             # PINCHAT_DETACH_GRACE=0 for the API tests; the flag beats it)
             "--detach-grace", str(detach_grace),
             # one owner runs the whole suite: lift the per-user limits a real user has
             "--chats-per-minute", "10000", "--max-streams-per-user", "50"])
        self.proc = self._start()

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen(self.command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, text=True)

    def restart(self) -> None:
        """Stop the server as an operator would (SIGTERM: open answers are saved as interrupted) and start it again
        on the same port and database."""
        _stop(self.proc)
        self.proc = self._start()
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 120  # LiteLLM's import and warm-up take ~30 s on a busy 2-vCPU box
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited early, see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("app did not start")
            time.sleep(0.1)
        self.token = self.users("token", OWNER)
        assert self.token.startswith("pc_"), self.token
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def users(self, *args: str, stdin: str | None = None) -> str:
        """`python -m server users ARGS` on this server's database; its last line of output."""
        done = subprocess.run([sys.executable, "-m", "server", "users", "--db", str(self.db), *args], cwd=ROOT,
                              input=stdin, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"users {args}: {done.stdout}{done.stderr}"
        return done.stdout.strip().splitlines()[-1]

    def log_text(self) -> str:
        """What the server printed so far (its start-up line holds a one-time sign-in link for the owner)."""
        self.log.flush()
        return Path(self.log.name).read_text()

    def login_url(self, name: str | None = None) -> str:
        """A fresh one-time sign-in URL (for the owner unless `name`)."""
        return self.users("login-url", *([name] if name else []), "--base-url", self.url + "/")

    def add_user(self, name: str, password: str, *, admin: bool = False) -> None:
        self.users("add", name, "--password-stdin", *(["--admin"] if admin else []), stdin=password + "\n")

    def user_token(self, name: str) -> str:
        return self.users("token", name)

    def client(self, token: str | None = None, **kwargs) -> httpx.AsyncClient:
        """An async client of the API, signed in with the owner's token (or `token`)."""
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.AsyncClient(base_url=self.url, headers=headers, **kwargs)

    def get(self, path: str, token: str | None = None) -> dict:
        resp = httpx.get(self.url + path, timeout=10, headers={"Authorization": f"Bearer {token or self.token}"})
        resp.raise_for_status()
        return resp.json()

    def post(self, path: str, body: dict | None = None, token: str | None = None) -> dict:
        resp = httpx.post(self.url + path, json=body or {}, timeout=10,
                          headers={"Authorization": f"Bearer {token or self.token}"})
        resp.raise_for_status()
        return resp.json()

    def stop(self) -> None:
        _stop(self.proc)
        self.log.close()


@contextlib.contextmanager
def running_app(tmp: Path, upstream_url: str):
    """An AppServer, ready, stopped at the end."""
    server = AppServer(tmp, upstream_url)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def app_server(tmp_path_factory, fake_upstream_url, vendored):
    with running_app(tmp_path_factory.mktemp("browser-app"), fake_upstream_url) as server:
        yield server


@contextlib.asynccontextmanager
async def booted_page(browser, server):
    """A page of a new context, signed in on `server` and booted; `page.problems` collects uncaught page errors."""
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(str(exc)))
    await boot(page, server)
    try:
        yield page
    finally:
        await context.close()


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
    async with booted_page(browser, app_server) as page:
        yield page


@pytest_asyncio.fixture(loop_scope="session")
async def fresh_page(browser, app_server):
    """A new context (empty cache) and page, not yet navigated."""
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(str(exc)))
    yield page
    await context.close()
