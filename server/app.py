"""The aiohttp application: API routes, static files, and the lifetime of the database and generations."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from litellm import Router

from . import provider
from .config import Settings
from .db import Database
from .errors import json_errors
from .generation import Registry
from .context import Budget
from .proxy import TRUSTED_PROXIES
from .routes import BUDGET, DB, REGISTRY, SETTINGS, UTILITY, routes
from .static import setup_static
from .utility import Utility

log = logging.getLogger(__name__)

ROUTER = web.AppKey("router", Router)


def create_app(settings: Settings, router: Router | None = None) -> web.Application:
    app = web.Application(middlewares=[json_errors])
    app[SETTINGS] = settings
    app[TRUSTED_PROXIES] = settings.trusted_proxies
    app[ROUTER] = router = router or provider.build_router(settings.models, settings.pool_size)
    app[BUDGET] = make_budget(settings, router)
    app.cleanup_ctx.append(_lifetime)
    app.on_shutdown.append(_stop_generations)
    app.add_routes(routes)
    setup_static(app, settings.web_root)
    return app


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    db = await Database.open(app[SETTINGS].db)
    recovered = await db.recover_interrupted()
    if recovered:
        log.info("marked %d answer(s) left streaming by the last run as interrupted", recovered)
    app[DB] = db
    app[REGISTRY] = Registry(db, app[ROUTER], app[SETTINGS].flush_interval)
    app[UTILITY] = Utility(db, app[ROUTER])
    app[REGISTRY].on_complete = app[UTILITY].after_answer
    await provider.warm_up(app[ROUTER])
    yield
    await app[REGISTRY].shutdown()
    await app[UTILITY].shutdown()
    await db.close()
    if app[SETTINGS].models is None:
        from . import embedded

        await embedded.close()


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
