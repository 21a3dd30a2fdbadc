"""The OpenAPI 3.1 document of the HTTP API (GET /api/openapi.json), built from one table of operations whose
request shapes are the pydantic models of `server.schemas` (the same models the routes validate with) and whose
response shapes are the models below.

A test (tests/test_openapi.py) checks that the table and the app's routes name the same operations.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from . import account_schemas as a
from . import schemas as s

REF = "#/components/schemas/{model}"
SSE = "text/event-stream"
MARKDOWN = "text/markdown"


class Out(BaseModel):
    """A response body. Open: a new field is not a breaking change."""


# The routes build plain dicts; these models document them (and the fuzz tests check the answers against them).

class ErrorDetail(Out):
    code: str
    message: str


class Error(Out):
    error: ErrorDetail


class Health(Out):
    status: Literal["ok"]
    active_streams: int


class AnchorOut(Out):
    message_id: int
    start: int
    end: int
    text: str


class Thread(Out):
    id: int
    title: str | None
    parent_id: int | None
    anchor: AnchorOut | None
    summary: str | None
    created_at: str
    updated_at: str
    streaming: bool
    suggestions: list[str] | None = Field(None, description="a pin's starter questions (pins only)")


class Message(Out):
    id: int
    thread_id: int
    role: Literal["user", "assistant"]
    content: str
    status: Literal["streaming", "complete", "interrupted", "error"]
    kind: Literal["chat", "merge"]
    merged_ids: list[int] | None
    model: str | None
    usage: dict[str, Any] | None
    finish_reason: str | None
    error: str | None
    created_at: str


class ThreadDetail(Thread):
    messages: list[Message]
    pins: list[Thread]
    stream_event_id: str | None = None  # while answering: the event the text snapshot ends at (follow after it)


class ThreadList(Out):
    threads: list[Thread]


class Cancelled(Out):
    cancelled: bool


class StreamEvent(Out):
    """One `data:` line of a chat or merge stream; `type` says which fields it has."""

    type: Literal["start", "token", "done", "error", "interrupted"]
    message_id: int | None = None
    user_message_id: int | None = None
    kind: Literal["chat", "merge"] | None = None
    text: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    code: str | None = None
    message: str | None = None
    reason: str | None = None


class User(Out):
    id: int
    username: str
    is_admin: bool
    disabled: bool
    is_owner: bool  # the account made on first start; it cannot be removed
    created_at: str
    has_password: bool


class UserEnvelope(Out):
    user: User


class Me(UserEnvelope):
    auth: Literal["password", "none"]
    sso: bool


class UserList(Out):
    users: list[User]


class Token(Out):
    id: int
    name: str
    created_at: str
    last_used_at: str | None


class NewToken(Token):
    token: str = Field(description="the secret (`pc_...`), shown this once: send it as `Authorization: Bearer`")


class TokenList(Out):
    tokens: list[Token]


# What each error status means here; an operation lists the ones it can answer (see `Op.errors`).
ERRORS = {
    400: "invalid_json: the body is not a JSON object (not JSON, not UTF-8, nested too deep)",
    401: "unauthenticated: no valid session cookie or API token (or invalid_credentials at sign-in)",
    403: "csrf_rejected (a cookie-authenticated change without a JSON body and a same-site Origin), admin_only, "
         "wrong_password, session_required (a token made with an API token)",
    404: "not found (another user's thread or token answers exactly like a missing one)",
    408: "import_too_slow: the import's body did not arrive in time",
    409: "thread_busy (already answering) or username_taken",
    413: "request_too_large (the body) or message_too_long",
    421: "host_not_allowed: the Host header is not one this server answers for",
    422: "a field is invalid: the code names it (invalid_field, invalid_message, invalid_anchor, ...)",
    429: "too_many_attempts, too_many_streams (answers, or open streams with their followers) or rate_limited "
         "(see Retry-After)",
    503: "server_busy: this process writes as many answers as it admits, or import_busy: imports are running "
         "(see Retry-After)",
}


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    operation_id: str
    summary: str
    status: int = 200  # the success status
    out: type[BaseModel] | str | None = None  # response model, SSE, or None (no body)
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    auth: str = "required"  # "required", "none" (public) or "optional" (public, but reads who asks)
    links: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (operationId, id expression)
    empty: tuple[int, str] | None = None  # a second success answered with no body: (status, when)
    description: str = ""


def _thread_links(expression: str = "$response.body#/id") -> dict[str, tuple[str, str]]:
    return {name: (op, expression) for name, op in [
        ("GetThread", "getThread"), ("Chat", "chat"), ("Merge", "mergeThreads"), ("Cancel", "cancelThread"),
        ("Export", "exportThread"), ("DeleteThread", "deleteThread")]}


THREAD = "/api/threads/{id}"
OPERATIONS: list[Op] = [
    Op("get", "/api/health", "health", "Liveness and the number of answers streaming", out=Health, auth="none"),
    Op("get", "/api/openapi.json", "openapi", "This document", out="json", auth="none"),
    # accounts
    Op("get", "/api/auth/me", "me", "Who is signed in (401 when nobody is)", out=Me, auth="optional",
       errors=(401,)),
    Op("post", "/api/auth/login", "login", "Sign in with a password: sets the session cookie", body=a.Login,
       out=UserEnvelope, auth="none", errors=(401, 429)),
    Op("post", "/api/auth/logout", "logout", "End this session (clears the cookie)", status=204),
    Op("post", "/api/auth/password", "changePassword", "Set one's own password; ends one's other sessions",
       body=a.ChangePassword, out=UserEnvelope, errors=(403,)),
    Op("get", "/api/tokens", "listTokens", "One's personal API tokens", out=TokenList),
    Op("post", "/api/tokens", "createToken", "A new API token; its secret is shown this once", status=201,
       body=a.CreateToken, out=NewToken, links={"RevokeToken": ("revokeToken", "$response.body#/id")},
       errors=(403,)),
    Op("delete", "/api/tokens/{id}", "revokeToken", "Revoke one of one's API tokens", status=204, errors=(404,)),
    Op("get", "/api/users", "listUsers", "Every account (admins)", out=UserList, errors=(403,)),
    Op("post", "/api/users", "createUser", "Add an account (admins)", status=201, body=a.CreateUser, out=User,
       errors=(403, 409), links={"PatchUser": ("patchUser", "$response.body#/id"),
                                 "RemoveUser": ("removeUser", "$response.body#/id")}),
    Op("patch", "/api/users/{id}", "patchUser", "Disable, enable, promote, demote or reset an account (admins)",
       body=a.PatchUser, out=User, errors=(403, 404)),
    Op("delete", "/api/users/{id}", "removeUser", "Remove an account and its conversations (admins)", status=204,
       errors=(403, 404, 422)),
    # conversations
    Op("get", "/api/threads", "listThreads", "One's top-level threads, newest first", out=ThreadList,
       links=_thread_links("$response.body#/threads/0/id")),
    Op("post", "/api/threads", "createThread", "A new thread, or a pin on a passage of an answer", status=201,
       body=s.CreateThread, out=Thread, links=_thread_links()),
    Op("get", THREAD, "getThread", "A thread with its messages and pins", out=ThreadDetail, errors=(404,)),
    Op("delete", THREAD, "deleteThread", "Delete a thread and its pins (stopping their streams)", status=204,
       errors=(404,)),
    Op("post", THREAD + "/chat", "chat", "Send a message; the answer streams back", body=s.Chat, out=SSE,
       errors=(404, 409, 413, 429, 503)),
    Op("get", THREAD + "/stream", "followThread", "Follow the running answer (replays after Last-Event-ID); "
       "204 when none runs", out=SSE, query=s.FollowQuery, errors=(400, 404, 429),
       empty=(204, "No answer is being written in this thread")),
    Op("post", THREAD + "/cancel", "cancelThread", "Stop the thread's answer; returns once it is saved",
       out=Cancelled, errors=(404,)),
    Op("post", THREAD + "/merge", "mergeThreads", "Stream a merged write-up of threads of this tree", body=s.Merge,
       out=SSE, errors=(404, 409, 429, 503)),
    Op("get", THREAD + "/export", "exportThread", "The whole tree as Markdown or as a JSON export",
       query=s.ExportQuery, out="export", errors=(404,)),
    Op("post", "/api/import", "importThread", "A JSON export back as a new tree", status=201,
       body=s.ExportDocument, out=Thread, links=_thread_links(), errors=(408, 413, 503)),
]

_REQUEST_MODELS = [m for op in OPERATIONS for m in (op.body,) if m is not None]
_RESPONSE_MODELS = [Error, StreamEvent, *(op.out for op in OPERATIONS if isinstance(op.out, type))]


def _schemas() -> tuple[dict[tuple[type[BaseModel], str], dict[str, Any]], dict[str, Any]]:
    pairs = list(dict.fromkeys([(m, "validation") for m in _REQUEST_MODELS]
                               + [(m, "serialization") for m in _RESPONSE_MODELS]))
    refs, defs = models_json_schema(pairs, ref_template=REF)
    return refs, defs.get("$defs", {})


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _event_stream(ref: dict[str, Any]) -> dict[str, Any]:
    # One parsed SSE event (OpenAPI 3.2 calls this itemSchema; 3.1 tools read `schema` per event): `id: <n>` and
    # one `data:` line of JSON.
    return {SSE: {"schema": {
        "type": "object", "required": ["data"],
        "properties": {"id": {"type": "string", "pattern": "^[0-9]+[.][0-9]+$"}, "event": {"type": "string"},
                       "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": ref}}}}}


def _parameters(op: Op) -> list[dict[str, Any]]:
    params = []
    if "{id}" in op.path:
        params.append({"name": "id", "in": "path", "required": True,
                       "description": "a thread, token or user id (anything else answers 404)",
                       "schema": {"type": "integer", "minimum": 1, "maximum": s.MAX_ID}})
    if op.query is not None:
        schema = op.query.model_json_schema(ref_template=REF)
        for name, prop in schema.get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": name in schema.get("required", []),
                           "schema": prop})
    return params


def _operation(op: Op, refs: dict[tuple[type[BaseModel], str], dict[str, Any]]) -> dict[str, Any]:
    def ref(model: type[BaseModel], mode: str = "serialization") -> dict[str, Any]:
        return refs[(model, mode)]

    if op.out is None:
        ok: dict[str, Any] = {"description": "Done"}
    elif op.out == SSE:
        ok = {"description": "The answer as server-sent events: start, token..., then done, error or "
                             "interrupted", "content": _event_stream(ref(StreamEvent))}
    elif op.out == "export":
        ok = {"description": "An attachment: Markdown (format=md) or the JSON export (format=json)",
              "content": {MARKDOWN: {"schema": {"type": "string"}}, **_json(ref(s.ExportDocument, "validation"))}}
    elif op.out == "json":
        ok = {"description": "A JSON document", "content": _json({"type": "object"})}
    else:
        ok = {"description": op.out.__doc__.strip().splitlines()[0] if op.out.__doc__ else op.out.__name__,
              "content": _json(ref(op.out))}
    if op.links:
        ok["links"] = {name: {"operationId": target, "parameters": {"id": expression}}
                       for name, (target, expression) in op.links.items()}
    statuses = set(op.errors) | {401, 421}  # 401 even on a public route: a bad token is never ignored
    if op.method != "get":
        statuses |= {403}  # CSRF
    if op.body is not None:
        statuses |= {400, 413, 422}
    if op.query is not None:
        statuses |= {422}
    error = {"application/json": {"schema": ref(Error)}}
    responses = {str(op.status): ok} | {str(code): {"description": ERRORS[code], "content": error}
                                        for code in sorted(statuses)}
    if op.empty is not None:
        responses[str(op.empty[0])] = {"description": op.empty[1]}
    result: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary,
                              "tags": ["accounts" if "/threads" not in op.path and op.path != "/api/import"
                                       else "conversations"],
                              "responses": responses}
    if op.description:
        result["description"] = op.description
    if params := _parameters(op):
        result["parameters"] = params
    if op.body is not None:
        result["requestBody"] = {"required": True, "content": _json(ref(op.body, "validation"))}
    if op.auth != "required":
        result["security"] = [] if op.auth == "none" else [{}, {"token": []}, {"session": []}]
    return result


@functools.cache
def document() -> dict[str, Any]:
    refs, defs = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "pinchat", "version": "1",
                 "description": "Every error is `{\"error\": {\"code\", \"message\"}}`. Strings must be valid "
                                "Unicode (no lone surrogates); ids are integers in 1..2**63-1. A cookie-"
                                "authenticated change needs `Content-Type: application/json` and a same-site "
                                "`Origin`; an API token (`Authorization: Bearer pc_...`) needs neither."},
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer", "description": "a personal API token, `pc_...`"},
                "session": {"type": "apiKey", "in": "cookie", "name": "pinchat_session",
                            "description": "the session cookie set by POST /api/auth/login"},
            },
        },
        "security": [{"token": []}, {"session": []}],
    }


async def openapi_handler(request: web.Request) -> web.Response:
    """GET /api/openapi.json (public)."""
    return web.json_response(document())


def undocumented(app: web.Application) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(routes of the app missing from the table, operations of the table the app lacks), as (METHOD, path)."""
    served = {(route.method, route.resource.canonical) for route in app.router.routes()
              if route.resource is not None and route.resource.canonical.startswith("/api/")
              and route.method not in ("HEAD", "OPTIONS")}
    table = {(op.method.upper(), op.path) for op in OPERATIONS}
    return served - table, table - served
