"""`python -m server`: run the chat server (see `--help`)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sys

from .config import parse_args  # importing the package set LiteLLM's local price map (server/__init__.py)


LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")


def quiet_litellm_logs() -> None:
    """LiteLLM logs two INFO lines for every request ("completion() model=...", "200 OK"), each printed twice: by
    the handler it adds to its own loggers and by ours through the root. That is noise in a user's console and
    CPU on the event loop at every stream start (bench/README.md). Its warnings and errors still come, once, in our
    format; LITELLM_LOG (LiteLLM's own variable, e.g. INFO or DEBUG) brings its detail back."""
    level = logging.getLevelName(os.environ.get("LITELLM_LOG", "WARNING").upper())
    for name in LITELLM_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(level if isinstance(level, int) else logging.WARNING)


async def sign_in_url(settings, base_url: str) -> tuple[str, str]:
    """What to print: (how, url). With accounts and an owner without a password, a fresh one-time sign-in link;
    once the owner has a password, the plain address (a console is often kept in a log: no secret in it then;
    `just users login-url` still makes a link)."""
    from .credentials import login_link
    from .db import Database

    if settings.auth == "none":
        return "open", base_url
    db = await Database.open(settings.db)
    try:
        owner = await db.accounts.ensure_owner()
        if await db.accounts.password_hash(owner["id"]) is not None:
            return "sign in with your password at", base_url
        return "sign in as the owner with", await login_link(db.accounts, owner["id"], base_url)
    finally:
        await db.close()


def event_loop(choice: str):
    """uvloop's loop when installed (less CPU per token: bench/README.md), unless `--loop asyncio`."""
    if choice == "auto":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["users"]:
        from .users_cli import main as users_main

        return users_main(argv[1:])
    settings = parse_args(argv)  # before the heavy imports, so --help and flag errors are instant
    from aiohttp import web

    from . import heap
    from .app import create_app
    from .keys import REGISTRY
    from .provider import ModelConfigError
    from .proxy import MalformedRequestsInOneLine, ProxyAwareAccessLogger

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestsInOneLine())
    try:
        app = create_app(settings)
    except (ModelConfigError, RuntimeError) as exc:
        sys.exit(f"error: {exc}")
    quiet_litellm_logs()  # after create_app: importing LiteLLM is what adds its handlers
    # after the app's own start-up (database, LiteLLM warm-up); busy while any answer streams
    app.cleanup_ctx.append(heap.schedule(busy=lambda: bool(app[REGISTRY].active)))
    model = f"models from {settings.models}" if settings.models else "the embedded SmolLM2-135M-Instruct model"
    url = f"http://{'localhost' if settings.host in ('127.0.0.1', '0.0.0.0') else settings.host}:{settings.port}/"
    how, url = asyncio.run(sign_in_url(settings, url))
    loop = event_loop(settings.loop)

    def announce(_line: str) -> None:
        # The one-time URL goes to this console only (never to the log): whoever can read it can sign in once.
        loop_name = type(loop).__module__.split(".")[0]  # uvloop or asyncio
        if settings.host_is_public:  # allowed (a LAN, a container), but passwords and cookies go in clear text
            print(f"warning: --host {settings.host} serves plain HTTP to the network: passwords and session "
                  "cookies cross it unencrypted. Put nginx with TLS in front (README, Behind nginx) and keep "
                  "--host 127.0.0.1", file=sys.stderr, flush=True)
        print(f"pinchat is running with {model} on {loop_name}: {how} {url}  (Ctrl-C stops it)", flush=True)

    # handler_cancellation: aiohttp cancels a handler when its client disconnects (off by default), which is
    # how a closed tab stops a generation within milliseconds even while the provider is silent.
    try:
        web.run_app(app, host=settings.host, port=settings.port, handler_cancellation=True, print=announce,
                    access_log_class=ProxyAwareAccessLogger, shutdown_timeout=10, loop=loop)
    except OSError as exc:  # e.g. the port is taken: say so plainly, no traceback
        hint = ("choose another with --port or PINCHAT_PORT" if exc.errno in (errno.EADDRINUSE, errno.EACCES)
                else "check --host or PINCHAT_HOST: an address of this machine, e.g. 127.0.0.1")
        sys.exit(f"error: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc} ({hint})")


if __name__ == "__main__":
    main()
