"""`python -m server`: run the chat server (see `--help`)."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys

from .config import parse_args  # importing the package set LiteLLM's local price map (server/__init__.py)


async def settle_heap(_app) -> None:
    """Move everything loaded at start-up (LiteLLM and its provider SDKs: ~400k objects) out of the garbage
    collector's reach. Otherwise each full collection walks them all, pausing every stream for 130-600 ms
    (measured in bench/: p99 added latency 699 ms -> 106 ms at 100 streams x 30 tokens/s)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)  # fewer young collections: per-token objects die young anyway


async def sign_in_url(settings, base_url: str) -> str:
    """The URL to print: with accounts, a fresh one-time sign-in link for the owner."""
    from .credentials import login_link
    from .db import Database

    if settings.auth == "none":
        return base_url
    db = await Database.open(settings.db)
    try:
        owner = await db.accounts.ensure_owner()
        return await login_link(db.accounts, owner["id"], base_url)
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

    from .app import create_app
    from .provider import ModelConfigError
    from .proxy import MalformedRequestsInOneLine, ProxyAwareAccessLogger

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestsInOneLine())
    try:
        app = create_app(settings)
    except (ModelConfigError, RuntimeError) as exc:
        sys.exit(f"error: {exc}")
    app.on_startup.append(settle_heap)  # runs after the app's own start-up (database, LiteLLM warm-up)
    model = f"models from {settings.models}" if settings.models else "the embedded SmolLM2-135M-Instruct model"
    url = f"http://{'localhost' if settings.host in ('127.0.0.1', '0.0.0.0') else settings.host}:{settings.port}/"
    url = asyncio.run(sign_in_url(settings, url))
    loop = event_loop(settings.loop)

    def announce(_line: str) -> None:
        # The one-time URL goes to this console only (never to the log): whoever can read it can sign in once.
        how = "sign in as the owner with" if settings.auth != "none" else "open"
        loop_name = type(loop).__module__.split(".")[0]  # uvloop or asyncio
        print(f"pinchat is running with {model} on {loop_name}: {how} {url}  (Ctrl-C stops it)", flush=True)

    # handler_cancellation: aiohttp cancels a handler when its client disconnects (off by default), which is
    # how a closed tab stops a generation within milliseconds even while the provider is silent.
    try:
        web.run_app(app, host=settings.host, port=settings.port, handler_cancellation=True, print=announce,
                    access_log_class=ProxyAwareAccessLogger, shutdown_timeout=10, loop=loop)
    except OSError as exc:  # e.g. the port is taken: say so plainly, no traceback
        sys.exit(f"error: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc} "
                 "(choose another with --port or PINCHAT_PORT)")


if __name__ == "__main__":
    main()
