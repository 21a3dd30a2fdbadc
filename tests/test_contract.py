"""The contract between the server and the page, checked from both sides: the names are the same (event kinds,
merge formats), and a real server stream (the real app, a scripted fake upstream) fed in random cuts through the
page's SSE parser (web/py/sse.py) and stream router (web/py/streams.py) leaves the page's store (web/py/store.py)
exactly as the server saved the answer: chat, merge, a provider error, a stream interrupted by the cancel
endpoint, a cut stream followed again, and refusals read through the page's error-shape reader (web/py/contract.py)."""

from __future__ import annotations

import asyncio
import json
import pathlib
import random
import sys

import pytest

from server import events, merge
from tests.fake_upstream import Script

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "web" / "py"))

import contract  # noqa: E402
import reconnect  # noqa: E402
from store import Store  # noqa: E402
from streams import Streams  # noqa: E402


def test_event_names_are_the_servers():
    assert (contract.START, contract.TOKEN, contract.DONE, contract.ERROR, contract.INTERRUPTED) == (
        events.START, events.TOKEN, events.DONE, events.ERROR, events.INTERRUPTED)
    assert contract.TERMINAL == events.TERMINAL and contract.KINDS == events.KINDS


def test_merge_formats_are_the_servers():
    assert [name for name, _ in contract.MERGE_FORMATS] == list(merge.FORMATS)


def test_merge_key_round_trip():
    assert contract.merge_thread(contract.merge_key(42)) == 42
    assert [contract.merge_thread(k) for k in (42, "42", "merge:x", "other:1")] == [None] * 4


# ---- a real server stream through the page -----------------------------------------------------------------------

class Recorded:
    """One recorded HTTP answer (status, headers, body bytes), replayed to the page's router in random cuts the way
    api.StreamRequest hands them over: the body as bytes chunks, or the error-shape reader's ApiError."""

    def __init__(self, status: int, headers, body: bytes, seed: int) -> None:
        self.status, self.headers, self.body = status, headers, body
        self.rng = random.Random(seed)
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    async def chunks(self):
        if not 200 <= self.status < 300:
            raise contract.error_from_body(self.status, self.body.decode(), "", self.headers.get("Retry-After"))
        i = 0
        while i < len(self.body):
            n = self.rng.choice((1, 2, 3, 5, 17, 64, 4096))
            yield self.body[i:i + n]
            i += n
            await asyncio.sleep(0)


class Following:
    """The page's GET stream (a reconnect after a cut), made to the real server."""

    def __init__(self, app, thread_id: int, last_event_id: str) -> None:
        self.app, self.thread_id, self.last_event_id = app, thread_id, last_event_id
        self.status, self.aborted = 0, False

    def abort(self) -> None:
        self.aborted = True

    async def chunks(self):
        async with self.app.http(timeout=30) as http:
            async with http.stream("GET", f"/api/threads/{self.thread_id}/stream",
                                   headers={"Last-Event-ID": self.last_event_id}) as resp:
                self.status = resp.status_code
                async for chunk in resp.aiter_raw():
                    yield chunk


class ReplayTransport:
    def __init__(self, recorded: Recorded, app=None) -> None:
        self.recorded = recorded
        self.app = app  # reconnects and saved answers come from this real server
        self.urls: list[str] = []

    def max_streams(self) -> int:
        return 5

    def open(self, url, body):
        self.urls.append(url)
        return self.recorded

    def follow(self, thread_id, last_event_id):
        assert self.app is not None, "not asked: the stream was not cut"
        return Following(self.app, thread_id, last_event_id)

    async def get_thread(self, thread_id):
        assert self.app is not None, "not asked: nobody pressed Stop"
        return await self.app.thread(thread_id)


async def record(app, path: str, body: dict, *, cancel_after_tokens: int | None = None, thread_id=None):
    """POST `body` to the real server; the raw response bytes as they came (optionally cancelling through the
    cancel endpoint once that many tokens were received)."""
    raw = b""
    async with app.http(timeout=30) as http:
        async with http.stream("POST", path, json=body) as resp:
            async for chunk in resp.aiter_raw():
                raw += chunk
                if cancel_after_tokens is not None and raw.count(b'"token"') >= cancel_after_tokens:
                    cancel_after_tokens = None
                    answer = await http.post(f"/api/threads/{thread_id}/cancel", json={})
                    assert answer.json() == {"cancelled": True}
            return resp.status_code, resp.headers, raw


async def through_the_page(status, headers, raw, seed, *, key, start, app=None):
    """Feed the recorded answer through the page's router into a real Store; return (store, outcome)."""
    store = Store()
    ends = []
    streams = Streams(store, ReplayTransport(Recorded(status, headers, raw, seed), app),
                      on_end=lambda k, outcome: ends.append((k, outcome)))
    assert start(streams)
    for step in range(12_000):
        if ends:
            break
        await asyncio.sleep(0 if step < 10_000 else 0.005)
    assert ends and ends[0][0] == key and not streams.live
    return store, ends[0][1]


def saved(app, message_id: int):
    (row,) = app.rows("SELECT id, role, content, status FROM messages WHERE id = ?", message_id)
    return row


@pytest.mark.parametrize("seed", range(3))
async def test_a_real_chat_stream_ends_in_the_store_as_the_server_saved_it(app, fake, seed):
    tokens = ["Bonjour ", "café ", "中文 ", "🙂 ", "👩‍💻", "\n", "done."]
    fake.push(Script(tokens=tokens, delay=0.002))
    thread = await app.new_thread()
    tid = thread["id"]
    status, headers, raw = await record(app, f"/api/threads/{tid}/chat", {"message": "hello"})
    assert status == 200
    store, outcome = await through_the_page(status, headers, raw, seed, key=tid,
                                            start=lambda s: s.start(tid, "hello"))
    question, answer = store.thread(tid).messages
    assert outcome == "complete" and (answer.status, answer.text) == ("complete", "".join(tokens))
    rows = app.rows("SELECT id, role, content, status FROM messages WHERE thread_id = ? ORDER BY id", tid)
    assert [(r["role"], r["id"]) for r in rows] == [("user", question.id), ("assistant", answer.id)]
    assert (rows[1]["content"], rows[1]["status"]) == (answer.text, "complete")
    assert question.text == "hello" and not store.thread(tid).streaming and store.thread(tid).error is None


async def test_a_real_merge_stream_ends_in_the_store_under_its_key(app, fake):
    main = await app.new_thread(title="Trip")
    fake.push(Script(tokens=["Go to Lyon."]))
    await record(app, f"/api/threads/{main['id']}/chat", {"message": "Where?"})
    await app.idle()
    fake.push(Script(tokens=["- Lyon ", "is ", "in ", "France"], delay=0.002))
    body = {"threads": [main["id"]], "format": "bullets"}
    status, headers, raw = await record(app, f"/api/threads/{main['id']}/merge", body)
    key = contract.merge_key(main["id"])
    store, outcome = await through_the_page(
        status, headers, raw, 1, key=key, start=lambda s: s.start_merge(key, main["id"], [main["id"]], "bullets", None))
    (answer,) = store.thread(key).messages
    row = saved(app, answer.id)
    assert outcome == "complete" and (answer.kind, answer.status, answer.text) == ("merge", "complete",
                                                                                    "- Lyon is in France")
    assert (row["role"], row["content"], row["status"]) == ("assistant", answer.text, "complete")


@pytest.mark.parametrize("script,text,code", [(Script(status=503), "", None),
                                              (Script(tokens=["kept ", "text ", "lost"], fail_after=2), "kept text ",
                                               "provider_unreachable")])
async def test_a_real_error_stream(app, fake, script, text, code):
    fake.push(script)
    tid = (await app.new_thread())["id"]
    status, headers, raw = await record(app, f"/api/threads/{tid}/chat", {"message": "hello"})
    store, outcome = await through_the_page(status, headers, raw, 2, key=tid, start=lambda s: s.start(tid, "hi"))
    answer = store.thread(tid).messages[-1]
    row = saved(app, answer.id)
    assert outcome == "error" and (answer.status, answer.text) == ("error", text) == (row["status"], row["content"])
    assert answer.error["code"] and store.thread(tid).error is answer.error
    if code:
        assert answer.error["code"] == code


async def test_a_real_stream_interrupted_by_the_cancel_endpoint(app, fake):
    fake.push(Script(tokens=[f"c{i} " for i in range(300)], delay=0.01))
    tid = (await app.new_thread())["id"]
    status, headers, raw = await record(app, f"/api/threads/{tid}/chat", {"message": "go"}, cancel_after_tokens=3,
                                        thread_id=tid)
    store, outcome = await through_the_page(status, headers, raw, 3, key=tid, start=lambda s: s.start(tid, "go"))
    answer = store.thread(tid).messages[-1]
    row = saved(app, answer.id)
    assert outcome == "interrupted" and answer.status == "interrupted" and store.thread(tid).interrupted
    assert (row["status"], row["content"]) == ("interrupted", answer.text) and answer.text.startswith("c0 c1 c2 ")


async def test_a_real_stream_cut_before_its_end_is_followed_again(app, fake, monkeypatch):
    """The cut stream is followed again from its last event id; the answer has ended meanwhile (204), so the page
    shows it as the server saved it."""
    monkeypatch.setattr(reconnect, "BACKOFF_S", (0.0,))
    fake.push(Script(tokens=["a ", "b ", "c"]))
    tid = (await app.new_thread())["id"]
    status, headers, raw = await record(app, f"/api/threads/{tid}/chat", {"message": "go"})
    cut = raw[:raw.rindex(b"id: ")]  # everything but the terminal frame
    store, outcome = await through_the_page(status, headers, cut, 4, key=tid, start=lambda s: s.start(tid, "go"),
                                            app=app)
    answer = store.thread(tid).messages[-1]
    assert outcome == "complete" and (answer.text, answer.status) == ("a b c", "complete")
    assert (answer.text, answer.status) == (saved(app, answer.id)["content"], saved(app, answer.id)["status"])


async def test_real_refusals_are_read_through_the_error_shape(app, fake):
    fake.push(Script(tokens=[f"x{i} " for i in range(200)], delay=0.01))
    tid = (await app.new_thread())["id"]
    async with app.http(timeout=30) as http:
        async with http.stream("POST", f"/api/threads/{tid}/chat", json={"message": "go"}) as first:
            body = first.aiter_raw()  # kept open (leaving an `async for` would close the response)
            while b'"token"' not in await body.__anext__():
                pass
            busy = await record(app, f"/api/threads/{tid}/chat", {"message": "again"})
            await http.post(f"/api/threads/{tid}/cancel", json={})
    bad_format = await record(app, f"/api/threads/{tid}/merge", {"threads": [tid], "format": "poem"})
    for (status, headers, raw), code in ((busy, "thread_busy"), (bad_format, "invalid_format")):
        store, outcome = await through_the_page(status, headers, raw, 5, key=tid, start=lambda s: s.start(tid, "q"))
        (question,) = store.thread(tid).messages
        assert outcome == "error" and question.status == "error"
        assert (question.error["status"], question.error["code"]) == (status, code)
        assert question.error["message"] == json.loads(raw)["error"]["message"]
