"""The account API: sign-in/out, one's own password and API tokens, and the admins' user management."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from aiohttp import web

from .auth import CREDENTIAL, OPEN_STREAMS, SESSION_COOKIE, USER, accounts_of, client_key, start_session
from .credentials import TOKEN_PREFIX, hash_password, new_secret, secret_hash, verify_password
from .errors import ApiError
from .keys import OWNER, REGISTRY, SETTINGS
from .account_schemas import ChangePassword, CreateToken, CreateUser, Login, PatchUser
from .schemas import parse_body, path_id
from .timestamps import now

# Failed sign-ins allowed per window, per account and per client address, before 429.
THROTTLE_WINDOW = 600.0
FAILURES_PER_ACCOUNT = 10
FAILURES_PER_ADDRESS = 30

routes = web.RouteTableDef()


def item_id(request: web.Request) -> int:
    value = path_id(request.match_info["id"])
    if value is None:
        raise ApiError(404, "not_found", "Not found.")
    return value


def require_admin(request: web.Request) -> dict[str, Any]:
    user = request[USER]
    if not user["is_admin"]:
        raise ApiError(403, "admin_only", "Only an admin manages accounts.")
    return user


async def still_admin(accounts, admin: dict[str, Any]) -> None:
    """The admin of this request is one now, not only when it was authenticated (another admin may have demoted
    them meanwhile)."""
    current = await accounts.user(admin["id"])
    if current is None or not current["is_admin"] or current["disabled"]:
        raise ApiError(403, "admin_only", "Only an admin manages accounts.")


def end_credentials(request: web.Request, credentials: set[str], user_id: int | None = None) -> None:
    """Their streams end and the answers they started stop (saved as interrupted)."""
    request.app[OPEN_STREAMS].end(credentials=credentials, user_id=user_id)
    request.app[REGISTRY].stop_started_by(credentials)


def end_sessions_and_streams(request: web.Request, ended: list[int], user_id: int | None = None) -> None:
    end_credentials(request, {f"session:{i}" for i in ended}, user_id)


async def stop_answers(request: web.Request, user_id: int) -> None:
    """A disabled or removed user's answers stop now (a vanished reader alone would leave them running for the
    detach grace)."""
    await request.app[REGISTRY].stop_answers(lambda owner: owner is not None and owner[0] == user_id)


@routes.get("/api/auth/me")
async def handle_me(request: web.Request) -> web.Response:
    if USER not in request:
        raise ApiError(401, "unauthenticated", "Not signed in.")
    settings = request.app[SETTINGS]
    return web.json_response({"user": request[USER], "auth": settings.auth, "sso": bool(settings.auth_header)})


@routes.post("/api/auth/login")
async def handle_login(request: web.Request) -> web.Response:
    body = await parse_body(request, Login)
    username, password = body.username, body.password
    accounts = accounts_of(request)
    keys = [f"user:{username.lower()}", f"addr:{client_key(request)}"]
    attempt = await accounts.reserve_attempt(keys)  # counted before the (slow) check: parallel guesses see it
    for key, limit in zip(keys, (FAILURES_PER_ACCOUNT, FAILURES_PER_ADDRESS)):
        count, oldest = await accounts.failures(key, THROTTLE_WINDOW)
        if count > limit:  # this attempt included
            await accounts.forget_attempt(attempt)  # refused unchecked: not a failure of its own
            wait = THROTTLE_WINDOW - (datetime.fromisoformat(now()) - datetime.fromisoformat(oldest)).total_seconds()
            raise ApiError(429, "too_many_attempts", "Too many failed sign-ins; wait a few minutes and try again.",
                           {"Retry-After": str(max(1, int(wait) + 1))})
    user = await accounts.user_by_name(username)
    stored = await accounts.password_hash(user["id"]) if user else None
    if not await verify_password(stored, password) or user["disabled"]:
        await accounts.clear_failures("", older_than_seconds=THROTTLE_WINDOW)  # keep the table small
        raise ApiError(401, "invalid_credentials", "Wrong user name or password.")
    await accounts.forget_attempt(attempt)
    await accounts.clear_failures(keys[0])
    response = web.json_response({"user": user})
    await start_session(request, response, user)
    return response


@routes.post("/api/auth/logout")
async def handle_logout(request: web.Request) -> web.Response:
    credential = request[CREDENTIAL]
    if credential.startswith("session:"):
        session_id = int(credential.split(":")[1])
        await accounts_of(request).delete_session(session_id)
        end_sessions_and_streams(request, [session_id])
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@routes.post("/api/auth/password")
async def handle_change_password(request: web.Request) -> web.Response:
    body = await parse_body(request, ChangePassword)  # 422 weak_password
    user, accounts = request[USER], accounts_of(request)
    new, current = body.new_password, body.current_password
    stored = await accounts.password_hash(user["id"])
    if stored is not None and not await verify_password(stored, current or ""):
        raise ApiError(403, "wrong_password", "The current password is not right.")
    await accounts.update_user(user["id"], password_hash=await hash_password(new))
    credential = request[CREDENTIAL]
    keep = int(credential.split(":")[1]) if credential.startswith("session:") else None
    ended = await accounts.delete_sessions(user["id"], keep=keep)
    end_sessions_and_streams(request, ended)
    response = web.json_response({"user": await accounts.user(user["id"])})
    if keep is not None:
        await start_session(request, response, user)  # rotated: the old cookie is dead too
    return response


# personal API tokens

@routes.get("/api/tokens")
async def handle_list_tokens(request: web.Request) -> web.Response:
    return web.json_response({"tokens": await accounts_of(request).tokens(request[USER]["id"])})


@routes.post("/api/tokens")
async def handle_create_token(request: web.Request) -> web.Response:
    if request[CREDENTIAL].startswith("token:"):  # else a leaked token could mint others and outlive its revoking
        raise ApiError(403, "session_required", "API tokens are made from a signed-in page or session, not with "
                                                "another API token.")
    name = (await parse_body(request, CreateToken)).name
    secret = TOKEN_PREFIX + new_secret()
    token = await accounts_of(request).create_token(request[USER]["id"], name, secret_hash(secret))
    return web.json_response({**token, "token": secret}, status=201)  # the only time it is shown


@routes.delete("/api/tokens/{id}")
async def handle_revoke_token(request: web.Request) -> web.Response:
    token_id = item_id(request)
    if not await accounts_of(request).delete_token(request[USER]["id"], token_id):
        raise ApiError(404, "not_found", "No such token.")
    end_credentials(request, {f"token:{token_id}"})
    return web.Response(status=204)


# user management (admins)

@routes.get("/api/users")
async def handle_list_users(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response({"users": await accounts_of(request).list_users()})


@routes.post("/api/users")
async def handle_add_user(request: web.Request) -> web.Response:
    require_admin(request)
    body = await parse_body(request, CreateUser)  # 422 weak_password
    username, password, is_admin = body.username, body.password, body.is_admin
    try:
        user = await accounts_of(request).create_user(username, await hash_password(password), is_admin)
    except sqlite3.IntegrityError:
        raise ApiError(409, "username_taken", f"There is already a user named {username!r}.") from None
    return web.json_response(user, status=201)


@routes.patch("/api/users/{id}")
async def handle_change_user(request: web.Request) -> web.Response:
    admin = require_admin(request)
    accounts, target = accounts_of(request), item_id(request)
    body = await parse_body(request, PatchUser)  # 422 weak_password
    disabled, is_admin, password = body.disabled, body.is_admin, body.password
    if await accounts.user(target) is None:
        raise ApiError(404, "not_found", "No such user.")
    if target == admin["id"] and (disabled or is_admin is False):
        raise ApiError(422, "cannot_change_self", "You cannot disable or demote yourself; ask another admin.")
    if target == request.app[OWNER]["id"] and (disabled or is_admin is False):  # so an admin always remains
        raise ApiError(422, "cannot_change_owner", "The owner account cannot be disabled or demoted.")
    if not await accounts.update_user(target, password_hash=await hash_password(password) if password else None,
                                      disabled=disabled, is_admin=is_admin, by_admin=admin["id"]):
        raise ApiError(403, "admin_only", "Only an admin manages accounts.")  # demoted in the meantime
    if disabled or password is not None:  # a disabled user or a reset password: every session and stream ends
        end_sessions_and_streams(request, await accounts.delete_sessions(target), user_id=target)
    if disabled:
        await stop_answers(request, target)
    return web.json_response(await accounts.user(target))


@routes.delete("/api/users/{id}")
async def handle_remove_user(request: web.Request) -> web.Response:
    admin = require_admin(request)
    accounts, target = accounts_of(request), item_id(request)
    if target == admin["id"] or target == request.app[OWNER]["id"]:  # the page hides Remove for both
        raise ApiError(422, "cannot_change_self", "Neither yourself nor the owner account can be removed.")
    if await accounts.user(target) is None:
        raise ApiError(404, "not_found", "No such user.")
    await still_admin(accounts, admin)  # before the user's answers stop (they are saved before the rows go)
    request.app[OPEN_STREAMS].end(user_id=target)
    await stop_answers(request, target)
    if not await accounts.delete_user(target, by_admin=admin["id"]):
        raise ApiError(403, "admin_only", "Only an admin manages accounts.")  # demoted in the meantime
    return web.Response(status=204)
