"""The HTTP API: JSON in and out, routes only; the work lives in db / context / generation / sse."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import export, merge
from .config import Settings
from .context import Budget, build_context
from .db import Database
from .errors import ApiError
from .generation import Generation, Registry, Source, ThreadBusy, chat_source
from .sse import stream_generation
from .tree import load_tree
from .utility import Utility, fallback_title, pin_suggestions

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", Database)
REGISTRY = web.AppKey("registry", Registry)
UTILITY = web.AppKey("utility", Utility)
BUDGET = web.AppKey("budget", Budget)

MAX_TITLE_CHARS = 200

routes = web.RouteTableDef()


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.")
    return body


def path_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise ApiError(404, "thread_not_found", "No such thread.") from None


async def load_thread(request: web.Request) -> dict[str, Any]:
    thread = await request.app[DB].get_thread(path_id(request))
    if thread is None:
        raise ApiError(404, "thread_not_found", "No such thread.")
    return with_state(request, thread)


def with_state(request: web.Request, thread: dict[str, Any]) -> dict[str, Any]:
    """The public form of a thread: live streaming flag, a pin's starter questions, no bookkeeping fields."""
    public = {k: v for k, v in thread.items() if k not in ("generated_suggestions", "summary_upto", "title_source")}
    public["streaming"] = request.app[REGISTRY].get(thread["id"]) is not None
    if thread["anchor"] is not None:
        public["suggestions"] = pin_suggestions(thread)
    return public


def optional_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ApiError(422, "invalid_field", f"`{key}` must be an integer.")
    return value


async def validate_anchor(db: Database, parent_id: int, anchor: Any) -> dict[str, Any]:
    if not isinstance(anchor, dict):
        raise ApiError(422, "invalid_anchor", "`anchor` must be an object {message_id, start, end}.")
    message_id, start, end = (optional_int(anchor, k) for k in ("message_id", "start", "end"))
    if None in (message_id, start, end):
        raise ApiError(422, "invalid_anchor", "`anchor` needs integer message_id, start and end.")
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
async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "active_streams": len(request.app[REGISTRY].active)})


@routes.post("/api/threads")
async def create_thread(request: web.Request) -> web.Response:
    db = request.app[DB]
    body = await read_json(request)
    title = body.get("title")
    if title is not None and (not isinstance(title, str) or len(title) > MAX_TITLE_CHARS):
        raise ApiError(422, "invalid_field", f"`title` must be a string of at most {MAX_TITLE_CHARS} characters.")
    parent_id = optional_int(body, "parent_id")
    anchor = body.get("anchor")
    if (parent_id is None) != (anchor is None):
        raise ApiError(422, "invalid_pin", "A pin needs both `parent_id` and `anchor`.")
    if parent_id is not None:
        if await db.get_thread(parent_id) is None:
            raise ApiError(422, "invalid_pin", "`parent_id` is not an existing thread.")
        anchor = await validate_anchor(db, parent_id, anchor)
    thread = await db.create_thread(title.strip() if title else None, parent_id, anchor)
    if anchor is not None:
        request.app[UTILITY].after_pin_created(thread)
    return web.json_response(with_state(request, thread), status=201)


@routes.get("/api/threads")
async def list_threads(request: web.Request) -> web.Response:
    threads = await request.app[DB].list_threads()
    return web.json_response({"threads": [with_state(request, t) for t in threads]})


@routes.get("/api/threads/{id}")
async def get_thread(request: web.Request) -> web.Response:
    db = request.app[DB]
    thread = await load_thread(request)
    messages = await db.messages(thread["id"])
    live = request.app[REGISTRY].get(thread["id"])
    for message in messages:  # a streaming answer shows its text up to now, not its last flush
        if live is not None and message["id"] == live.message_id:
            message["content"] = live.text
    pins = [with_state(request, p) for p in await db.list_pins(thread["id"])]
    return web.json_response({**thread, "messages": messages, "pins": pins})


@routes.delete("/api/threads/{id}")
async def delete_thread(request: web.Request) -> web.Response:
    db, registry = request.app[DB], request.app[REGISTRY]
    thread = await load_thread(request)
    for thread_id in await db.subtree_ids(thread["id"]):
        if (generation := registry.get(thread_id)) is not None:
            generation.stop("deleted")
            await finished(generation)
    await db.delete_thread(thread["id"])
    return web.Response(status=204)


@routes.post("/api/threads/{id}/chat")
async def chat(request: web.Request) -> web.StreamResponse:
    settings, db, registry = request.app[SETTINGS], request.app[DB], request.app[REGISTRY]
    thread = await load_thread(request)
    body = await read_json(request)
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        raise ApiError(422, "invalid_message", "`message` must be a non-empty string.")
    if len(message) > settings.max_message_chars:
        raise ApiError(413, "message_too_long",
                       f"`message` has {len(message)} characters; the limit is {settings.max_message_chars}.")
    async def start(generation: Generation) -> None:
        if thread["title"] is None:  # stands until (unless) the model gives a better one
            await db.set_title(thread["id"], fallback_title(message), "first_message", unless=("user", "model"))
        messages = await build_context(db, thread, message, request.app[BUDGET])
        await generation.begin(message, chat_source(registry.router, messages))

    return await run_generation(request, thread["id"], start)


async def run_generation(request: web.Request, thread_id: int,
                         start: Callable[[Generation], Awaitable[None]]) -> web.StreamResponse:
    """Reserve the thread (409 if busy), start the generation, and stream it as this response."""
    registry = request.app[REGISTRY]
    try:
        generation = registry.reserve(thread_id)
    except ThreadBusy:
        raise ApiError(409, "thread_busy", "This thread is already answering; stop it or wait.") from None
    try:
        await start(generation)
    except BaseException:
        registry.finished(generation)
        raise
    return await stream_generation(request, generation, request.app[SETTINGS].heartbeat)


@routes.post("/api/threads/{id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    thread = await load_thread(request)
    generation = request.app[REGISTRY].get(thread["id"])
    if generation is None:
        return web.json_response({"cancelled": False})
    generation.stop("cancelled")
    await finished(generation)  # the answer is saved when we reply
    return web.json_response({"cancelled": True})


@routes.post("/api/threads/{id}/merge")
async def merge_threads(request: web.Request) -> web.StreamResponse:
    db = request.app[DB]
    thread = await load_thread(request)
    body = await read_json(request)
    fmt = body.get("format")
    if fmt not in merge.FORMATS:
        raise ApiError(422, "invalid_format", f"`format` must be one of: {', '.join(merge.FORMATS)}.")
    instruction = body.get("instruction")
    if fmt == "custom" and (not isinstance(instruction, str) or not instruction.strip()):
        raise ApiError(422, "invalid_instruction", "The custom format needs an `instruction`.")
    if instruction is not None and (not isinstance(instruction, str) or len(instruction) > merge.MAX_INSTRUCTION_CHARS):
        raise ApiError(422, "invalid_instruction",
                       f"`instruction` must be a string of at most {merge.MAX_INSTRUCTION_CHARS} characters.")
    chosen = body.get("threads")
    if (not isinstance(chosen, list) or not chosen
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in chosen)):
        raise ApiError(422, "invalid_threads", "`threads` must be a non-empty list of thread ids.")
    tree = await load_tree(db, thread["id"])
    foreign = sorted(set(chosen) - {node.thread["id"] for node in tree.nodes()})
    if foreign:
        raise ApiError(422, "foreign_threads", f"Not in this conversation's tree: {foreign}.")
    text = merge.transcript(tree, set(chosen))

    async def start(generation: Generation) -> None:
        if fmt == "transcript":  # no model: the text is already here
            source: Source = functools.partial(merge.verbatim, text)
        else:
            messages = merge.merge_messages(text, fmt, instruction)
            budget = request.app[BUDGET]  # a large tree is cut to what the model can read
            messages[-1] = budget.truncate(messages[-1], budget.tokens - budget.size(messages[:-1]))
            source = chat_source(request.app[REGISTRY].router, messages)
        await generation.begin(None, source, kind="merge", merged_ids=sorted(set(chosen)))

    return await run_generation(request, thread["id"], start)


@routes.get("/api/threads/{id}/export")
async def export_thread(request: web.Request) -> web.Response:
    thread = await load_thread(request)
    fmt = request.query.get("format", "md")
    if fmt not in ("md", "json"):
        raise ApiError(422, "invalid_format", "`format` must be md or json.")
    tree = await load_tree(request.app[DB], thread["id"])
    name = f"conversation-{thread['id']}.{fmt}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if fmt == "json":
        return web.json_response(export.to_json(tree), headers=headers)
    return web.Response(text=export.to_markdown(tree), content_type="text/markdown", headers=headers)


@routes.post("/api/import")
async def import_thread(request: web.Request) -> web.Response:
    document = await read_json(request)
    try:
        root_id = await export.import_tree(request.app[DB], document)
    except export.InvalidExport as exc:
        raise ApiError(422, "invalid_export", str(exc)) from None
    thread = await request.app[DB].get_thread(root_id)
    return web.json_response(with_state(request, thread), status=201)
