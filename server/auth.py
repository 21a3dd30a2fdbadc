"""Who is asking: session cookies, API tokens, one-time sign-in links, a trusted SSO header, or nobody.

`authenticate` middleware: every `/api/` route but the public ones runs with `request[USER]` set, or answers 401.
Identity comes from, in order: `Authorization: Bearer pc_...`, the session cookie, the `--auth-header` of a
trusted proxy, or (`--auth none`) the owner. Secrets and passwords themselves: credentials.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from .account_store import AccountStore
from .config import Settings, is_loopback
from .credentials import new_secret, secret_hash
from .errors import ApiError
from .keys import DB, OWNER, REGISTRY, SETTINGS
from .proxy import client_address
from .schemas import CONTROL_CHARACTER

# Longer than the 64 of names made here: single sign-on names are often e-mail addresses (at most 254). A longer
# one is refused, never cut: two people whose names share a beginning would share an account.
MAX_SIGN_ON_NAME_CHARS = 254

SESSION_COOKIE = "pinchat_session"
PUBLIC_API = frozenset({"/api/health", "/api/auth/me", "/api/auth/login", "/api/openapi.json"})

USER = web.RequestKey("user", dict)
CREDENTIAL = web.RequestKey("credential", str)  # "session:<id>", "token:<id>", "header" or "none"

@dataclass
class OpenStreams:
    """The streaming responses of this process by credential and user, so that ending a session (sign-out,
    password change, disabled user, revoked token) ends its streams at once (and, through the Registry, the
    answers it started: `Generation.started_by`)."""

    tasks: dict[asyncio.Task, tuple[str, int]] = field(default_factory=dict)

    def track(self, request: web.Request) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks[task] = (request[CREDENTIAL], request[USER]["id"])
            task.add_done_callback(self.tasks.pop)

    def count(self, user_id: int) -> int:
        return sum(1 for _, owner in self.tasks.values() if owner == user_id)

    def end(self, *, credentials: set[str] = frozenset(), user_id: int | None = None,
            keep: str | None = None) -> None:
        for task, (credential, owner) in list(self.tasks.items()):
            if credential != keep and (credential in credentials or owner == user_id):
                task.cancel()

    def rekey(self, old: str, new: str) -> None:
        """The same person's session got a new id (its secret was rotated): its streams go on under the new one."""
        for task, (credential, owner) in list(self.tasks.items()):
            if credential == old:
                self.tasks[task] = (new, owner)

    async def recheck(self, accounts: AccountStore, also: set[str] = frozenset()) -> set[str]:
        """End the streams whose credential ended outside this process (another worker, `python -m server users
        disable|passwd|remove`): a session or API token gone, a user disabled or removed. Returns the credentials
        found ended among the streams' and `also` (those that started running answers)."""
        held = dict(self.tasks)
        credentials = {credential for credential, _ in held.values()} | set(also)
        if not credentials:
            return set()
        ids = {kind: {int(c.split(":")[1]) for c in credentials if c.startswith(kind + ":")}
               for kind in ("session", "token")}
        sessions, tokens, enabled = await accounts.live_credentials(ids["session"], ids["token"],
                                                                    {owner for _, owner in held.values()})
        live = {f"session:{i}" for i in sessions} | {f"token:{i}" for i in tokens} | {"header", "none"}
        for task, (credential, owner) in held.items():
            unchanged = self.tasks.get(task) == (credential, owner)  # not rekeyed while the rows were read
            if unchanged and (credential not in live or owner not in enabled):
                task.cancel()
        return credentials - live


OPEN_STREAMS = web.AppKey("open_streams", OpenStreams)


def accounts_of(request: web.Request) -> AccountStore:
    return request.app[DB].accounts


async def identify(request: web.Request, settings: Settings) -> tuple[dict[str, Any], str] | None:
    accounts = accounts_of(request)
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        found = await accounts.token_user(secret_hash(authorization[7:].strip()))
        if found is None:
            raise ApiError(401, "unauthenticated", "This API token is not valid (revoked, or its user is disabled).")
        return found[1], f"token:{found[0]}"
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        found = await accounts.session(secret_hash(cookie), settings.session_idle_hours * 3600)
        if found is not None:
            return found[1], f"session:{found[0]}"
    if settings.auth_header and request.remote in settings.trusted_proxies:
        name = request.headers.get(settings.auth_header, "").strip()
        if name:
            if len(name) > MAX_SIGN_ON_NAME_CHARS or CONTROL_CHARACTER.search(name):
                raise ApiError(403, "forbidden", f"The name your sign-on proxy gives ({settings.auth_header}) is not "
                                                 f"one line of at most {MAX_SIGN_ON_NAME_CHARS} characters.")
            user = await accounts.signed_on_user(name)
            return (None if user["disabled"] else (user, "header"))
    if settings.auth == "none":
        return request.app[OWNER], "none"
    return None


@web.middleware
async def authenticate(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    settings = request.app[SETTINGS]
    if settings.auth == "none" and settings.host_is_public and request.remote not in settings.trusted_proxies \
            and not is_loopback(request.remote or ""):
        raise ApiError(403, "forbidden", "Without accounts (--auth none) only the trusted proxies may connect.")
    if request.path == "/" and "token" in request.query:
        return await use_login_link(request, settings)
    if not request.path.startswith("/api/"):
        return await handler(request)
    found = await identify(request, settings)
    if found is not None:
        request[USER], request[CREDENTIAL] = found
    elif request.path not in PUBLIC_API:
        raise ApiError(401, "unauthenticated", "Sign in first (or send an API token as `Authorization: Bearer`).")
    return await handler(request)


def is_https(request: web.Request, settings: Settings) -> bool:
    if request.secure:
        return True
    return (request.remote in settings.trusted_proxies
            and request.headers.get("X-Forwarded-Proto", "").lower() == "https")


async def start_session(request: web.Request, response: web.StreamResponse, user: dict[str, Any]) -> None:
    """A new session row and cookie (a fresh secret at every sign-in: a planted cookie is never promoted). The
    request's own session ends; if it was the same user's, its streams and answers go on under the new one."""
    settings = request.app[SETTINGS]
    secret = new_secret()
    session_id = await accounts_of(request).create_session(user["id"], secret_hash(secret))
    old = request.get(CREDENTIAL, "")
    if old.startswith("session:"):
        if request.get(USER, {}).get("id") == user["id"]:
            request.app[OPEN_STREAMS].rekey(old, f"session:{session_id}")
            request.app[REGISTRY].rekey(old, f"session:{session_id}")
        await accounts_of(request).delete_session(int(old.split(":")[1]))
    response.set_cookie(SESSION_COOKIE, secret, httponly=True, samesite="Lax", path="/",
                        secure=is_https(request, settings), max_age=int(settings.session_idle_hours * 3600))


async def use_login_link(request: web.Request, settings: Settings) -> web.StreamResponse:
    user_id = await accounts_of(request).use_login_link(secret_hash(request.query["token"]))
    user = await accounts_of(request).user(user_id) if user_id is not None else None
    if user is None or user["disabled"]:
        raise web.HTTPSeeOther("/#signin-expired")
    # the token leaves the address bar (and the history)
    response = web.Response(status=303, headers={"Location": "/", "Cache-Control": "no-store"})
    await start_session(request, response, user)
    return response


def client_key(request: web.Request) -> str:
    return client_address(request, request.app[SETTINGS].trusted_proxies) or "unknown"
