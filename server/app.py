"""The aiohttp application: API routes, static files, and the lifetime of the database and generations."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from litellm import Router

from . import openai_compatible, provider
from .config import Settings
from .db import Database
from . import account_routes
from .auth import OPEN_STREAMS, OpenStreams, authenticate
from .errors import json_errors
from .openapi import openapi_handler
from .generation import Registry
from .context import Budget
from .pacing import StartPacer
from .keys import BUDGET, DB, IMPORTS, OWNER, PACER, REGISTRY, SETTINGS, TURNS, UTILITY
from .proxy import TRUSTED_PROXIES
from .routes import IMPORTS_AT_ONCE, routes
from .turn import Turns
from .security import add_page_headers, check_csrf, check_host
from .static import setup_static
from .utility import Utility

log = logging.getLogger(__name__)

ROUTER = web.AppKey("router", Router)


def create_app(settings: Settings, router: Router | None = None) -> web.Application:
    app = web.Application(middlewares=[json_errors, check_host, authenticate, check_csrf],
                          client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[OPEN_STREAMS] = OpenStreams()
    app[TRUSTED_PROXIES] = settings.trusted_proxies
    provider.configure_litellm()
    app[ROUTER] = router = router or provider.build_router(settings.models, settings.pool_size)
    app[BUDGET] = make_budget(settings, router)
    app[PACER] = StartPacer()
    app[IMPORTS] = asyncio.Semaphore(IMPORTS_AT_ONCE)
    app.cleanup_ctx.append(_lifetime)
    app.on_shutdown.append(_stop_generations)
    app.add_routes(routes)
    app.add_routes(account_routes.routes)
    app.router.add_get("/api/openapi.json", openapi_handler)  # public: auth.PUBLIC_API
    app.on_response_prepare.append(add_page_headers)
    setup_static(app, settings.web_root)
    return app


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    db = await Database.open(app[SETTINGS].db)
    recovered = await db.recover_interrupted()
    if recovered:
        log.info("marked %d answer(s) left streaming by the last run as interrupted", recovered)
    app[DB] = db
    app[OWNER] = await db.accounts.ensure_owner()
    app[REGISTRY] = Registry(db, app[SETTINGS].flush_interval, app[SETTINGS].detach_grace)
    app[TURNS] = Turns(db, app[REGISTRY], app[ROUTER], app[BUDGET])
    app[UTILITY] = Utility(db, app[ROUTER])
    app[REGISTRY].on_complete = app[UTILITY].after_answer
    await provider.warm_up(app[ROUTER])
    watcher = asyncio.create_task(_recheck_credentials(app))
    yield
    watcher.cancel()
    await app[REGISTRY].shutdown()
    await app[UTILITY].shutdown()
    await db.close()
    await openai_compatible.close()
    if app[SETTINGS].models is None:
        from . import embedded

        await embedded.close()


async def _recheck_credentials(app: web.Application) -> None:
    """Sign-outs, disabled users and revoked tokens in this process end their streams at once (account_routes);
    those made elsewhere (the users CLI, another worker sharing the database) are found here, within an interval."""
    while True:
        await asyncio.sleep(app[SETTINGS].credential_recheck)
        try:
            registry = app[REGISTRY]
            registry.stop_started_by(await app[OPEN_STREAMS].recheck(app[DB].accounts, also=registry.starters()))
            await registry.stop_answers(lambda owner: owner is None or not owner[1])  # no query when none runs
        except Exception:  # a locked or closing database: look again at the next interval
            log.exception("re-checking the open streams' credentials failed")


async def _stop_generations(app: web.Application) -> None:
    """SIGTERM / Ctrl-C: end open streams now, saving each answer as interrupted; drop background work."""
    await app[REGISTRY].shutdown()
    await app[UTILITY].shutdown()


def make_budget(settings: Settings, router: Router) -> Budget:
    window = provider.context_window(router)
    tokens = settings.context_budget or max(256, window - settings.answer_reserve)
    model = provider.counting_model(router)

    # Each chat re-reads its whole history (and a pin its ancestors'): count every message once, not per chat.
    @functools.lru_cache(maxsize=8192)
    def count_message(role: str, content: str) -> int:
        return provider.count_tokens(model, [{"role": role, "content": content}])

    return Budget(tokens, count_message, settings.parent_share, settings.ancestors_share)
