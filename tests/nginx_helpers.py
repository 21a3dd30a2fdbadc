"""A real nginx started from the repository's templates (nginx/*.template) for tests, plus a timed SSE reader.

The config is rendered by nginx/render.py, the same renderer `just nginx` (scripts/nginx.sh) uses, into a private
prefix folder; nginx runs in the foreground (`daemon off`) as a child of the test and is stopped by its own pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.server_process import free_port

ROOT = Path(__file__).resolve().parent.parent
NGINX_DIR = ROOT / "nginx"
RENDER = NGINX_DIR / "render.py"
CERT_SCRIPT = NGINX_DIR / "self-signed-cert.sh"


def nginx_binary() -> str | None:
    """$PINCHAT_NGINX_BIN, Debian's /usr/sbin/nginx (not on a normal user's PATH), or `nginx` on PATH."""
    for candidate in (os.environ.get("PINCHAT_NGINX_BIN"), "/usr/sbin/nginx", shutil.which("nginx")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1, made by the script `just nginx` uses."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([str(CERT_SCRIPT), str(cert), str(key)], check=True, capture_output=True, timeout=30)
    return cert, key


class Nginx:
    """One nginx instance: `render()`, optionally `replace_once()` to make a variant, then `await start()`."""

    def __init__(self, prefix: Path, *, app_port: int, cert: Path, key: Path, read_timeout: str = "120s",
                 web_root: Path = ROOT / "web") -> None:
        self.binary = nginx_binary()
        self.prefix = prefix
        self.conf_dir = prefix / "conf"
        self.http_port, self.https_port = free_port(), free_port()
        self.variables = {
            "PREFIX": str(prefix),
            "CONF_DIR": str(self.conf_dir),
            "WEB_ROOT": str(web_root),
            "APP_ADDR": f"127.0.0.1:{app_port}",
            "HTTP_LISTEN": f"127.0.0.1:{self.http_port}",
            "HTTPS_LISTEN": f"127.0.0.1:{self.https_port}",
            "SERVER_NAME": "localhost",
            "TLS_CERT": str(cert),
            "TLS_KEY": str(key),
            "PROXY_READ_TIMEOUT": read_timeout,
        }
        self.proc: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def render(self) -> Nginx:
        args = [f"{k}={v}" for k, v in self.variables.items()]
        done = subprocess.run([sys.executable, str(RENDER), "--out", str(self.conf_dir), *args],
                              capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"render.py failed: {done.stderr}")
        return self

    def replace_once(self, filename: str, old: str, new: str) -> None:
        """Edit the rendered config (for variants): `old` must occur exactly once, so a template change that
        removes it fails loudly instead of silently testing the wrong thing."""
        path = self.conf_dir / filename
        text = path.read_text()
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path}"
        path.write_text(text.replace(old, new))

    def command(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.prefix), "-c", str(self.conf_dir / "pinchat.conf"),
                "-e", str(self.prefix / "logs" / "error.log"), *extra]

    async def start(self, timeout: float = 10.0) -> Nginx:
        check = subprocess.run(self.command("-t", "-q"), capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{check.stderr}{self.error_log()}")
        self.proc = subprocess.Popen(self.command("-g", "daemon off;"), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        while not all(_accepts(port) for port in (self.http_port, self.https_port)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.proc.stderr.read()}"
                                   f"{self.error_log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"nginx did not listen within {timeout} s:\n{self.error_log()}")
            await asyncio.sleep(0.02)
        return self

    def stop(self) -> None:
        """Fast shutdown (SIGTERM: open streams are closed at once), then wait for the master to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def error_log(self) -> str:
        path = self.prefix / "logs" / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self) -> str:
        path = self.prefix / "logs" / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class TimedStream:
    """What one SSE response delivered, each frame stamped with time.time() when its last byte arrived."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    events: list[tuple[float, dict]] = field(default_factory=list)  # (arrival, parsed JSON of the data line)
    pings: list[float] = field(default_factory=list)
    error: str | None = None  # the connection broke before a clean end (e.g. nginx cut the stream)
    started: float = 0.0
    ended: float = 0.0

    @property
    def types(self) -> list[str]:
        return [e["type"] for _, e in self.events]

    def tokens(self) -> list[tuple[float, str]]:
        return [(t, e["text"]) for t, e in self.events if e["type"] == "token"]

    def token_count(self) -> int:
        """The script's tokens received, however framed or batched (a late writer sends several events as one frame;
        one read of the upstream that brings several tokens is one event): the scripts here (`[[tokens=N ...]]`,
        tokens `<prefix><i> `) end each token with a space."""
        return "".join(text for _, text in self.tokens()).count(" ")

    @property
    def terminal(self) -> dict | None:
        last = self.events[-1][1] if self.events else None
        return last if last and last["type"] in ("done", "error", "interrupted") else None


def client_session(*, local_addr: str | None = None, headers: dict[str, str] | None = None) -> aiohttp.ClientSession:
    """A client that accepts our self-signed certificate; `local_addr` picks the source address (e.g. 127.0.0.2);
    `headers` go with every request (e.g. the owner's `Authorization: Bearer pc_...`, `App.headers`). It keeps no
    cookies: the tests that sign in read `Set-Cookie` and send `Cookie` themselves."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connector = aiohttp.TCPConnector(ssl=context, local_addr=(local_addr, 0) if local_addr else None,
                                     force_close=True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60), headers=headers,
                                 cookie_jar=aiohttp.DummyCookieJar())


async def timed_chat(base: str, thread_id: int, message: str, *, stop_after_tokens: int | None = None,
                     headers: dict[str, str] | None = None) -> TimedStream:
    """POST a chat message and read the SSE answer with a raw parser, stamping each frame's arrival.

    `headers` must carry an identity (e.g. the owner's API token: `App.headers`). With `stop_after_tokens`, the
    connection is closed (an abort, as a closed tab does) after that many tokens.
    """
    out = TimedStream(started=time.time())
    async with client_session() as session:
        async with session.post(f"{base}/api/threads/{thread_id}/chat", json={"message": message},
                                headers=headers) as resp:
            out.status, out.headers = resp.status, dict(resp.headers)
            buffer = b""
            try:
                async for chunk in resp.content.iter_any():
                    now = time.time()
                    buffer += chunk
                    while b"\n\n" in buffer:
                        frame, buffer = buffer.split(b"\n\n", 1)
                        _parse_frame(frame.decode(), now, out)
                    if stop_after_tokens is not None and out.token_count() >= stop_after_tokens:
                        resp.close()  # drop the connection mid-stream
                        break
            except aiohttp.ClientError as exc:
                out.error = f"{type(exc).__name__}: {exc}"
    out.ended = time.time()
    return out


def _parse_frame(frame: str, now: float, out: TimedStream) -> None:
    data = [line[5:].removeprefix(" ") for line in frame.split("\n") if line.startswith("data:")]
    if data:
        out.events.append((now, json.loads("\n".join(data))))
    elif any(line.startswith(":") for line in frame.split("\n")):
        out.pings.append(now)
