"""The page's stream router (web/py/streams.py), run under CPython with a fake transport: events into the store in
every order and every cut of the bytes, truncation, Stop while connecting and while streaming, two streams at once,
refusals before the start (401 -> the sign-in callback, 409, 429) and the network failing."""

from __future__ import annotations

import asyncio
import json
import pathlib
import random
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "web" / "py"))

import reconnect  # noqa: E402
import streams  # noqa: E402
from contract import ApiError, error_from_body, merge_key, unreachable  # noqa: E402
from store import Store  # noqa: E402
from streams import Streams  # noqa: E402

END = object()


def frame(payload: dict, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {json.dumps(payload)}\n\n".encode()


def start(uid=10, mid=11):
    return frame({"type": "start", "user_message_id": uid, "message_id": mid, "kind": "chat"})


def token(text):
    return frame({"type": "token", "text": text})


def done(mid=11, finish_reason="stop"):
    return frame({"type": "done", "message_id": mid, "finish_reason": finish_reason, "usage": {"completion_tokens": 3}})


class FakeRequest:
    """A streaming POST: the test pushes bytes (or an ApiError to raise, or END); abort() fails the read as the
    browser does (a rejected fetch / read)."""

    def __init__(self, url, body):
        self.url, self.body = url, body
        self.queue: asyncio.Queue = asyncio.Queue()
        self.aborted = False
        self.read_started = False
        self.status = 0

    def push(self, *items):
        for item in items:
            self.queue.put_nowait(item)

    def abort(self):
        self.aborted = True
        self.queue.put_nowait(unreachable("AbortError: The user aborted a request."))

    async def chunks(self):
        self.read_started = True
        self.status = 200
        while True:
            item = await self.queue.get()
            if item is END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class FakeTransport:
    def __init__(self, cap=5):
        self.cap = cap
        self.requests: list[FakeRequest] = []
        self.saved: dict[int, list[dict]] = {}  # thread id -> the messages GET /api/threads/{id} answers
        self.gets = 0
        self.cancels: list[int] = []
        self.follows: list[FakeRequest] = []  # the GET streams; `last_event_id` is what each sent
        self.down = False  # the cancel request fails as a fetch does offline
        self.network = None

    def max_streams(self):
        return self.cap

    def open(self, url, body):
        request = FakeRequest(url, body)
        self.requests.append(request)
        return request

    def follow(self, thread_id, last_event_id):
        request = self.open(f"/api/threads/{thread_id}/stream", None)
        request.last_event_id = last_event_id
        self.follows.append(request)
        return request

    async def cancel(self, thread_id):
        self.cancels.append(thread_id)
        if self.down:
            raise unreachable("TypeError: Failed to fetch")

    def online(self):
        return True

    def on_network_change(self, callback):
        self.network = callback  # the tests call it as the window's online / offline events would

    async def get_thread(self, thread_id):
        self.gets += 1
        return {"id": thread_id, "messages": self.saved.get(thread_id, [])}


@pytest.fixture
def env():
    store, transport = Store(), FakeTransport()
    ends, signins = [], []
    s = Streams(store, transport, on_end=lambda key, outcome: ends.append((key, outcome)),
                on_unauthenticated=signins.append)
    return store, transport, s, ends, signins


async def settle(rounds=20):
    for _ in range(rounds):
        await asyncio.sleep(0)


def last(store, key):
    return store.thread(key).messages[-1]


def cuts(data: bytes, rng: random.Random) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rng.choice((1, 2, 3, 7, 64))
        out.append(data[i:i + n])
        i += n
    return out


# ---- events into the store ---------------------------------------------------------------------------------------

WHOLE = start() + token("Hé ") + token("中文 ") + token("🙂") + done()


@pytest.mark.parametrize("seed", range(12))
async def test_a_complete_answer_in_any_cut_of_the_bytes(env, seed):
    store, transport, s, ends, _ = env
    assert s.start(1, "hi")
    request = transport.requests[0]
    assert (request.url, request.body) == ("/api/threads/1/chat", {"message": "hi"})
    request.push(*cuts(WHOLE, random.Random(seed)), END)
    await settle()
    state = store.thread(1)
    question, answer = state.messages
    assert (question.id, question.text, answer.id) == (10, "hi", 11)
    assert (answer.status, answer.text) == ("complete", "Hé 中文 🙂")
    assert answer.usage == {"completion_tokens": 3} and not state.streaming and state.error is None
    assert ends == [(1, "complete")] and not s.live and s.busy_threads() == set()


@pytest.mark.parametrize("cut", range(1, len(WHOLE)))
async def test_every_single_cut(env, cut):
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    transport.requests[0].push(WHOLE[:cut], WHOLE[cut:], END)
    await settle()
    assert (last(store, 1).status, last(store, 1).text) == ("complete", "Hé 中文 🙂") and ends == [(1, "complete")]


async def test_start_tokens_and_end_in_one_chunk_keep_their_order(env):
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    transport.requests[0].push(b": ping\n\n" + start() + token("a") + token("b") + done() + b"\n", END)
    await settle()
    assert (last(store, 1).id, last(store, 1).text, last(store, 1).status) == (11, "ab", "complete")


async def test_tokens_stream_in_as_chunks_arrive(env):
    store, transport, s, _, _ = env
    s.start(1, "hi")
    request = transport.requests[0]
    request.push(start())
    await settle()
    assert last(store, 1).id == 11 and store.thread(1).streaming and last(store, 1).parts == []
    request.push(token("one "))
    await settle()
    assert store.thread(1).buffer == "one "
    request.push(token("two"), done(), END)
    await settle()
    assert last(store, 1).text == "one two" and not store.thread(1).streaming


async def test_an_answer_cut_at_the_token_limit_says_so(env):
    """finish_reason "length": the answer is complete as a stream but not as an answer (the page marks it)."""
    store, transport, s, _, _ = env
    s.start(1, "hi")
    transport.requests[0].push(start() + token("and so the") + done(finish_reason="length"), END)
    await settle()
    answer = last(store, 1)
    assert (answer.status, answer.finish_reason, answer.cut_off) == ("complete", "length", True)
    s.start(1, "again")
    transport.requests[1].push(start(12, 13) + token("whole.") + done(13), END)
    await settle()
    assert (last(store, 1).finish_reason, last(store, 1).cut_off) == ("stop", False)


async def test_an_error_after_the_start_keeps_the_text(env):
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    transport.requests[0].push(start() + token("partial") + frame(
        {"type": "error", "code": "upstream_error", "message": "The model failed.", "message_id": 11}), END)
    await settle()
    answer = last(store, 1)
    assert (answer.status, answer.text, answer.error["code"]) == ("error", "partial", "upstream_error")
    assert store.thread(1).error["code"] == "upstream_error" and ends == [(1, "error")]


async def test_an_error_before_the_start_marks_the_question_not_sent(env):
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    transport.requests[0].push(frame({"type": "error", "code": "no_model", "message": "No model."}), END)
    await settle()
    (question,) = store.thread(1).messages
    assert question.status == "error" and store.thread(1).error["code"] == "no_model" and ends == [(1, "error")]


async def test_interrupted_by_the_server(env):
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    transport.requests[0].push(start(), token("so far"),
                               frame({"type": "interrupted", "message_id": 11, "reason": "shutdown"}), END)
    await settle()
    assert (last(store, 1).status, last(store, 1).text) == ("interrupted", "so far")
    assert store.thread(1).interrupted and ends == [(1, "interrupted")]


async def test_unknown_and_malformed_events_are_ignored(env):
    store, transport, s, _, _ = env
    s.start(1, "hi")
    transport.requests[0].push(start() + b"data: not json\n\n" + frame({"type": "later"}) + b"data: [1]\n\n"
                               + token("x") + done(), END)
    await settle()
    assert (last(store, 1).status, last(store, 1).text) == ("complete", "x")


# ---- truncation: the parser's terminal state ---------------------------------------------------------------------

@pytest.mark.parametrize("body", [start() + token("cut"), start() + token("cut") + b"data: {\"type\": \"do",
                                  start() + token("cut") + done()[:-1], b""])
async def test_a_stream_without_a_terminal_event_is_truncated(env, body):
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    transport.requests[0].push(body, END)
    await settle()
    answer = last(store, 1)
    assert answer.status == "error" and answer.error["code"] == "stream_truncated"
    assert answer.text == ("cut" if body else "") and ends == [(1, "error")]


# ---- refusals before the start, the network ----------------------------------------------------------------------

@pytest.mark.parametrize("status,code", [(409, "thread_busy"), (429, "rate_limited"), (401, "unauthenticated")])
async def test_a_refusal_before_the_start(env, status, code):
    store, transport, s, ends, signins = env
    s.start(1, "hi")
    error = error_from_body(status, json.dumps({"error": {"code": code, "message": f"no ({status})"}}))
    transport.requests[0].push(error)
    await settle()
    (question,) = store.thread(1).messages
    assert question.status == "error" and question.error == {"code": code, "message": f"no ({status})",
                                                             "status": status}
    assert not store.thread(1).streaming and ends == [(1, "error")]
    assert signins == ([error] if status == 401 else [])


async def test_the_server_cannot_be_reached(env):
    store, transport, s, ends, signins = env
    s.start(1, "hi")
    transport.requests[0].push(unreachable("TypeError: Failed to fetch"))
    await settle()
    (question,) = store.thread(1).messages
    assert question.error["code"] == "unreachable" and "Failed to fetch" in question.error["message"]
    assert ends == [(1, "error")] and signins == []


async def test_the_connection_breaks_mid_answer(env):
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    transport.requests[0].push(start(), token("half"), unreachable("TypeError: network error"))
    await settle()
    answer = last(store, 1)
    assert (answer.status, answer.text) == ("error", "half")
    assert answer.error["message"] == "The connection to the server was lost (TypeError: network error)."


# ---- Stop ---------------------------------------------------------------------------------------------------------

async def test_stop_while_connecting(env):
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    await settle()
    s.stop(1)
    assert store.thread(1).stopping
    await settle()
    request = transport.requests[0]
    assert request.aborted and transport.gets == 0  # nothing was saved yet: nothing to ask for
    answer = last(store, 1)
    assert (answer.status, answer.text) == ("interrupted", "") and not store.thread(1).streaming
    assert ends == [(1, "interrupted")] and not s.live and not s.tasks


async def test_stop_while_streaming_shows_the_text_the_server_saved(env, monkeypatch):
    monkeypatch.setattr(reconnect, "SAVED_POLL_S", 0)
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    request = transport.requests[0]
    request.push(start(), token("one "))
    await settle()
    saved = {"id": 11, "role": "assistant", "status": "streaming", "content": "one"}
    transport.saved[1] = [saved]
    s.stop(1)
    await settle()
    assert store.thread(1).streaming and store.thread(1).stopping  # the server is still saving
    assert ends == []  # the end (which reloads the thread, e.g. a merge's) waits for what the server saved
    saved.update(status="interrupted", content="one two")  # tokens that were in flight are in it
    await settle(60)
    answer = last(store, 1)
    assert (answer.status, answer.text, answer.id) == ("interrupted", "one two", 11)
    assert request.aborted and ends == [(1, "interrupted")] and transport.gets >= 2 and not s.tasks


async def test_stop_after_the_end_changes_nothing(env):
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    transport.requests[0].push(WHOLE, END)
    await settle()
    s.stop(1)
    await settle()
    assert last(store, 1).status == "complete" and not transport.requests[0].aborted and not s.tasks


async def test_abort_all_interrupts_every_stream_and_cancel_does_too(env):
    store, transport, s, ends, _ = env
    s.start(1, "a")
    s.start(2, "b")
    transport.requests[0].push(start(), token("x"))
    await settle()
    s.abort_all()
    await settle()
    assert [last(store, t).status for t in (1, 2)] == ["interrupted", "interrupted"]
    assert last(store, 1).text == "x" and sorted(ends) == [(1, "interrupted"), (2, "interrupted")]
    s.start(3, "c")
    await settle()
    s.live[3].task.cancel()
    await settle()
    assert last(store, 3).status == "interrupted" and transport.requests[2].aborted


# ---- several streams ----------------------------------------------------------------------------------------------

async def test_two_streams_at_once_stay_apart(env):
    store, transport, s, ends, _ = env
    assert s.start(1, "a") and s.start(2, "b")
    one, two = transport.requests
    assert s.busy_threads() == {1, 2}
    streams_bytes = {1: start(10, 11) + token("A1 ") + token("A2") + done(11),
                     2: start(20, 21) + token("B1 ") + token("B2") + done(21)}
    rng = random.Random(7)
    pieces = {t: cuts(b, rng) for t, b in streams_bytes.items()}
    while pieces[1] or pieces[2]:
        for tid, request in ((1, one), (2, two)):
            if pieces[tid]:
                request.push(pieces[tid].pop(0))
        await settle(2)
        if pieces[1] and pieces[2]:
            assert store.thread(1).streaming and store.thread(2).streaming
    one.push(END)
    two.push(END)
    await settle()
    assert [(last(store, t).id, last(store, t).text) for t in (1, 2)] == [(11, "A1 A2"), (21, "B1 B2")]
    assert sorted(ends) == [(1, "complete"), (2, "complete")]


async def test_one_stream_per_thread_and_the_cap(env):
    store, transport, s, _, _ = env
    assert s.start(1, "a")
    assert not s.start(1, "again")
    assert store.thread(1).error["code"] == "thread_busy" and len(transport.requests) == 1
    for tid in range(2, 6):
        assert s.start(tid, "x")
    assert not s.start(6, "one too many")
    assert store.thread(6).error["code"] == "too_many_streams" and len(s.live) == 5


async def test_a_merge_streams_under_its_key_and_keeps_its_thread_busy(env):
    store, transport, s, ends, _ = env
    key = merge_key(1)
    assert s.start_merge(key, 1, [1, 2], "custom", "a poem")
    request = transport.requests[0]
    assert (request.url, request.body) == ("/api/threads/1/merge",
                                           {"threads": [1, 2], "format": "custom", "instruction": "a poem"})
    assert not s.start(1, "while merging") and s.busy_threads() == {1}
    request.push(start(None, 30), token("merged"), done(30), END)
    await settle()
    (answer,) = store.thread(key).messages
    assert (answer.kind, answer.merged_ids, answer.id, answer.text) == ("merge", [1, 2], 30, "merged")
    assert ends == [(key, "complete")] and s.start(1, "now")


async def test_a_bug_in_the_router_ends_the_answer_as_an_error(env, monkeypatch):
    store, transport, s, ends, _ = env
    monkeypatch.setattr(store, "on_start", lambda *a: 1 / 0)
    s.start(1, "hi")
    transport.requests[0].push(start())
    await settle()
    assert last(store, 1).error["code"] == "client_error" and transport.requests[0].aborted


def test_the_error_shape_reader():
    error = error_from_body(429, '{"error": {"code": "rate_limited", "message": "Slow down."}}', "Too Many", "7")
    assert (error.status, error.code, error.message, error.retry_after) == (429, "rate_limited", "Slow down.", "7")
    error = error_from_body(502, "<html>bad gateway</html>", "Bad Gateway")
    assert (error.code, error.message) == ("http_502", "The server answered HTTP 502 Bad Gateway.")
    assert isinstance(error, ApiError) and error.as_dict() == {"code": "http_502", "status": 502,
                                                               "message": error.message}


# ---- resume: reconnect after a break, follow a running answer ----------------------------------------------------

def ev(payload: dict, seq: int, mid: int = 11) -> bytes:
    return frame(payload, f"{mid}.{seq}")


def tok(text, seq, mid=11):
    return ev({"type": "token", "text": text}, seq, mid)


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(reconnect, "BACKOFF_S", (0.0,))
    monkeypatch.setattr(reconnect, "SAVED_POLL_S", 0)


async def test_a_break_reconnects_with_the_last_event_id_and_skips_what_it_had(env, fast):
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    first = transport.requests[0]
    first.push(ev({"type": "start", "user_message_id": 10, "message_id": 11}, 1), tok("a ", 2), tok("b ", 3),
               unreachable("TypeError: network error"))
    await settle()
    (again,) = transport.follows
    assert again.url == "/api/threads/1/stream" and again.last_event_id == "11.3"
    assert store.thread(1).streaming and store.thread(1).reconnecting and ends == []
    # the server replays from an earlier point than asked (or a proxy repeats): nothing is shown twice
    again.push(tok("b ", 3) + tok("c ", 4), tok("c ", 4), tok("d", 5) + ev({"type": "done", "message_id": 11}, 6),
               END)
    await settle()
    answer = last(store, 1)
    assert (answer.status, answer.text, answer.id) == ("complete", "a b c d", 11)
    assert not store.thread(1).reconnecting and ends == [(1, "complete")] and not s.live


async def test_a_truncated_stream_with_ids_is_followed_again(env, fast):
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    transport.requests[0].push(ev({"type": "start", "message_id": 11}, 1) + tok("a", 2), END)
    await settle()
    (again,) = transport.follows
    assert again.last_event_id == "11.2"
    again.push(tok("b", 3), ev({"type": "done", "message_id": 11}, 4), END)
    await settle()
    assert (last(store, 1).status, last(store, 1).text) == ("complete", "ab")


@pytest.mark.parametrize("status,text", [("complete", "a b c"), ("interrupted", "a b")])
async def test_204_on_reconnect_shows_the_saved_answer(env, fast, status, text):
    """Nothing runs any more (the answer ended meanwhile, or the server restarted and saved it interrupted)."""
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    transport.requests[0].push(ev({"type": "start", "message_id": 11}, 1), tok("a ", 2), unreachable("reset"))
    await settle()
    transport.saved[1] = [{"id": 11, "role": "assistant", "status": status, "content": text,
                           "finish_reason": "length" if status == "complete" else None}]
    (again,) = transport.follows
    again.status = 204
    again.push(END)
    again.chunks = _no_content(again)
    await settle()
    answer = last(store, 1)
    assert (answer.status, answer.text) == (status, text) and ends == [(1, status)] and not s.live
    assert answer.cut_off == (status == "complete")  # the saved answer's finish reason comes along


def _no_content(request):
    async def chunks():
        request.status = 204
        return
        yield  # noqa: unreachable: an async generator that yields nothing
    return chunks


async def test_reconnects_are_bounded_then_the_answer_ends_as_an_error(env, monkeypatch):
    monkeypatch.setattr(reconnect, "BACKOFF_S", (0.0, 0.001, 0.002))
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    transport.requests[0].push(ev({"type": "start", "message_id": 11}, 1), tok("kept", 2), unreachable("down"))
    for _ in range(reconnect.MAX_RETRIES + 2):
        await asyncio.sleep(0.01)
        for request in transport.follows:
            if not request.read_started or request.queue.empty():
                request.push(unreachable("still down"))
    await settle()
    assert len(transport.follows) == reconnect.MAX_RETRIES
    assert all(r.last_event_id == "11.2" for r in transport.follows)
    answer = last(store, 1)
    assert (answer.status, answer.text) == ("error", "kept") and "lost" in answer.error["message"]
    assert not store.thread(1).reconnecting and ends == [(1, "error")] and not s.live


def test_the_backoff_doubles_up_to_a_cap():
    assert [reconnect.backoff(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert sum(reconnect.backoff(n) for n in range(1, reconnect.MAX_RETRIES + 1)) < 30  # within the server's grace


async def test_a_5xx_of_a_proxy_is_retried_a_404_is_not(env, fast):
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    transport.requests[0].push(ev({"type": "start", "message_id": 11}, 1), tok("x", 2), unreachable("reset"))
    await settle()
    transport.follows[0].push(error_from_body(502, "<html>Bad Gateway</html>", "Bad Gateway"))
    await settle()
    assert len(transport.follows) == 2 and store.thread(1).streaming
    transport.follows[1].push(error_from_body(404, json.dumps({"error": {"code": "not_found", "message": "Gone."}})))
    await settle()
    answer = last(store, 1)
    assert (answer.status, answer.text, answer.error["code"]) == ("error", "x", "not_found")
    assert len(transport.follows) == 2 and not s.live


async def test_stop_during_a_reconnect_pause(env, monkeypatch):
    monkeypatch.setattr(reconnect, "BACKOFF_S", (30.0,))  # the pause would last long: Stop ends it at once
    monkeypatch.setattr(reconnect, "SAVED_POLL_S", 0)
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    transport.requests[0].push(ev({"type": "start", "message_id": 11}, 1), tok("one ", 2), unreachable("reset"))
    await settle()
    assert store.thread(1).reconnecting and transport.follows == []
    transport.saved[1] = [{"id": 11, "role": "assistant", "status": "interrupted", "content": "one two"}]
    s.stop(1)
    await settle(60)
    answer = last(store, 1)
    assert (answer.status, answer.text) == ("interrupted", "one two") and transport.cancels == [1]
    assert transport.follows == [] and ends == [(1, "interrupted")] and not s.live and not s.tasks


async def test_stop_sends_the_cancel_and_aborts(env, fast):
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    transport.requests[0].push(ev({"type": "start", "message_id": 11}, 1), tok("one ", 2))
    await settle()
    transport.saved[1] = [{"id": 11, "role": "assistant", "status": "interrupted", "content": "one two"}]
    s.stop(1)
    await settle(60)
    assert transport.cancels == [1] and transport.requests[0].aborted and transport.follows == []
    assert (last(store, 1).status, last(store, 1).text) == ("interrupted", "one two")


async def test_abort_all_does_not_cancel_or_reconnect(env, fast):
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    transport.requests[0].push(ev({"type": "start", "message_id": 11}, 1), tok("x", 2))
    await settle()
    s.abort_all()
    await settle()
    assert transport.cancels == [] and transport.follows == [] and last(store, 1).status == "interrupted"


def snapshot(store, tid, text, mid=11, kind="chat"):
    store.load_thread({"id": tid, "streaming": True, "messages": [
        {"id": mid - 1, "role": "user", "content": "q"},
        {"id": mid, "role": "assistant", "status": "streaming", "content": text, "kind": kind}]})


async def test_follow_shows_the_snapshot_and_goes_on_after_its_event(env, fast):
    store, transport, s, ends, _ = env
    snapshot(store, 1, "a b ")
    assert s.follow(1, 1, "11.3") and store.thread(1).streaming and store.thread(1).buffer == "a b "
    assert not s.follow(1, 1, "11.3")  # one stream per thread
    (request,) = transport.follows
    assert (request.url, request.last_event_id) == ("/api/threads/1/stream", "11.3")
    request.push(tok("b ", 3) + tok("c", 4), ev({"type": "done", "message_id": 11, "usage": {"x": 1}}, 5), END)
    await settle()
    answer = last(store, 1)
    assert (answer.status, answer.text, answer.usage) == ("complete", "a b c", {"x": 1})
    assert ends == [(1, "complete")] and len(store.thread(1).messages) == 2


async def test_follow_needs_the_streaming_message(env):
    store, transport, s, _, _ = env
    store.load_thread({"id": 1, "messages": [{"id": 11, "role": "assistant", "status": "complete", "content": "x"}]})
    assert not s.follow(1, 1, "11.3") and not s.follow(2, 2, "12.1") and transport.follows == []


async def test_several_panels_reattach_at_once_and_stay_apart(env, fast):
    store, transport, s, ends, _ = env
    for tid in (1, 2, 3):
        snapshot(store, tid, f"T{tid} ", mid=tid * 10 + 1)
        assert s.follow(tid, tid, f"{tid * 10 + 1}.2")
    for tid, request in zip((1, 2, 3), transport.follows):
        request.push(tok(f"more{tid}", 3, tid * 10 + 1), unreachable("blip"))
    await settle()
    assert len(transport.follows) == 6 and all(store.thread(t).reconnecting for t in (1, 2, 3))
    for tid, request in zip((1, 2, 3), transport.follows[3:]):
        assert request.last_event_id == f"{tid * 10 + 1}.3"
        request.push(ev({"type": "done", "message_id": tid * 10 + 1}, 4, tid * 10 + 1), END)
    await settle()
    assert [last(store, t).text for t in (1, 2, 3)] == ["T1 more1", "T2 more2", "T3 more3"]
    assert sorted(ends) == [(1, "complete"), (2, "complete"), (3, "complete")]


async def test_a_merge_reconnects_on_its_thread(env, fast):
    store, transport, s, ends, _ = env
    key = merge_key(1)
    s.start_merge(key, 1, [1, 2], "bullets", None)
    transport.requests[0].push(ev({"type": "start", "message_id": 30}, 1, 30), tok("m", 2, 30), unreachable("x"))
    await settle()
    (again,) = transport.follows
    assert (again.url, again.last_event_id) == ("/api/threads/1/stream", "30.2")
    again.push(tok("m", 2, 30), tok("!", 3, 30), ev({"type": "done", "message_id": 30}, 4, 30), END)
    await settle()
    assert (last(store, key).text, ends) == ("m!", [(key, "complete")])


# ---- the browser's network state: offline drops every stream, online follows again at once -------------------------

async def test_offline_aborts_every_stream_and_shows_it_reconnecting_then_online_follows_at_once(env, monkeypatch):
    monkeypatch.setattr(reconnect, "BACKOFF_S", (30.0,))  # only the online event can end the pause in time
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    snapshot(store, 2, "B0 ", mid=21)
    assert s.follow(2, 2, "21.1")
    first, second = transport.requests
    first.push(ev({"type": "start", "message_id": 11}, 1), tok("a ", 2))
    second.push(tok("B1 ", 2, 21))
    await settle()
    transport.network(False)
    assert first.aborted and second.aborted
    assert store.thread(1).reconnecting and store.thread(2).reconnecting  # at once, before the reads fail
    await settle()
    assert transport.follows == [second] and transport.cancels == [] and ends == []
    assert store.thread(1).streaming and store.thread(2).streaming and not store.thread(1).error
    assert (last(store, 1).status, last(store, 2).status) == ("streaming", "streaming")
    transport.network(True)
    await settle()
    again1, again2 = transport.follows[1:]
    assert (again1.last_event_id, again2.last_event_id) == ("11.2", "21.2")
    again1.push(tok("a ", 2) + tok("b ", 3), ev({"type": "done", "message_id": 11}, 4), END)  # a replay, then more
    again2.push(tok("B1 ", 2, 21), tok("B2", 3, 21), ev({"type": "done", "message_id": 21}, 4, 21), END)
    await settle()
    assert (last(store, 1).status, last(store, 1).text) == ("complete", "a b ")
    assert (last(store, 2).status, last(store, 2).text) == ("complete", "B0 B1 B2")
    assert not store.thread(1).reconnecting and sorted(ends) == [(1, "complete"), (2, "complete")] and not s.live


async def test_online_ends_a_reconnect_pause_at_once(env, monkeypatch):
    monkeypatch.setattr(reconnect, "BACKOFF_S", (30.0,))
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    transport.requests[0].push(ev({"type": "start", "message_id": 11}, 1), tok("x", 2), unreachable("reset"))
    await settle()
    assert store.thread(1).reconnecting and transport.follows == []
    transport.network(True)  # e.g. the wifi came back without the page seeing it go
    await settle()
    (again,) = transport.follows
    assert again.last_event_id == "11.2" and store.thread(1).reconnecting
    again.push(tok("y", 3), END)  # a truncation: followed again after its backoff, not at once
    await settle()
    assert len(transport.follows) == 1 and store.thread(1).reconnecting and store.thread(1).buffer == "xy"
    s.abort_all()
    await settle()
    assert ends == [(1, "interrupted")]


async def test_retries_never_run_out_while_offline(env, monkeypatch):
    monkeypatch.setattr(reconnect, "BACKOFF_S", (0.0, 0.001))
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    transport.requests[0].push(ev({"type": "start", "message_id": 11}, 1), tok("kept ", 2))
    await settle()
    transport.network(False)
    for _ in range(reconnect.MAX_RETRIES * 2):  # every try fails at once, as a fetch does offline
        await asyncio.sleep(0.005)
        for request in transport.follows:
            if not request.read_started or request.queue.empty():
                request.push(unreachable("TypeError: Failed to fetch"))
    await settle()
    assert len(transport.follows) > reconnect.MAX_RETRIES
    assert store.thread(1).streaming and store.thread(1).reconnecting and ends == []
    transport.network(True)
    await settle()
    request = transport.follows[-1]
    request.push(tok("more", 3), ev({"type": "done", "message_id": 11}, 4), END)
    await settle()
    assert (last(store, 1).status, last(store, 1).text) == ("complete", "kept more") and ends == [(1, "complete")]


async def test_a_chat_without_an_event_id_yet_ends_when_the_network_goes(env, fast):
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    await settle()
    transport.network(False)
    await settle()
    assert transport.follows == [] and ends == [(1, "error")] and not store.thread(1).reconnecting


async def streaming_then_offline(env, monkeypatch):
    """Thread 1 has shown its first token when the browser goes offline (long backoff, no saved-answer polling)."""
    monkeypatch.setattr(reconnect, "BACKOFF_S", (30.0,))
    monkeypatch.setattr(reconnect, "SAVED_POLL_S", 0)
    store, transport, s, ends, _ = env
    s.start(1, "hi")
    transport.requests[0].push(ev({"type": "start", "message_id": 11}, 1), tok("one ", 2))
    await settle()
    transport.network(False)
    return store, transport, s, ends


async def test_stop_while_offline_still_cancels(env, monkeypatch):
    store, transport, s, ends = await streaming_then_offline(env, monkeypatch)
    await settle()
    assert store.thread(1).reconnecting
    transport.saved[1] = [{"id": 11, "role": "assistant", "status": "interrupted", "content": "one two"}]
    s.stop(1)
    await settle(60)
    answer = last(store, 1)
    assert transport.cancels == [1] and transport.follows == [] and not s.live
    assert (answer.status, answer.text) == ("interrupted", "one two") and ends == [(1, "interrupted")]


async def test_stop_while_offline_sends_the_cancel_again_once_online(env, monkeypatch):
    store, transport, s, ends = await streaming_then_offline(env, monkeypatch)
    transport.down = True
    s.stop(1)
    await settle(60)
    assert transport.cancels == [1] and store.thread(1).stopping and s.tasks  # waits for the network
    transport.saved[1] = [{"id": 11, "role": "assistant", "status": "interrupted", "content": "one two"}]
    transport.down = False
    transport.network(True)
    await settle(60)
    answer = last(store, 1)
    assert transport.cancels == [1, 1] and transport.follows == [] and not s.tasks
    assert (answer.status, answer.text) == ("interrupted", "one two")
