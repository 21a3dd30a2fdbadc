"""The `openai_compatible/` route (server/openai_compatible.py) through the app, LiteLLM's Router and the scripted
upstream: what it sends, and what it does with what OpenAI-compatible servers answer. Fallbacks, usage, finish
reason and cancellation on every route are in tests/test_routes.py; every other server test runs on this route
(tests/conftest.py's default)."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import yaml

from tests.conftest import write_models_file
from tests.fake_upstream import Script
from tests.test_chat_stream import answer_row, kinds
from tests.test_sse_coalescing import TOKENS, BurstyLink


def text_of(events: list[dict]) -> str:
    return "".join(e["text"] for e in events if e["type"] == "token")


async def test_the_request_names_the_deployment_model_with_its_key_and_asks_for_usage(app, fake):
    thread = await app.new_thread()

    events = await app.chat(thread["id"], "hello")

    assert kinds(events) == ["start", "token", "done"]
    request = fake.records[0]
    assert request.body["model"] == "fake-model"  # the deployment's name after the route's prefix
    assert request.body["messages"][-1] == {"role": "user", "content": "hello"}
    assert (request.body["stream"], request.body["stream_options"]) == (True, {"include_usage": True})
    assert request.headers["Authorization"] == "Bearer sk-fake"
    assert "max_retries" not in request.body  # the Router's own setting is not sent upstream


async def test_a_server_that_sends_no_usage_still_ends_with_its_finish_reason_and_a_count(app, fake):
    fake.push(Script(tokens=["no ", "usage ", "here"], finish_reason="length", send_usage=False))
    thread = await app.new_thread()

    events = await app.chat(thread["id"], "hello")

    assert kinds(events) == ["start", "token", "done"]
    assert text_of(events) == "no usage here"
    assert events[-1]["finish_reason"] == "length"
    assert events[-1]["usage"]["completion_tokens"] == 3  # LiteLLM counts what the server did not say
    row = answer_row(app, events[0]["message_id"])
    assert (row["status"], row["content"], row["finish_reason"]) == ("complete", "no usage here", "length")


async def test_an_error_event_before_the_first_token_falls_back(tmp_path, make_app, settings, fake, backup):
    app = await make_app(settings, models=write_models_file(tmp_path / "models.yaml", fake, backup))
    fake.push(Script(error_after=0))
    backup.push(Script(tokens=["from ", "the ", "backup"]))
    thread = await app.new_thread()

    events = await app.chat(thread["id"], "hello")

    assert kinds(events) == ["start", "token", "done"]
    assert text_of(events) == "from the backup"
    assert [r.outcome for r in fake.records] == ["failed"]
    assert [r.outcome for r in backup.records] == ["completed"]


async def test_an_error_event_after_tokens_ends_the_answer_with_its_text_kept(app, fake):
    fake.push(Script(tokens=["kept ", "text ", "lost"], error_after=2))
    thread = await app.new_thread()

    events = await app.chat(thread["id"], "hello")

    assert kinds(events) == ["start", "token", "error"]
    assert text_of(events) == "kept text "
    assert events[-1]["code"] == "provider_error"  # the event's 503: LiteLLM's ServiceUnavailableError
    row = answer_row(app, events[0]["message_id"])
    assert (row["status"], row["content"]) == ("error", "kept text ")


async def test_a_server_that_is_not_there_is_provider_unreachable(tmp_path, make_app, settings):
    with socket.socket() as closed:  # a port that was free a moment ago: nothing listens there
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    models = tmp_path / "gone.yaml"
    models.write_text(yaml.safe_dump({"model_list": [{"model_name": "chat", "litellm_params": {
        "model": "openai_compatible/gone", "api_base": f"http://127.0.0.1:{port}/v1"}}],
        "router_settings": {"num_retries": 0}}))
    app = await make_app(settings, models=models)
    thread = await app.new_thread()

    events = await app.chat(thread["id"], "hello")

    assert kinds(events) == ["start", "error"]
    assert events[-1]["code"] == "provider_unreachable"


async def test_a_silent_server_times_out_after_the_deployments_timeout(tmp_path, make_app, settings, fake):
    models = tmp_path / "slow.yaml"
    models.write_text(yaml.safe_dump({"model_list": [{"model_name": "chat", "litellm_params": {
        "model": "openai_compatible/slow", "api_base": fake.url, "timeout": 0.5}}],
        "router_settings": {"num_retries": 0}}))
    app = await make_app(settings, models=models)
    fake.push(Script(tokens=["too ", "late"], first_delay=3))
    thread = await app.new_thread()

    events = await app.chat(thread["id"], "hello")

    assert kinds(events) == ["start", "error"]
    assert events[-1]["code"] == "provider_timeout"
    assert "Authorization" not in fake.records[0].headers  # no api_key in the deployment: none sent


async def test_the_tokens_of_one_read_are_one_event_with_every_character_in_order(tmp_path, make_app, settings,
                                                                                   fake):
    """Under load the loop reads the upstream late and one read brings several tokens: they become one event, so
    LiteLLM's per-chunk work (and ours) is paid once for them. Here a link delivers the upstream's bytes in 50 ms
    bursts."""
    link = await BurstyLink(fake, window=0.05).start()
    try:
        models = write_models_file(tmp_path / "bursty.yaml", link)  # type: ignore[arg-type]
        app = await make_app(settings, models=models)
        fake.push(Script(tokens=TOKENS, delay=0.005))
        thread = await app.new_thread()

        events = await app.chat(thread["id"], "go")
    finally:
        await link.close()

    tokens = [e for e in events if e["type"] == "token"]
    assert [e["type"] for e in events] == ["start"] + ["token"] * len(tokens) + ["done"]
    assert text_of(events) == "".join(TOKENS)  # exact, in order
    assert len(tokens) < len(TOKENS) / 4  # ~0.4 s of tokens in 50 ms bursts: a handful of events
    assert [e["id"] for e in events] == [f"{events[0]['message_id']}.{n}" for n in range(1, len(events) + 1)]
    assert events[-1]["usage"]["completion_tokens"] == len(TOKENS)  # the upstream's count, not the events'
    row = answer_row(app, events[0]["message_id"])
    assert (row["status"], row["content"]) == ("complete", "".join(TOKENS))


async def stream_raw(aiohttp_server, pieces: list[bytes], status: int = 200, chunks: list | None = None,
                     content_type: str = "text/event-stream") -> list[dict]:
    """What the route yields (LiteLLM's GenericStreamingChunk dicts) for an upstream that writes `pieces` of its
    body one by one, 20 ms apart, so that events and lines are cut where a network may cut them."""
    from aiohttp import web

    from server.openai_compatible import OpenAICompatible, close

    async def completions(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=status, headers={"Content-Type": content_type})
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
            await asyncio.sleep(0.02)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    server = await aiohttp_server(app)
    chunks = [] if chunks is None else chunks
    try:
        async for chunk in OpenAICompatible().astreaming(
                model="m", messages=[{"role": "user", "content": "hi"}], api_base=str(server.make_url("/v1")),
                custom_prompt_dict={}, model_response=None, print_verbose=None, encoding=None, api_key=None,
                logging_obj=None, optional_params={}):
            chunks.append(chunk)
    finally:
        await close()  # this test loop's connection pool
    return chunks


def event(text: str | None = None, finish: str | None = None, usage: dict | None = None) -> dict:
    choices = [] if usage and not finish and text is None else [
        {"index": 0, "delta": {"content": text} if text is not None else {}, "finish_reason": finish}]
    return {"choices": choices, **({"usage": usage} if usage else {})}


async def test_the_reader_takes_crlf_comments_and_events_cut_anywhere(aiohttp_server):
    body = (b": keep-alive\r\n\r\n"
            + b"".join(b"data: " + json.dumps(event(t)).encode() + b"\r\n\r\n" for t in ["caf\u00e9", " ok"])
            + b"event: message\ndata:" + json.dumps(event(None, "stop")).encode() + b"\n\n"
            + b"data: " + json.dumps(event(usage={"prompt_tokens": 1, "completion_tokens": 2,
                                                    "total_tokens": 3})).encode() + b"\n\n"
            + b"data: [DONE]\n\n")
    cut = [body[i:i + 7] for i in range(0, len(body), 7)]  # lines and UTF-8 characters split across reads

    chunks = await stream_raw(aiohttp_server, cut)

    assert "".join(c["text"] for c in chunks) == "caf\u00e9 ok"
    assert (chunks[-1]["text"], chunks[-1]["finish_reason"], chunks[-1]["is_finished"]) == ("", "stop", True)
    assert chunks[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


async def test_the_reader_refuses_a_stream_that_ends_without_a_finish_reason(aiohttp_server):
    import litellm

    body = b"data: " + json.dumps(event("half")).encode() + b"\n\n"
    with pytest.raises(litellm.APIConnectionError, match="ended before its finish reason"):
        await stream_raw(aiohttp_server, [body])


async def test_the_reader_maps_an_error_answer_by_its_status(aiohttp_server):
    from server.openai_compatible import UpstreamError

    with pytest.raises(UpstreamError) as error:
        await stream_raw(aiohttp_server, [json.dumps({"error": {"message": "slow down"}}).encode()], status=429)
    assert (error.value.status_code, error.value.message) == (429, "slow down")


CONTEXT_MESSAGE = "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens."


async def test_a_conversation_too_long_for_the_model_is_a_context_window_error(aiohttp_server):
    """LiteLLM applies its message check to its own routes' errors only: vLLM's and OpenAI's 400, and llama.cpp's
    `error:` line after some tokens, must still reach the app as ContextWindowExceededError (`context_too_long`,
    and the Router's context-window fallbacks), not as a request the Router retries."""
    import litellm

    with pytest.raises(litellm.ContextWindowExceededError):
        await stream_raw(aiohttp_server, [json.dumps({"error": {
            "message": CONTEXT_MESSAGE, "type": "invalid_request_error", "code": "context_length_exceeded"}}).encode()],
            status=400)
    chunks: list[dict] = []
    with pytest.raises(litellm.ContextWindowExceededError):
        await stream_raw(aiohttp_server, [
            b"data: " + json.dumps(event("so far")).encode() + b"\n\n",
            b'error: {"code": 500, "message": "Context size has been exceeded.",'
            b' "type": "exceed_context_size_error"}\n\n',
            b"data: [DONE]\n\n"], chunks=chunks)
    assert [c["text"] for c in chunks] == ["so far"]  # the text before it was given on


async def test_a_json_error_in_place_of_the_stream_is_raised_with_its_code(aiohttp_server):
    from server.openai_compatible import UpstreamError

    with pytest.raises(UpstreamError) as error:
        body = json.dumps({"error": {"message": "upstream overloaded", "code": 503}}).encode()
        await stream_raw(aiohttp_server, [body], content_type="application/json")
    assert (error.value.status_code, error.value.message) == (503, "upstream overloaded")


async def test_a_connection_lost_after_the_finish_reason_keeps_the_whole_answer(aiohttp_server):
    """The answer and its finish reason arrived; only the body's end (`[DONE]`, the chunked terminator) is lost."""
    from aiohttp import web

    from server.openai_compatible import OpenAICompatible, close

    async def completions(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: " + json.dumps(event("whole")).encode() + b"\n\n"
                             + b"data: " + json.dumps(event(None, "stop")).encode() + b"\n\n")
        await asyncio.sleep(0.05)
        request.transport.abort()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    server = await aiohttp_server(app)
    try:
        chunks = [c async for c in OpenAICompatible().astreaming(
            model="m", messages=[], api_base=str(server.make_url("/v1")), custom_prompt_dict={}, model_response=None,
            print_verbose=None, encoding=None, api_key=None, logging_obj=None, optional_params={})]
    finally:
        await close()
    assert [(c["text"], c["finish_reason"]) for c in chunks] == [("whole", ""), ("", "stop")]


async def test_a_429s_retry_after_keeps_the_deployment_cooled_down_that_long(aiohttp_server):
    """Two deployments in the group; one answers 429 with `Retry-After: 30`. The Router's own cooldown is 0.5 s, but
    the header's 30 s must win (LiteLLM reads it off the exception), so after a second no request reaches it."""
    import litellm
    from aiohttp import web

    from server import provider
    from server.openai_compatible import close

    hits = {"limited": 0, "free": 0}

    async def limited(request: web.Request) -> web.Response:
        hits["limited"] += 1
        return web.json_response({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "30"})

    async def free(request: web.Request) -> web.StreamResponse:
        hits["free"] += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: " + json.dumps(event("ok", "stop")).encode() + b"\n\ndata: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/limited/chat/completions", limited)
    app.router.add_post("/free/chat/completions", free)
    server = await aiohttp_server(app)
    provider.configure_litellm()
    router = litellm.Router(model_list=[{"model_name": "chat", "litellm_params": {
        "model": "openai_compatible/m", "api_base": str(server.make_url(f"/{name}"))}} for name in hits],
        num_retries=0, cooldown_time=0.5, allowed_fails=0)

    async def ask() -> None:
        try:
            async with provider.chat_stream(router, [{"role": "user", "content": "hi"}]) as deltas:
                async for _ in deltas:
                    pass
        except litellm.RateLimitError:
            pass

    try:
        while hits["limited"] == 0:
            await ask()
        await asyncio.sleep(1.0)  # past the Router's 0.5 s, well within the header's 30 s
        for _ in range(12):
            await ask()
    finally:
        await close()
    assert hits["limited"] == 1 and hits["free"] >= 12
