"""Settings of one server process: command-line flags, each with an environment-variable default."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    db: Path = ROOT / "data" / "pinchat.db"
    models: Path | None = None  # None: the embedded model
    heartbeat: float = 15.0  # seconds between `: ping` comments; 0 disables them
    flush_interval: float = 0.5  # seconds between saves of a streaming answer
    pool_size: int = 2  # embedded model instances (concurrent embedded streams)
    max_message_chars: int = 32_000
    context_budget: int = 0  # tokens sent per chat; 0: the model's context window minus answer_reserve
    answer_reserve: int = 1024  # tokens of the window kept free for the answer
    parent_share: float = 0.4  # of the budget, for a pin's parent thread up to the anchor
    ancestors_share: float = 0.2  # of the budget, for the summaries of further ancestors
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    web_root: Path = field(default=ROOT / "web")


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
    ("pool_size", "PINCHAT_POOL_SIZE", int, "embedded model instances, i.e. embedded streams that run at once"),
    ("context_budget", "PINCHAT_CONTEXT_BUDGET", int,
     "tokens of conversation sent per chat (0: the model's context window minus --answer-reserve)"),
    ("answer_reserve", "PINCHAT_ANSWER_RESERVE", int, "tokens of the context window kept free for the answer"),
    ("parent_share", "PINCHAT_PARENT_SHARE", float,
     "share of the budget for a pin's parent thread (its messages up to the anchor)"),
    ("ancestors_share", "PINCHAT_ANCESTORS_SHARE", float,
     "share of the budget for the summaries of a pin's further ancestors (halved at each step up)"),
    ("trusted_proxies", "PINCHAT_TRUSTED_PROXIES", str,
     "comma-separated proxy addresses whose X-Forwarded-For / X-Real-IP headers are believed"),
]


def parse_args(argv: list[str] | None = None) -> Settings:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="pinchat: a self-hosted streaming LLM chat with pinned sub-threads.",
        epilog="Every flag can also be set by the environment variable shown; a flag wins over the variable.",
    )
    for name, env, kind, help_text in _OPTIONS:
        default = getattr(defaults, name)
        if name == "trusted_proxies":
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
    values["trusted_proxies"] = tuple(p.strip() for p in values["trusted_proxies"].split(",") if p.strip())
    if values["models"] is not None and not Path(values["models"]).is_file():
        parser.error(f"--models: no such file: {values['models']}")
    return Settings(**values)
