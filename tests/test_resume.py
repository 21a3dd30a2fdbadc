"""Resume through the real app: a vanished client is not a stop; GET /api/threads/{id}/stream reattaches with
Last-Event-ID, exactly (no gap, no duplicate); the grace timer; stop and delete while detached; old ids."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from httpx_sse import aconnect_sse

from server.auth import OPEN_STREAMS
from tests.fake_upstream import Script

TOKENS = [f"w{i} " for i in range(120)]


@pytest.fixture
async def app(make_app, settings):
    return await make_app(settings, detach_grace=5)


async def read_events(http, method: str, path: str, *, count: int | None = None, headers=None, **kwargs):
    """(events, response status): read to the end, or drop the connection after `count` tokens."""
    events = []
    async with aconnect_sse(http, method, path, headers=dict(headers or {}), **kwargs) as src:
        if src.response.status_code != 200:
            return events, src.response.status_code
        async for sse in src.aiter_sse():
            if not sse.data:  # httpx-sse turns a `: ping` heartbeat after an id into an empty event
                continue
            events.append({"id": sse.id, **json.loads(sse.data)})
            if count is not None and sum(e["type"] == "token" for e in events) >= count:
                break
    return events, 200


def text(events) -> str:
    return "".join(e["text"] for e in events if e["type"] == "token")


def answer(app, message_id: int):
    return tuple(app.rows("SELECT status, content FROM messages WHERE id = ?", message_id)[0])


async def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_drop_then_reattach_gives_exactly_the_upstream_text(app, fake):
    fake.push(Script(tokens=TOKENS, delay=0.01))
    thread = await app.new_thread()
    path = f"/api/threads/{thread['id']}"
    async with app.http(timeout=30) as http:
        first, _ = await read_events(http, "POST", path + "/chat", json={"message": "go"}, count=7)
        await asyncio.sleep(0.2)  # the answer goes on while nobody reads it
        assert (await http.get(path)).json()["streaming"] is True
        rest, status = await read_events(http, "GET", path + "/stream", headers={"Last-Event-ID": first[-1]["id"]})
    assert status == 200
    assert text(first) + text(rest) == "".join(TOKENS)  # no gap, no duplicate
    assert rest[-1]["type"] == "done" and rest[0]["id"].split(".")[1] == str(int(first[-1]["id"].split(".")[1]) + 1)
    assert answer(app, first[0]["message_id"]) == ("complete", "".join(TOKENS))


async def test_snapshot_then_follow_from_its_event(app, fake):
    fake.push(Script(tokens=TOKENS, delay=0.01))
    thread = await app.new_thread()
    path = f"/api/threads/{thread['id']}"
    async with app.http(timeout=30) as http:
        first, _ = await read_events(http, "POST", path + "/chat", json={"message": "go"}, count=3)
        detail = (await http.get(path)).json()
        snapshot = detail["messages"][-1]["content"]
        rest, _ = await read_events(http, "GET", path + "/stream", params={"after": detail["stream_event_id"]})
    assert snapshot + text(rest) == "".join(TOKENS)


async def test_two_subscribers_get_the_same_events(app, fake):
    fake.push(Script(tokens=TOKENS[:40], delay=0.01))
    thread = await app.new_thread()
    path = f"/api/threads/{thread['id']}"
    async with app.http(timeout=30) as http:
        post = asyncio.create_task(read_events(http, "POST", path + "/chat", json={"message": "go"}))
        await wait_for(lambda: app.rows("SELECT id FROM messages WHERE role = 'assistant'"))
        second, _ = await read_events(http, "GET", path + "/stream")
        first, _ = await post
    assert first == second  # replayed from the start, then live: the same ids and payloads


async def test_reattach_after_the_end_is_204_and_the_answer_is_saved(app, fake):
    fake.push(Script(tokens=TOKENS[:20], delay=0.0))
    thread = await app.new_thread()
    events = await app.chat(thread["id"], "go")
    async with app.http() as http:
        resp = await http.get(f"/api/threads/{thread['id']}/stream", headers={"Last-Event-ID": events[-1]["id"]})
    assert resp.status_code == 204
    assert answer(app, events[0]["message_id"]) == ("complete", "".join(TOKENS[:20]))


async def test_no_reattach_means_interrupted_after_the_grace_with_every_generated_character(make_app, settings, fake):
    app = await make_app(settings, detach_grace=0.5)
    fake.push(Script(tokens=[f"t{i} " for i in range(2000)], delay=0.005))
    thread = await app.new_thread()
    async with app.http(timeout=30) as http:
        first, _ = await read_events(http, "POST", f"/api/threads/{thread['id']}/chat", json={"message": "go"},
                                     count=3)
    message_id = first[0]["message_id"]
    await asyncio.sleep(0.3)
    assert answer(app, message_id)[0] == "streaming"  # still within the grace
    await wait_for(lambda: answer(app, message_id)[0] == "interrupted")
    record = await fake.wait_ended()
    status, content = answer(app, message_id)
    assert content == "".join(f"t{i} " for i in range(len(content.split())))  # a clean prefix
    assert len(content.split()) > 3 and record.tokens_sent >= len(content.split())


async def test_an_older_answers_id_is_not_applied_to_a_newer_one(app, fake):
    fake.push(Script(tokens=TOKENS[:10], delay=0.0))
    thread = await app.new_thread()
    old = await app.chat(thread["id"], "first")
    fake.push(Script(tokens=TOKENS[:30], delay=0.05))
    path = f"/api/threads/{thread['id']}"
    async with app.http(timeout=30) as http:
        new, _ = await read_events(http, "POST", path + "/chat", json={"message": "second"}, count=2)
        bad = [(await http.get(path + "/stream", headers={"Last-Event-ID": value})).status_code  # while it runs
               for value in ("not-an-id", "+24.1", "24_0.1", "24.-1", "-1.-1", "1.2.3")]
        replay, _ = await read_events(http, "GET", path + "/stream", headers={"Last-Event-ID": old[-1]["id"]})
    assert replay[0]["type"] == "start" and text(replay) == "".join(TOKENS[:30])  # from the new answer's start
    assert bad == [400] * 6  # only `<digits>.<digits>`, as the server writes them (int() took "+24" and "24_0")


async def test_stop_and_delete_while_detached(app, fake):
    for action in ("cancel", "delete"):
        fake.push(Script(tokens=TOKENS * 10, delay=0.01))
        thread = await app.new_thread()
        path = f"/api/threads/{thread['id']}"
        async with app.http(timeout=30) as http:
            first, _ = await read_events(http, "POST", path + "/chat", json={"message": "go"}, count=2)
            if action == "cancel":
                assert (await http.post(path + "/cancel", json={})).json() == {"cancelled": True}
                assert answer(app, first[0]["message_id"])[0] == "interrupted"  # saved when cancel answered
                assert (await http.get(path + "/stream")).status_code == 204
            else:
                assert (await http.delete(path)).status_code == 204
                assert (await http.get(path + "/stream")).status_code == 404
        assert app.client.server.app[__import__("server.keys").keys.REGISTRY].active == {}


async def test_grace_zero_stops_at_once_as_before(make_app, settings, fake):
    app = await make_app(settings, detach_grace=0)
    fake.push(Script(tokens=TOKENS * 10, delay=0.01))
    thread = await app.new_thread()
    async with app.http(timeout=30) as http:
        first, _ = await read_events(http, "POST", f"/api/threads/{thread['id']}/chat", json={"message": "go"},
                                     count=2)
    await wait_for(lambda: answer(app, first[0]["message_id"])[0] == "interrupted", timeout=1.0)


def test_a_backlog_of_tokens_is_coalesced_into_one_frame_with_the_last_id():
    from server import events
    from server.sse import coalesce_tokens

    batch = [events.token("a"), events.token("b"), events.done(7, "stop", None)]
    assert coalesce_tokens(4, batch) == (5, events.token("ab"), 2)
    assert coalesce_tokens(6, batch[2:]) == (6, batch[2], 1)
    start = [events.start(1, 2, "chat"), events.token("x")]
    assert coalesce_tokens(1, start) == (1, start[0], 1)


async def test_a_reader_that_falls_behind_gets_fewer_frames_and_the_same_text(app, fake):
    from urllib.parse import urlsplit

    tokens = [f"{i:05d}" + "x" * 10_000 for i in range(1000)]  # 10 MB: more than the socket buffers hold
    fake.push(Script(tokens=tokens, delay=0.0))
    thread = await app.new_thread()
    url = urlsplit(app.base)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow reader's small window
    sock.connect((url.hostname, url.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    body = b'{"message": "flood"}'
    writer.write(f"POST /api/threads/{thread['id']}/chat HTTP/1.1\r\nHost: {url.netloc}\r\n"
                 f"Authorization: Bearer {app.token}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    await writer.drain()
    await asyncio.sleep(1.5)  # not reading: the server's socket buffer fills
    raw = await reader.read()  # then everything, to the end
    writer.close()
    body_text = raw.decode().split("\r\n\r\n", 1)[1]  # past the headers (the CSP holds "data: " too)
    payloads = [json.loads(line[len("data: "):].rstrip("\r")) for line in body_text.split("\n")
                if line.startswith("data: ")]
    token_frames = [p["text"] for p in payloads if p["type"] == "token"]
    assert "".join(token_frames) == "".join(tokens)  # exact
    assert len(token_frames) < len(tokens)  # fewer writes: backlogs went out as one frame each
    assert payloads[-1]["type"] == "done"


async def test_a_long_backlog_is_replayed_whole_in_groups(app, fake):
    """A follower that attaches after hundreds of events gets them all, framed as the live stream was, although
    the backlog is written REPLAY_GROUP frames at a time with a turn of the loop between."""
    from server.sse import REPLAY_GROUP

    many = [f"v{i} " for i in range(3 * REPLAY_GROUP)]
    fake.push(Script(tokens=many, delay=0.002))
    thread = await app.new_thread()
    path = f"/api/threads/{thread['id']}"
    async with app.http(timeout=30) as http:
        post = asyncio.create_task(read_events(http, "POST", path + "/chat", json={"message": "go"}))
        await wait_for(lambda: len(app.rows("SELECT id FROM messages WHERE role = 'assistant'")) == 1)
        await wait_for(lambda: len(app.rows("SELECT content FROM messages WHERE role = 'assistant'")[0][0]) > 8
                       * REPLAY_GROUP * 1.2)  # more than a group of events flushed already
        second, _ = await read_events(http, "GET", path + "/stream")
        first, _ = await post
    assert first == second and text(second) == "".join(many)


async def test_head_on_the_stream_is_405_and_the_connection_stays_clean(app, fake):
    """HEAD on the follow route would get the stream's frames after its headers (written to the socket, not
    through aiohttp's body), and the next answer on that kept-alive connection (nginx's to the app) would be read
    from them: it is a 405 JSON error, and a request after it on the same connection gets its own answer."""
    fake.push(Script(tokens=TOKENS, delay=0.02))
    thread = await app.new_thread()
    path = f"/api/threads/{thread['id']}"
    async with app.http(timeout=30) as http:
        post = asyncio.create_task(read_events(http, "POST", path + "/chat", json={"message": "go"}))
        await wait_for(lambda: app.rows("SELECT id FROM messages WHERE role = 'assistant'"))
        server = app.client.server
        reader, writer = await asyncio.open_connection(server.host, server.port)
        head = (f"HEAD {path}/stream HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                f"Authorization: Bearer {app.token}\r\n\r\n")
        writer.write(head.encode() + f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                                     "Connection: close\r\n\r\n".encode())
        await writer.drain()
        replies = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await post
    first, rest = replies.split(b"\r\n\r\n", 1)
    assert first.split(b"\r\n")[0].endswith(b" 405 Method Not Allowed"), replies[:300]
    assert rest.startswith(b"HTTP/1.1 200 OK"), replies[:600]  # nothing of the stream between the two answers
    assert b"id: " not in replies and b'"status"' in rest


async def test_followers_per_user_are_limited(make_app, settings, fake):
    """Each open stream costs a socket and memory: a user may hold FOLLOWS_PER_ANSWER x --max-streams-per-user
    of them in a process; one more gets 429 too_many_streams, and closing one makes room."""
    from server.routes import FOLLOWS_PER_ANSWER

    app = await make_app(settings, max_streams_per_user=1, detach_grace=5)
    fake.push(Script(tokens=TOKENS, delay=0.05))
    thread = await app.new_thread()
    path = f"/api/threads/{thread['id']}"
    async with app.http(timeout=30) as http:
        async with http.stream("POST", path + "/chat", json={"message": "go"}) as chat:
            assert chat.status_code == 200
            await wait_for(lambda: app.rows("SELECT id FROM messages WHERE role = 'assistant'"))
            followers = []
            for _ in range(FOLLOWS_PER_ANSWER - 1):  # the chat's own stream counts too
                follower = http.stream("GET", path + "/stream")
                response = await follower.__aenter__()
                assert response.status_code == 200
                followers.append(follower)
            refused = await http.get(path + "/stream")
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_streams"
            assert refused.headers["Retry-After"]
            await followers.pop().__aexit__(None, None, None)
            await wait_for(lambda: app.client.server.app[OPEN_STREAMS].count(1) < FOLLOWS_PER_ANSWER)
            async with http.stream("GET", path + "/stream") as again:
                assert again.status_code == 200
            for follower in followers:
                await follower.__aexit__(None, None, None)
