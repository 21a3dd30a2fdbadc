"""The HTTP API: JSON in and out, routes only; the work lives in db / context / generation / sse."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import export
from .db import Database
from .errors import ApiError
from .schemas import (MAX_PIN_DEPTH, Chat, CreateThread, ExportDocument, ExportQuery, FollowQuery, Merge,
                      one_line_title, parse_body, parse_query)
from .schemas import path_id as parse_id
from .auth import CREDENTIAL, OPEN_STREAMS, USER
from .keys import DB, IMPORTS, PACER, REGISTRY, SETTINGS, TURNS, UTILITY
from .timestamps import ago
from .generation import Generation, ThreadBusy
from .sse import stream_generation
from .tree import load_tree
from .turn import Turns
from .utility import pin_suggestions

routes = web.RouteTableDef()



def path_id(request: web.Request, missing: str = "thread_not_found") -> int:
    value = parse_id(request.match_info["id"])
    if value is None:
        raise ApiError(404, missing, "No such thread." if missing == "thread_not_found" else "Not found.")
    return value


def user_id(request: web.Request) -> int:
    return request[USER]["id"]


async def load_thread(request: web.Request) -> dict[str, Any]:
    """The thread named in the path, if the requesting user owns it: another user's thread is a 404 like a missing
    one, so that ids tell nothing."""
    thread = await request.app[DB].get_thread(path_id(request), user_id(request))
    if thread is None:
        raise ApiError(404, "thread_not_found", "No such thread.")
    return with_state(request, thread)


def with_state(request: web.Request, thread: dict[str, Any]) -> dict[str, Any]:
    """The public form of a thread: live streaming flag, a pin's starter questions, no bookkeeping fields."""
    public = {k: v for k, v in thread.items()
              if k not in ("generated_suggestions", "summary_upto", "title_source", "user_id")}
    public["streaming"] = request.app[REGISTRY].get(thread["id"]) is not None
    if thread["anchor"] is not None:
        public["suggestions"] = pin_suggestions(thread)
    return public


async def validate_anchor(db: Database, parent_id: int, anchor: dict[str, int]) -> dict[str, Any]:
    """The anchor's shape is checked by schemas.AnchorIn; here, that it lies on an answer of the parent."""
    message_id, start, end = anchor["message_id"], anchor["start"], anchor["end"]
    message = await db.get_message(message_id)
    if message is None or message["thread_id"] != parent_id or message["role"] != "assistant":
        raise ApiError(422, "invalid_anchor", "The anchor must point at an assistant message of the parent thread.")
    if not 0 <= start < end <= len(message["content"]):
        raise ApiError(422, "invalid_anchor",
                       f"The anchor [{start}, {end}) must lie inside the message (0..{len(message['content'])}).")
    return {"message_id": message_id, "start": start, "end": end, "text": message["content"][start:end]}


async def finished(generation: Generation) -> None:
    # asyncio.wait, unlike gather, does not cancel the task if this request is cancelled.
    if generation.task is not None:
        await asyncio.wait({generation.task})


@routes.get("/api/health")
async def handle_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "active_streams": len(request.app[REGISTRY].active)})


@routes.post("/api/threads")
async def handle_create_thread(request: web.Request) -> web.Response:
    db = request.app[DB]
    body = await parse_body(request, CreateThread)  # 400 / 422 invalid_field, invalid_pin, invalid_anchor
    title, parent_id = body.title, body.parent_id
    anchor = body.anchor.model_dump() if body.anchor else None
    if parent_id is not None:
        if await db.get_thread(parent_id, user_id(request)) is None:
            raise ApiError(422, "invalid_pin", "`parent_id` is not an existing thread.")
        if await db.thread_depth(parent_id) >= MAX_PIN_DEPTH:
            raise ApiError(422, "invalid_pin", f"Pins nest at most {MAX_PIN_DEPTH} levels deep (a pin of a pin of …) "
                                               "and `parent_id` is a pin at the last level; pin a passage higher up.")
        anchor = await validate_anchor(db, parent_id, anchor)
    thread = await db.create_thread(user_id(request), title or None, parent_id, anchor)
    if anchor is not None:
        request.app[UTILITY].after_pin_created(thread)
    return web.json_response(with_state(request, thread), status=201)


@routes.get("/api/threads")
async def handle_list_threads(request: web.Request) -> web.Response:
    threads = await request.app[DB].list_threads(user_id(request))
    return web.json_response({"threads": [with_state(request, t) for t in threads]})


@routes.get("/api/threads/{id}")
async def handle_get_thread(request: web.Request) -> web.Response:
    db = request.app[DB]
    thread = await load_thread(request)
    messages = await db.messages(thread["id"])
    live = request.app[REGISTRY].get(thread["id"])
    snapshot_event = None
    for message in messages:  # a streaming answer shows its text up to now, not its last flush
        if live is not None and message["id"] == live.message_id:
            message["content"] = live.text
            snapshot_event = live.event_id(len(live.events))  # follow the stream after this one: nothing twice
    pins = [with_state(request, p) for p in await db.list_pins(thread["id"])]
    return web.json_response({**thread, "messages": messages, "pins": pins, "stream_event_id": snapshot_event})


# allow_head=False: a HEAD would get the stream's frames after its headers (they are written to the socket, not
# through aiohttp's body), which corrupts a kept-alive connection such as nginx's to the app: 405 instead.
@routes.get("/api/threads/{id}/stream", allow_head=False)
async def handle_follow(request: web.Request) -> web.StreamResponse:
    """Follow the thread's running answer (a reload, a second tab, a dropped connection): replay the events after
    `Last-Event-ID` (header, or `?after=`), then live. 204 when nothing is running (EventSource stops retrying)."""
    limit = FOLLOWS_PER_ANSWER * request.app[SETTINGS].max_streams_per_user
    if request.app[OPEN_STREAMS].count(request[USER]["id"]) >= limit:
        raise ApiError(429, "too_many_streams", f"You already have {limit} streams open on this server; close "
                                                "some tabs or wait.", {"Retry-After": "5"})
    thread = await load_thread(request)
    generation = request.app[REGISTRY].get(thread["id"])
    if generation is None or generation.message_id is None:
        return web.Response(status=204)
    try:
        after = generation.resume_point(request.headers.get("Last-Event-ID") or parse_query(request, FollowQuery).after)
    except ValueError:
        raise ApiError(400, "invalid_event_id", "Last-Event-ID must be an event id of this stream "
                                                "(`<message id>.<n>`).") from None
    request.app[OPEN_STREAMS].track(request)
    return await stream_generation(request, generation, request.app[SETTINGS].heartbeat, after)


# Open streams (answers and their followers) a user may hold in a process, per answer they may run: a few tabs
# following every answer, not the thousands of idle followers a script could open.
FOLLOWS_PER_ANSWER = 4


@routes.delete("/api/threads/{id}")
async def handle_delete_thread(request: web.Request) -> web.Response:
    db, registry = request.app[DB], request.app[REGISTRY]
    thread = await load_thread(request)
    for thread_id in await db.subtree_ids(thread["id"]):
        if (generation := registry.get(thread_id)) is not None:
            generation.stop("deleted")
            await finished(generation)
    await db.delete_thread(thread["id"])
    return web.Response(status=204)


@routes.post("/api/threads/{id}/chat")
async def handle_chat(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    thread = await load_thread(request)
    message = (await parse_body(request, Chat)).message  # 422 invalid_message
    if len(message) > settings.max_message_chars:
        raise ApiError(413, "message_too_long",
                       f"`message` has {len(message)} characters; the limit is {settings.max_message_chars}.")
    return await stream_answer(request, thread, lambda turns: turns.chat(thread, message))


async def stream_answer(request: web.Request, thread: dict[str, Any],
                        start: Callable[[Turns], Awaitable[Generation]]) -> web.StreamResponse:
    """Start a turn (409 if the thread is busy) and stream its answer as this response."""
    pacer = request.app[PACER]
    admit(request, queued=pacer.waiting)  # a full house says so at once, not after its turn in the line
    await pacer.turn()  # while the loop is behind, the running answers' tokens go first
    await check_limits(request)
    admit(request)
    try:
        generation = await start(request.app[TURNS])
    except ThreadBusy:
        raise ApiError(409, "thread_busy", "This thread is already answering; stop it or wait.") from None
    generation.started_by = request[CREDENTIAL]  # ending the session stops the answer
    request.app[OPEN_STREAMS].track(request)  # and ends this stream
    return await stream_generation(request, generation, request.app[SETTINGS].heartbeat)


def admit(request: web.Request, queued: int = 0) -> None:
    """Admission: past --max-generations answers (and starts waiting for their turn), a 503 keeps the running ones
    fast."""
    limit = request.app[SETTINGS].max_generations
    if len(request.app[REGISTRY].active) + queued >= limit:
        raise ApiError(503, "server_busy", f"The server is writing {limit} answers already; "
                                           "try again in a few seconds.", {"Retry-After": "5"})


async def check_limits(request: web.Request) -> None:
    """Per-user limits that a person never meets but a runaway script does: answers at once and per minute."""
    settings = request.app[SETTINGS]
    live, recent = await request.app[DB].answer_counts(user_id(request), ago(60))
    if live >= settings.max_streams_per_user:
        raise ApiError(429, "too_many_streams",
                       f"You already have {live} answers streaming (the limit is {settings.max_streams_per_user}); "
                       "stop one or wait.", {"Retry-After": "5"})
    if recent >= settings.chats_per_minute:
        raise ApiError(429, "rate_limited",
                       f"You started {recent} answers in the last minute (the limit is {settings.chats_per_minute}); "
                       "wait a moment.", {"Retry-After": "60"})


@routes.post("/api/threads/{id}/cancel")
async def handle_cancel(request: web.Request) -> web.Response:
    thread = await load_thread(request)
    generation = request.app[REGISTRY].get(thread["id"])
    if generation is None:
        return web.json_response({"cancelled": False})
    generation.stop("cancelled")
    await finished(generation)  # the answer is saved when we reply
    return web.json_response({"cancelled": True})


@routes.post("/api/threads/{id}/merge")
async def handle_merge(request: web.Request) -> web.StreamResponse:
    db = request.app[DB]
    thread = await load_thread(request)
    body = await parse_body(request, Merge)  # 422 invalid_format, invalid_instruction, invalid_threads
    fmt, instruction, chosen = body.format, body.instruction, body.threads
    tree = await load_tree(db, thread["id"])
    foreign = sorted(set(chosen) - {node.thread["id"] for node in tree.nodes()})
    if foreign:
        raise ApiError(422, "foreign_threads", f"Not in this conversation's tree: {foreign}.")
    return await stream_answer(request, thread, lambda turns: turns.merge(thread, tree, chosen, fmt, instruction))


@routes.get("/api/threads/{id}/export")
async def handle_export(request: web.Request) -> web.Response:
    thread = await load_thread(request)
    fmt = parse_query(request, ExportQuery).format  # 422 invalid_format
    tree = await load_tree(request.app[DB], thread["id"])
    for node in tree.nodes():
        node.thread["title"] = one_line_title(node.thread["title"])
    headers = {"Content-Disposition": export.attachment(one_line_title(thread["title"]), thread["id"], fmt)}
    if fmt == "json":
        return web.json_response(export.to_json(tree), headers=headers)
    return web.Response(text=export.to_markdown(tree), content_type="text/markdown", headers=headers)


# An export grows with the conversation (a few KB per answer); every other body stays under --max-body-bytes.
IMPORT_MAX_BYTES = 32 * 1024 * 1024


# Parsing an import and holding its objects takes many times its bytes (26 MB imports sent in parallel by one user
# took this process to ~700 MB): a process reads and imports IMPORTS_AT_ONCE at a time. Another waits for its turn
# up to IMPORT_WAIT seconds (then 503), and a body must have come within IMPORT_READ_SECONDS of its turn (then 408),
# so that a stalled upload cannot keep the turn.
IMPORTS_AT_ONCE = 2
IMPORT_WAIT = 30.0
IMPORT_READ_SECONDS = 60.0


@routes.post("/api/import")
async def handle_import(request: web.Request) -> web.Response:
    turns = request.app[IMPORTS]
    try:
        async with asyncio.timeout(IMPORT_WAIT):
            await turns.acquire()
    except TimeoutError:
        raise ApiError(503, "import_busy", "Other imports are running on this server; try again in a minute.",
                       {"Retry-After": "60"}) from None
    try:
        request = request.clone(client_max_size=IMPORT_MAX_BYTES)
        try:
            async with asyncio.timeout(IMPORT_READ_SECONDS):
                await request.read()  # 413 past IMPORT_MAX_BYTES; parse_body reads these bytes again
        except TimeoutError:
            raise ApiError(408, "import_too_slow", f"The import did not arrive within {IMPORT_READ_SECONDS:g} "
                           "seconds; try again on a faster connection.") from None
        document = await parse_body(request, ExportDocument)  # 422 invalid_export, invalid_anchor, invalid_pin
        root_id = await export.import_tree(request.app[DB], user_id(request), document.model_dump())
    finally:
        turns.release()
    thread = await request.app[DB].get_thread(root_id)
    return web.json_response(with_state(request, thread), status=201)
