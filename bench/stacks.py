"""What is measured, by name (`STACKS`), and starting and stopping it: the load upstream, our server, nginx, the
reference app.

Every process is started by us, pinned with os.sched_setaffinity in the child before exec, and stopped by its
own pid. The server under test goes on the SUBJECT core, load (upstream + client) on the LOAD core.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
NGINX_DIR = ROOT / "nginx"
ENV = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"}

# The LiteLLM model of the `chat` deployment a stack streams through: `openai/` goes through the OpenAI SDK's chunk
# models, `hosted_vllm/` is LiteLLM's route for any OpenAI-compatible server (the cheapest per chunk in
# `python -m bench.routes` among LiteLLM's own routes), `openai_compatible/` is ours (server/openai_compatible.py:
# the Router still picks, retries and falls back; the stream is read without LiteLLM's per-chunk objects), all to
# the same bench upstream.
OPENAI_ROUTE = "openai/bench"
VLLM_ROUTE = "hosted_vllm/bench"
COMPAT_ROUTE = "openai_compatible/bench"


@dataclass(frozen=True)
class Stack:
    """How a named stack runs. kind: `direct` (the client reads the upstream), `litellm` (the client iterates a
    Router in its own process), `app` (a pinchat server process), `reference` (bench/reference_app.py)."""

    kind: str
    what: str
    route: str = OPENAI_ROUTE
    module: str = "server"  # app kind: what `python -m` starts
    loop: str | None = None  # app kind: the server's --loop (None: its default, uvloop when installed)
    nginx: bool = False  # app kind: nginx/pinchat.conf.template in front
    litellm_settings: str = "app"  # litellm kind: bench/load.py --litellm-settings

    @property
    def in_process(self) -> bool:
        """Measured inside the load client's process (no server to start)."""
        return self.kind in ("direct", "litellm")


STACKS = {
    "direct": Stack("direct", "the client reads the upstream itself: the floor"),
    "litellm-only": Stack("litellm", "a LiteLLM Router iterated in the client, the app's LiteLLM settings, openai/"),
    "litellm-only-vllm": Stack("litellm", "litellm-only on the hosted_vllm/ route", route=VLLM_ROUTE),
    "litellm-only-compat": Stack("litellm", "litellm-only on our openai_compatible/ route", route=COMPAT_ROUTE),
    "app": Stack("app", "python -m server (uvloop when installed), openai/ route"),
    "app-compat": Stack("app", "the app on our openai_compatible/ route", route=COMPAT_ROUTE),
    "app-asyncio-compat": Stack("app", "the app with --loop asyncio on our openai_compatible/ route",
                                route=COMPAT_ROUTE, loop="asyncio"),
    "app-asyncio": Stack("app", "the app with --loop asyncio", loop="asyncio"),
    "app-vllm": Stack("app", "the app on the hosted_vllm/ route", route=VLLM_ROUTE),
    "app-asyncio-vllm": Stack("app", "the app with --loop asyncio on the hosted_vllm/ route", route=VLLM_ROUTE,
                              loop="asyncio"),
    "app+nginx": Stack("app", "the app behind nginx/pinchat.conf.template (plain HTTP listener)", nginx=True),
    "reference": Stack("reference", "bench/reference_app.py: FastAPI + uvicorn + StreamingResponse, LiteLLM stock"),
    "app-tuned": Stack("app", "the app with gc.freeze() + gen-0 threshold 10000 (bench/app_tuned.py)",
                       module="bench.app_tuned"),
    "litellm-stock": Stack("litellm", "litellm-only with LiteLLM's defaults", litellm_settings="stock"),
    "litellm-lean": Stack("litellm", "litellm-only + gc.freeze() (bench/lean.py)", litellm_settings="lean"),
}
DEFAULT_STACKS = ["direct", "litellm-only", "app", "app-compat", "app+nginx", "reference"]


def cores() -> tuple[set[int] | None, set[int] | None]:
    """(subject, load) core sets; None when there is a single core (no pinning)."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return {available[0]}, {available[1]}


def pinned(cpus: set[int] | None):
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status < 500:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def stop(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Upstream:
    cpus: set[int] | None
    proc: subprocess.Popen | None = None
    port: int = 0

    def start(self) -> Upstream:
        self.proc = subprocess.Popen([PY, "-m", "bench.upstream", "--port", "0"], cwd=ROOT, env=ENV,
                                     stdout=subprocess.PIPE, text=True, preexec_fn=pinned(self.cpus))
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("ready "):
            raise RuntimeError(f"bench.upstream did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop(self.proc)


@dataclass
class Server:
    """A subject HTTP stack: one of `STACKS` of kind `app` or `reference`."""

    name: str
    workdir: Path
    upstream_url: str
    cpus: set[int] | None
    procs: list[subprocess.Popen] = field(default_factory=list)
    url: str = ""
    logs: list[Path] = field(default_factory=list)

    @property
    def stack(self) -> Stack:
        return STACKS[self.name]

    def models_yaml(self) -> Path:
        path = self.workdir / "models.yaml"
        path.write_text(json.dumps({"model_list": [{"model_name": "chat", "litellm_params": {
            "model": self.stack.route, "api_base": f"{self.upstream_url}/v1", "api_key": "sk-bench"}}],
            "router_settings": {"num_retries": 0}}))
        return path

    def _spawn(self, argv: list[str], tag: str, cwd: Path = ROOT) -> subprocess.Popen:
        log = self.workdir / f"{tag}.log"
        self.logs.append(log)
        proc = subprocess.Popen(argv, cwd=cwd, env=ENV, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                preexec_fn=pinned(self.cpus), start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self) -> Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        models = self.models_yaml()
        port = free_port()
        stack = self.stack
        if stack.kind == "reference":
            argv = [PY, "-m", "bench.reference_app", "--port", str(port), "--models", str(models)]
        else:
            db = self.workdir / "bench.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            # One anonymous user on loopback drives every stream: no sign-in, no per-user limits.
            argv = [PY, "-m", stack.module, "--host", "127.0.0.1", "--port", str(port), "--db", str(db),
                    "--models", str(models), "--auth", "none", "--max-streams-per-user", "100000",
                    "--chats-per-minute", "100000"]
            if stack.loop:
                argv += ["--loop", stack.loop]
        proc = self._spawn(argv, self.name.replace("+", "_"))
        self.url = f"http://127.0.0.1:{port}"
        wait_http(f"{self.url}/api/health", 60, proc)
        if stack.nginx:
            self.url = self._start_nginx(f"127.0.0.1:{port}")
        return self

    def _start_nginx(self, app_addr: str) -> str:
        prefix = self.workdir / "nginx"
        conf = prefix / "conf"
        cert, key = prefix / "cert.pem", prefix / "key.pem"
        if not cert.exists():
            subprocess.run(["bash", str(NGINX_DIR / "self-signed-cert.sh"), str(cert), str(key)], check=True)
        http_port, https_port = free_port(), free_port()
        values = {"PREFIX": str(prefix), "CONF_DIR": str(conf), "WEB_ROOT": str(ROOT / "web"), "APP_ADDR": app_addr,
                  "HTTP_LISTEN": f"127.0.0.1:{http_port}", "HTTPS_LISTEN": f"127.0.0.1:{https_port}",
                  "SERVER_NAME": "localhost", "TLS_CERT": str(cert), "TLS_KEY": str(key),
                  "PROXY_READ_TIMEOUT": "300s"}
        subprocess.run([PY, str(NGINX_DIR / "render.py"), "--out", str(conf),
                        *(f"{k}={v}" for k, v in values.items())], check=True, capture_output=True)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        proc = self._spawn([nginx, "-p", str(prefix), "-c", str(conf / "pinchat.conf"), "-e",
                            str(prefix / "logs" / "error.log"), "-g", "daemon off;"], "nginx")
        url = f"http://127.0.0.1:{http_port}"
        wait_http(f"{url}/api/health", 20, proc)
        self.https_url = f"https://localhost:{https_port}"
        return url

    def pids(self) -> list[int]:
        """The server process(es) whose CPU and memory count: the app, plus nginx's master and workers."""
        pids = [p.pid for p in self.procs]
        if self.stack.nginx:
            nginx = self.procs[-1].pid
            try:
                children = Path(f"/proc/{nginx}/task/{nginx}/children").read_text().split()
            except OSError:
                children = []
            pids += [int(c) for c in children]
        return pids

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)


def nginx_available() -> str | None:
    """None if app+nginx can be measured, else why not."""
    if not (NGINX_DIR / "pinchat.conf.template").exists() or not (NGINX_DIR / "render.py").exists():
        return "nginx/pinchat.conf.template (and nginx/render.py) not present"
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        return "nginx binary not installed"
    if not shutil.which("openssl"):
        return "openssl not installed (needed for the HTTPS listener's certificate)"
    return None
