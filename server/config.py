"""Settings of one server process: command-line flags, each with an environment-variable default."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    db: Path = ROOT / "data" / "pinchat.db"
    models: Path | None = None  # None: the embedded model
    heartbeat: float = 15.0  # seconds between `: ping` comments; 0 disables them
    flush_interval: float = 0.5  # seconds between saves of a streaming answer
    detach_grace: float = 30.0  # seconds an answer runs on after its last reader left (0: stop; -1: finish)
    pool_size: int = 2  # embedded model instances (concurrent embedded streams)
    max_message_chars: int = 32_000
    max_body_bytes: int = 1024 * 1024  # aiohttp's default: more is a 413
    context_budget: int = 0  # tokens sent per chat; 0: the model's context window minus answer_reserve
    answer_reserve: int = 1024  # tokens of the window kept free for the answer
    parent_share: float = 0.4  # of the budget, for a pin's parent thread up to the anchor
    ancestors_share: float = 0.2  # of the budget, for the summaries of further ancestors
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    auth: str = "password"  # password: accounts (the owner signs in with a printed one-time URL); none: no sign-in
    auth_header: str = ""  # e.g. Remote-User: single sign-on by a trusted proxy's header
    allowed_hosts: tuple[str, ...] = ()  # Host names served besides the loopback names and --host; "*": any
    session_idle_hours: float = 168.0
    credential_recheck: float = 5.0  # seconds between re-checks of the open streams' sessions, tokens and users
    max_streams_per_user: int = 8
    max_generations: int = 256  # answers this process writes at once; past it a new one gets 503 + Retry-After
    loop: str = "auto"  # auto: uvloop when installed; asyncio: the standard loop
    chats_per_minute: int = 30
    web_root: Path = field(default=ROOT / "web")

    @property
    def host_is_public(self) -> bool:
        return not is_loopback(self.host)

    def served_hosts(self) -> frozenset[str]:
        """The Host names this server answers (anything else is a DNS-rebinding attempt or a misconfiguration)."""
        names = {"localhost", "127.0.0.1", "::1", *self.allowed_hosts}
        if self.host in ("0.0.0.0", "::", ""):
            names.update({socket.gethostname(), socket.getfqdn()})
        else:
            names.add(self.host)
        return frozenset(name.lower().strip("[]") for name in names)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


# (flag, env var, type, help) — one table so --help and the environment can never disagree.
_OPTIONS = [
    ("host", "PINCHAT_HOST", str, "address to listen on"),
    ("port", "PINCHAT_PORT", int, "port to listen on"),
    ("db", "PINCHAT_DB", Path, "SQLite database file (created if missing)"),
    ("models", "PINCHAT_MODELS", Path,
     "LiteLLM model_list YAML (see models.example.yaml); its model group `chat` serves the chat. "
     "Default: the embedded SmolLM2-135M-Instruct model"),
    ("heartbeat", "PINCHAT_HEARTBEAT", float, "seconds between SSE `: ping` heartbeats (0 disables)"),
    ("flush_interval", "PINCHAT_FLUSH_INTERVAL", float, "seconds between saves of a streaming answer"),
    ("detach_grace", "PINCHAT_DETACH_GRACE", float,
     "seconds an answer goes on being written after its last reader left (a reload reattaches within it); "
     "0 stops it at once, -1 always finishes it in the background"),
    ("pool_size", "PINCHAT_POOL_SIZE", int, "embedded model instances, i.e. embedded streams that run at once"),
    ("context_budget", "PINCHAT_CONTEXT_BUDGET", int,
     "tokens of conversation sent per chat (0: the model's context window minus --answer-reserve)"),
    ("answer_reserve", "PINCHAT_ANSWER_RESERVE", int, "tokens of the context window kept free for the answer"),
    ("parent_share", "PINCHAT_PARENT_SHARE", float,
     "share of the budget for a pin's parent thread (its messages up to the anchor)"),
    ("ancestors_share", "PINCHAT_ANCESTORS_SHARE", float,
     "share of the budget for the summaries of a pin's further ancestors (halved at each step up)"),
    ("trusted_proxies", "PINCHAT_TRUSTED_PROXIES", str,
     "comma-separated proxy addresses whose X-Forwarded-For / X-Real-IP / X-Forwarded-Proto (and --auth-header) "
     "headers are believed"),
    ("auth", "PINCHAT_AUTH", str,
     "password: accounts, the owner signs in with the one-time URL printed at start; none: no sign-in at all, "
     "allowed only on loopback or behind non-loopback --trusted-proxies that authenticate (see README, Security)"),
    ("auth_header", "PINCHAT_AUTH_HEADER", str,
     "single sign-on: the header (e.g. Remote-User) naming the signed-in user, believed only from --trusted-proxies"),
    ("allowed_hosts", "PINCHAT_ALLOWED_HOSTS", str,
     "comma-separated Host names served besides localhost and --host (e.g. chat.example.com behind nginx); "
     "'*' serves any Host (exposes the server to DNS rebinding)"),
    ("session_idle_hours", "PINCHAT_SESSION_IDLE_HOURS", float, "a session unused this long ends"),
    ("credential_recheck", "PINCHAT_CREDENTIAL_RECHECK", float,
     "seconds between checks that each open stream's session, API token and user are still valid (ended by another "
     "process, e.g. `python -m server users disable`); its answers stop too when the user is disabled"),
    ("max_streams_per_user", "PINCHAT_MAX_STREAMS_PER_USER", int, "answers one user may stream at once"),
    ("chats_per_minute", "PINCHAT_CHATS_PER_MINUTE", int, "answers (chats and merges) one user may start per minute"),
    ("max_generations", "PINCHAT_MAX_GENERATIONS", int,
     "answers this process writes at once; past it a new chat gets 503 with Retry-After instead of slowing every "
     "running stream down"),
    ("loop", "PINCHAT_LOOP", str, "event loop: auto (uvloop when installed) or asyncio"),
]


# Each numeric flag's allowed range (lowest, highest; None: no bound), refused with its flag's name otherwise.
_RANGES = {
    "port": (0, 65535), "heartbeat": (0, None), "flush_interval": (0.01, None), "pool_size": (1, None),
    "context_budget": (0, None), "answer_reserve": (0, None), "parent_share": (0, 1), "ancestors_share": (0, 1),
    "session_idle_hours": (0.01, None), "credential_recheck": (0.01, None), "max_streams_per_user": (1, None),
    "chats_per_minute": (1, None), "max_generations": (1, None),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line: argparse's default prints the whole usage before it
        self.exit(2, f"error: {message} (see python -m server --help)\n")


def _out_of_range(name: str, value: float) -> str | None:
    if name == "detach_grace":
        return None if value >= 0 or value == -1 else "0 or more seconds, or -1 to always finish"
    low, high = _RANGES.get(name, (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        return f"{low} to {high}" if high is not None else f"{low} or more"
    return None


def parse_args(argv: list[str] | None = None) -> Settings:
    defaults = Settings()
    parser = _Parser(
        prog="python -m server",
        description="pinchat: a self-hosted streaming LLM chat with pinned sub-threads.",
        epilog="Every flag can also be set by the environment variable shown; a flag wins over the variable.",
    )
    for name, env, kind, help_text in _OPTIONS:
        default = getattr(defaults, name)
        if isinstance(default, tuple):
            default = ",".join(default)
        parser.add_argument(
            f"--{name.replace('_', '-')}", dest=name, type=kind, default=os.environ.get(env, default),
            metavar=name.upper(), help=f"{help_text} [env {env}; default: {default}]",
        )
    args = parser.parse_args(argv)
    values = vars(args)
    for name, _env, kind, _help in _OPTIONS:  # environment values arrive as strings
        if values[name] is not None and not isinstance(values[name], kind):
            try:
                values[name] = kind(values[name])
            except ValueError:
                parser.error(f"--{name.replace('_', '-')}: invalid value {values[name]!r}")
    for name, _env, kind, _help in _OPTIONS:
        if kind in (int, float) and (allowed := _out_of_range(name, values[name])):
            parser.error(f"--{name.replace('_', '-')}: {values[name]:g} is out of range: {allowed}")
    for name in ("trusted_proxies", "allowed_hosts"):
        values[name] = tuple(p.strip() for p in values[name].split(",") if p.strip())
    for proxy in values["trusted_proxies"]:
        try:
            ipaddress.ip_address(proxy)
        except ValueError:
            parser.error(f"--trusted-proxies: {proxy!r} is not an IP address (the proxies' own addresses, "
                         "comma-separated, e.g. 127.0.0.1,::1)")
    if values["loop"] not in ("auto", "asyncio"):
        parser.error("--loop: choose auto or asyncio")
    if values["auth"] not in ("password", "none"):
        parser.error("--auth: choose password or none")
    if values["auth"] == "none" and not is_loopback(values["host"]) \
            and all(is_loopback(p) for p in values["trusted_proxies"]):
        sys.exit(f"error: --auth none would let anyone who reaches {values['host']} read every conversation: listen "
                     "on 127.0.0.1, or name the authenticating proxy with --trusted-proxies, or use --auth password")
    if values["models"] is not None and not Path(values["models"]).is_file():
        parser.error(f"--models: no such file: {values['models']}")
    if Path(values["db"]).is_dir():
        parser.error(f"--db: {values['db']} is a directory; name the database file in it, e.g. {values['db']}/pinchat.db")
    return Settings(**values)
