"""Run `python -m server` as a real process (for crash, SIGTERM and proxy tests)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    def __init__(self, *args: str, port: int | None = None, env: dict | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = ["--host", "127.0.0.1", "--port", str(self.port), *args]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.headers: dict[str, str] = {}

    def http(self, **kwargs) -> httpx.AsyncClient:
        """An HTTP client signed in as the owner (API token) when the server has a --db."""
        return httpx.AsyncClient(base_url=self.url, headers=self.headers, **kwargs)

    async def start(self, timeout: float = 30.0) -> ServerProcess:
        if "--db" in self.args and not self.headers:
            from tests.conftest import api_token

            token = await api_token(Path(self.args[self.args.index("--db") + 1]))
            self.headers = {"Authorization": f"Bearer {token}"}
        self.proc = subprocess.Popen([sys.executable, "-m", "server", *self.args], cwd=ROOT, env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited early:\n{self.proc.stdout.read()}")
                try:
                    if (await http.get(f"{self.url}/api/health")).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("server did not start")
                await asyncio.sleep(0.1)

    async def wait(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError("server did not exit")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def output(self) -> str:
        return self.proc.stdout.read() if self.proc and self.proc.poll() is not None else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
