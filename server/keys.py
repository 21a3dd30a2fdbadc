"""The application's shared objects, one typed key each (set up in app.py, read by the routes and middlewares)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from .config import Settings
from .context import Budget
from .db import Database
from .generation import Registry
from .pacing import StartPacer
from .turn import Turns
from .utility import Utility

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", Database)
REGISTRY = web.AppKey("registry", Registry)
UTILITY = web.AppKey("utility", Utility)
BUDGET = web.AppKey("budget", Budget)
TURNS = web.AppKey("turns", Turns)
PACER = web.AppKey("pacer", StartPacer)
IMPORTS = web.AppKey("imports", asyncio.Semaphore)  # the turns of imports in this process (routes.handle_import)
OWNER = web.AppKey("owner", dict[str, Any])  # the owner account, created on first start
