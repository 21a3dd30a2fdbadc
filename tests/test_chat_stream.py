"""The streaming core end to end: real app, real LiteLLM Router, scripted fake upstream, real SQLite file."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from httpx_sse import aconnect_sse

from tests.conftest import write_models_file
from tests.fake_upstream import Script


def kinds(events: list[dict]) -> list[str]:
    """The event types, a run of token frames counted once: when the loop comes late to a writer, the pending
    tokens go out as one frame (server/sse.py), so how many frames a burst of tokens takes is not fixed."""
    types = [e["type"] for e in events]
    return [t for i, t in enumerate(types) if not (t == "token" and i and types[i - 1] == "token")]


def answer_row(app, message_id: int):
    (row,) = app.rows("SELECT * FROM messages WHERE id = ?", message_id)
    return row


async def test_tokens_arrive_in_order_with_exact_text_and_numbered_frames(app, fake):
    tokens = ["Hel", "lo", ",", " wor", "ld", "!"]
    fake.push(Script(tokens=tokens, delay=0.05))  # apart enough for a writer never to be late: a frame per token
    thread = await app.new_thread(title="greeting")

    events = await app.chat(thread["id"], "say hello")

    assert [e["type"] for e in events] == ["start"] + ["token"] * len(tokens) + ["done"]
    assert [e["text"] for e in events if e["type"] == "token"] == tokens
    start, done = events[0], events[-1]
    # numbered per generation, and named by it: `<answer's message id>.<n>`
    assert [e["id"] for e in events] == [f"{start['message_id']}.{n}" for n in range(1, len(events) + 1)]
    assert done["message_id"] == start["message_id"] and done["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] == len(tokens)
    row = answer_row(app, start["message_id"])
    assert (row["content"], row["status"], row["role"]) == ("".join(tokens), "complete", "assistant")
    assert json.loads(row["usage"])["completion_tokens"] == len(tokens)
    (user,) = app.rows("SELECT * FROM messages WHERE id = ?", start["user_message_id"])
    assert (user["content"], user["status"]) == ("say hello", "complete")
    record = await fake.wait_ended()
    assert record.outcome == "completed"
    assert record.body["stream"] is True and record.body["stream_options"] == {"include_usage": True}
    assert record.messages == [{"role": "user", "content": "say hello"}]


async def test_headers_and_raw_framing(app, fake):
    fake.push(Script(tokens=["a", "b"]))
    thread = await app.new_thread()
    resp = await app.post(f"/api/threads/{thread['id']}/chat", {"message": "hi"},
                          headers={"Accept-Encoding": "gzip, br"})
    raw = (await resp.read()).decode()
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Accel-Buffering"] == "no"
    assert "Content-Encoding" not in resp.headers
    frames = raw.split("\n\n")
    assert frames[-1] == ""
    answer_id = json.loads(frames[0].split("data: ", 1)[1])["message_id"]
    # one frame per token; both in one frame carrying the last one's id when the loop came late to the writer; or
    # one event when one read of the upstream brought both (server/openai_compatible.py)
    assert frames[1] in (f'id: {answer_id}.2\ndata: {{"type":"token","text":"a"}}',
                         f'id: {answer_id}.3\ndata: {{"type":"token","text":"ab"}}',
                         f'id: {answer_id}.2\ndata: {{"type":"token","text":"ab"}}')


async def test_multibyte_utf8_tokens_survive(app, fake):
    tokens = ["café ", "中文", "字", " 🙂", "👩‍💻", " 𝄞 ß"]
    fake.push(Script(tokens=tokens))
    thread = await app.new_thread()
    events = await app.chat(thread["id"], "unicode please ✓")
    assert "".join(e["text"] for e in events if e["type"] == "token") == "".join(tokens)
    assert answer_row(app, events[0]["message_id"])["content"] == "".join(tokens)


async def test_history_is_sent_back_to_the_model(app, fake):
    thread = await app.new_thread()
    fake.push(Script(tokens=["first answer"]), Script(tokens=["second answer"]))
    await app.chat(thread["id"], "question one")
    await app.chat(thread["id"], "question two")
    assert fake.records[-1].messages == [
        {"role": "user", "content": "question one"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "question two"},
    ]
    detail = await app.thread(thread["id"])
    assert [(m["role"], m["content"], m["status"]) for m in detail["messages"]] == [
        ("user", "question one", "complete"), ("assistant", "first answer", "complete"),
        ("user", "question two", "complete"), ("assistant", "second answer", "complete"),
    ]


async def read_until_tokens(src, count: int) -> list[dict]:
    """Read events until `count` of the script's tokens have arrived, in however many events and frames (a read of
    the upstream that brings several tokens is one event; a late writer sends several events as one frame): the
    scripts read this way end each token with a space. `src.sse` stays usable to read the rest."""
    if not hasattr(src, "sse"):
        src.sse = src.aiter_sse()
    events = []
    async for sse in src.sse:
        events.append(json.loads(sse.data))
        if "".join(e["text"] for e in events if e["type"] == "token").count(" ") >= count:
            return events
    raise AssertionError("stream ended early")


async def wait_status(app, message_id: int, status: str, timeout: float = 3.0) -> float:
    """Poll the database file until the answer has `status`; return how long it took."""
    start = time.monotonic()
    while answer_row(app, message_id)["status"] != status:
        assert time.monotonic() - start < timeout, f"status stayed {answer_row(app, message_id)['status']}"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def test_client_disconnect_mid_stream_saves_partial_and_closes_upstream(app, fake):
    fake.push(Script(tokens=[f"w{i} " for i in range(200)], delay=0.02))
    thread = await app.new_thread()
    async with app.http() as http:
        async with aconnect_sse(http, "POST", f"/api/threads/{thread['id']}/chat", json={"message": "go"}) as src:
            events = await read_until_tokens(src, 5)
    message_id = events[0]["message_id"]
    await wait_status(app, message_id, "interrupted")
    record = await fake.wait_ended()
    assert record.outcome == "client_closed"
    content = answer_row(app, message_id)["content"]
    expected = "".join(f"w{i} " for i in range(record.tokens_sent))
    # every generated character is kept: what the upstream sent, minus at most what was still in flight
    assert expected.startswith(content) and len(content) >= len("".join(f"w{i} " for i in range(5)))
    sent_after_close = record.tokens_sent
    await asyncio.sleep(0.2)
    assert record.tokens_sent == sent_after_close  # the upstream really stopped
    assert (await app.thread(thread["id"]))["streaming"] is False


async def test_silent_upstream_then_disconnect_is_noticed_quickly(app, fake):
    fake.push(Script(tokens=["only ", "this ", "never"], hang_after=2))
    thread = await app.new_thread()
    async with app.http() as http:
        async with aconnect_sse(http, "POST", f"/api/threads/{thread['id']}/chat", json={"message": "go"}) as src:
            events = await read_until_tokens(src, 2)
            await asyncio.sleep(0.1)  # the provider is now silent
    noticed = await wait_status(app, events[0]["message_id"], "interrupted")
    assert noticed < 0.5  # the target is 100 ms; the margin absorbs a loaded CI machine
    assert answer_row(app, events[0]["message_id"])["content"] == "only this "
    assert (await fake.wait_ended()).outcome == "client_closed"


async def test_cancel_endpoint_stops_stream_and_is_idempotent(app, fake):
    fake.push(Script(tokens=[f"c{i} " for i in range(500)], delay=0.01))
    thread = await app.new_thread()
    async with app.http(timeout=10) as http:
        async with aconnect_sse(http, "POST", f"/api/threads/{thread['id']}/chat", json={"message": "go"}) as src:
            events = await read_until_tokens(src, 3)
            resp = await app.post(f"/api/threads/{thread['id']}/cancel")
            assert (resp.status, await resp.json()) == (200, {"cancelled": True})
            async for sse in src.sse:
                events.append(json.loads(sse.data))
    assert events[-1] == {"type": "interrupted", "message_id": events[0]["message_id"], "reason": "cancelled"}
    text = "".join(e["text"] for e in events if e["type"] == "token")
    row = answer_row(app, events[0]["message_id"])
    assert (row["status"], row["content"]) == ("interrupted", text)  # saved before the cancel call returned
    assert (await fake.wait_ended()).outcome == "client_closed"
    again = await app.post(f"/api/threads/{thread['id']}/cancel")
    assert (again.status, await again.json()) == (200, {"cancelled": False})
    missing = await app.post("/api/threads/999999/cancel")
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "thread_not_found"


async def test_second_chat_on_a_streaming_thread_gets_409(app, fake):
    fake.push(Script(tokens=[f"x{i} " for i in range(100)], delay=0.01))
    thread = await app.new_thread()
    async with app.http() as http:
        async with aconnect_sse(http, "POST", f"/api/threads/{thread['id']}/chat", json={"message": "go"}) as src:
            await read_until_tokens(src, 1)
            busy = await app.post(f"/api/threads/{thread['id']}/chat", {"message": "again"})
            assert busy.status == 409
            assert (await busy.json())["error"]["code"] == "thread_busy"
            assert (await app.thread(thread["id"]))["streaming"] is True
    assert len(app.rows("SELECT * FROM messages WHERE thread_id = ?", thread["id"])) == 2  # nothing written by 409


async def test_upstream_500_before_first_token_falls_back(tmp_path, make_app, settings, fake, backup):
    models = write_models_file(tmp_path / "fallback.yaml", fake, backup)
    app = await make_app(settings, models=models)
    fake.push(Script(status=500))
    backup.push(Script(tokens=["from ", "backup"]))
    thread = await app.new_thread()
    events = await app.chat(thread["id"], "hello")
    assert events[-1]["type"] == "done"
    assert "".join(e["text"] for e in events if e["type"] == "token") == "from backup"
    assert [r.outcome for r in fake.records] == ["error_status"]
    assert [r.outcome for r in backup.records] == ["completed"]
    assert answer_row(app, events[0]["message_id"])["status"] == "complete"


async def test_upstream_failure_before_first_token_without_fallback_is_an_error_event(app, fake):
    fake.push(Script(status=503))
    thread = await app.new_thread()
    events = await app.chat(thread["id"], "hello")
    assert [e["type"] for e in events] == ["start", "error"]
    assert events[-1]["code"] and "Traceback" not in events[-1]["message"]
    row = answer_row(app, events[0]["message_id"])
    assert (row["status"], row["content"]) == ("error", "")


async def test_upstream_failure_mid_stream_keeps_text_with_error_status(app, fake):
    fake.push(Script(tokens=["kept ", "text ", "lost"], fail_after=2))
    thread = await app.new_thread()
    events = await app.chat(thread["id"], "hello")
    assert kinds(events) == ["start", "token", "error"]
    assert "".join(e["text"] for e in events[1:-1]) == "kept text "
    assert events[-1]["code"] == "provider_unreachable"
    row = answer_row(app, events[0]["message_id"])
    assert (row["status"], row["content"]) == ("error", "kept text ")
    assert fake.records[-1].outcome == "failed"


async def test_heartbeat_comments_flow_while_the_provider_is_silent(make_app, settings, fake):
    app = await make_app(settings, heartbeat=0.1)
    fake.push(Script(tokens=["late"], first_delay=0.45))
    thread = await app.new_thread()
    resp = await app.post(f"/api/threads/{thread['id']}/chat", {"message": "hi"})
    raw = (await resp.read()).decode()
    assert raw.count(": ping\n\n") >= 3
    assert raw.index(": ping") < raw.index('"type":"token"')


async def test_answer_is_flushed_to_the_database_during_the_stream(app, fake):
    fake.push(Script(tokens=[f"f{i} " for i in range(60)], delay=0.02))
    thread = await app.new_thread()
    async with app.http() as http:
        async with aconnect_sse(http, "POST", f"/api/threads/{thread['id']}/chat", json={"message": "go"}) as src:
            events = await read_until_tokens(src, 30)
            await asyncio.sleep(0.25)  # > flush_interval (0.1 s in tests)
            row = answer_row(app, events[0]["message_id"])
            assert row["status"] == "streaming" and row["content"].startswith("f0 f1 f2 ")
