"""The browser's per-thread store (web/py/store.py), run under CPython."""

from __future__ import annotations

import pathlib
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "web" / "py"))

from store import Message, Store  # noqa: E402


def detail(tid, messages=(), pins=(), **info):
    return {"id": tid, "title": None, "parent_id": None, "anchor": None, "streaming": False, **info,
            "messages": list(messages), "pins": list(pins)}


def api_message(mid, tid, role, content, status="complete"):
    return {"id": mid, "thread_id": tid, "role": role, "content": content, "status": status, "model": None,
            "usage": None, "created_at": "2026-01-01T00:00:00Z"}


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, tid, kind):
        self.calls.append((tid, kind))


def test_load_thread_with_history():
    store = Store()
    store.load_thread(detail(1, [api_message(1, 1, "user", "hi"),
                                 api_message(2, 1, "assistant", "par", "interrupted")], title="T"))
    state = store.get(1)
    assert state.title == "T" and state.loaded
    assert [(m.id, m.role, m.content, m.status) for m in state.messages] == [
        (1, "user", "hi", "complete"), (2, "assistant", "par", "interrupted")]
    assert "messages" not in state.info


def test_history_error_text_is_kept():
    store = Store()
    store.load_thread(detail(1, [{**api_message(2, 1, "assistant", "", "error"), "error": "provider failed"}]))
    assert store.get(1).messages[0].error == {"code": "error", "message": "provider failed"}


def test_full_stream_lifecycle():
    store = Store()
    rec = Recorder()
    store.subscribe(5, rec)
    answer = store.begin_send(5, "question")
    state = store.get(5)
    assert state.streaming and answer.status == "streaming" and answer.id is None
    store.on_start(5, 10, 11)
    assert [m.id for m in state.messages] == [10, 11]
    store.append_tokens(5, ["Hel", "lo"])
    store.append_tokens(5, [" world"])
    assert state.buffer == "Hello world" and answer.text == "Hello world"
    assert state.parts == ["Hel", "lo", " world"]
    store.finish(5, "complete", message_id=11, usage={"total_tokens": 3})
    assert not state.streaming and not state.interrupted and state.error is None
    assert answer.content == "Hello world" and answer.status == "complete" and answer.parts is None
    assert answer.usage == {"total_tokens": 3}
    assert [k for _, k in rec.calls] == ["send", "start", "tokens", "tokens", "end"]


def test_interrupted_keeps_partial():
    store = Store()
    answer = store.begin_send(1, "q")
    store.on_start(1, 1, 2)
    store.append_tokens(1, ["par", "tial"])
    store.finish(1, "interrupted")
    assert answer.content == "partial" and answer.status == "interrupted"
    assert store.get(1).interrupted and not store.get(1).streaming


def test_error_mid_stream():
    store = Store()
    answer = store.begin_send(1, "q")
    store.append_tokens(1, ["x"])
    store.finish(1, "error", error={"code": "upstream_error", "message": "boom"})
    assert answer.status == "error" and answer.content == "x" and answer.error["code"] == "upstream_error"
    assert store.get(1).error == {"code": "upstream_error", "message": "boom"}


def test_fail_before_start_marks_user_message_not_sent():
    store = Store()
    store.begin_send(1, "q")
    store.fail_before_start(1, {"code": "thread_busy", "message": "busy"})
    state = store.get(1)
    assert [(m.role, m.status) for m in state.messages] == [("user", "error")]
    assert state.error["code"] == "thread_busy" and not state.streaming
    # and the thread can send again
    store.begin_send(1, "again")
    assert store.get(1).streaming


def test_cannot_send_twice_while_streaming():
    store = Store()
    store.begin_send(1, "q")
    with pytest.raises(RuntimeError):
        store.begin_send(1, "q2")


def test_finish_rejects_unknown_status():
    store = Store()
    store.begin_send(1, "q")
    with pytest.raises(ValueError):
        store.finish(1, "streaming")


def test_updates_touch_only_their_thread_and_notify_only_its_subscribers():
    store = Store()
    a, b, b2 = Recorder(), Recorder(), Recorder()
    store.subscribe(1, a)
    store.subscribe(2, b)
    store.subscribe(2, b2)
    store.begin_send(1, "to one")
    store.begin_send(2, "to two")
    store.append_tokens(1, ["A0 ", "A1 "])
    store.append_tokens(2, ["B0 "])
    store.append_tokens(1, ["A2 "])
    assert store.get(1).buffer == "A0 A1 A2 " and store.get(2).buffer == "B0 "
    assert {t for t, _ in a.calls} == {1} and {t for t, _ in b.calls} == {2}
    assert b.calls == b2.calls
    store.finish(2, "interrupted")
    assert store.get(1).streaming and not store.get(1).interrupted
    assert [m.content for m in store.get(1).messages] == ["to one", ""]  # still streaming: content untouched
    store.unsubscribe(1, a)
    n = len(a.calls)
    store.append_tokens(1, ["A3 "])
    assert len(a.calls) == n
    assert store.subscribers(1) == []


def test_subscribe_is_idempotent():
    store = Store()
    rec = Recorder()
    store.subscribe(1, rec)
    store.subscribe(1, rec)
    store.begin_send(1, "x")
    assert rec.calls == [(1, "send")]
    store.unsubscribe(1, rec)
    store.unsubscribe(1, rec)  # no error


def test_load_while_streaming_keeps_local_messages():
    store = Store()
    store.begin_send(1, "q")
    store.append_tokens(1, ["abc"])
    pin = {"id": 9, "parent_id": 1, "anchor": {"message_id": 2, "start": 0, "end": 1, "text": "a"}}
    store.load_thread(detail(1, [api_message(1, 1, "user", "q")], pins=[pin], title="new title"))
    state = store.get(1)
    assert state.buffer == "abc" and len(state.messages) == 2
    assert state.title == "new title" and state.pins == [pin]


def test_pins_and_thread_list():
    store = Store()
    seen = []
    store.subscribe_list(lambda: seen.append(list(store.thread_list)))
    store.set_thread_list([{"id": 1, "parent_id": None}])
    store.upsert_listed_thread({"id": 2, "parent_id": None})
    store.upsert_listed_thread({"id": 3, "parent_id": 2})  # a pin: not in the sidebar
    assert [t["id"] for t in store.thread_list] == [2, 1]
    rec = Recorder()
    store.subscribe(2, rec)
    pin = {"id": 3, "parent_id": 2, "anchor": {"message_id": 5, "start": 1, "end": 4, "text": "abc"}}
    store.add_pin(2, pin)
    assert store.get(2).pins == [pin] and store.get(3).anchor == pin["anchor"]
    assert rec.calls == [(2, "pins")]
    store.remove_thread(2)
    assert [t["id"] for t in store.thread_list] == [1] and store.get(2) is None
    assert len(seen) == 3  # the pin did not notify the list


def test_message_keys_are_unique_and_stable():
    store = Store()
    answer = store.begin_send(1, "q")
    key = answer.key
    store.on_start(1, 1, 2)
    assert answer.key == key
    keys = [m.key for m in store.get(1).messages] + [Message("user").key]
    assert len(set(keys)) == len(keys)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, 2, 3]), st.text(max_size=4)), max_size=40))
def test_interleaved_streams_never_mix(ops):
    store = Store()
    for tid in (1, 2, 3):
        store.begin_send(tid, f"q{tid}")
    expected = {1: [], 2: [], 3: []}
    for tid, text in ops:
        store.append_tokens(tid, [f"{tid}:{text}|"])
        expected[tid].append(f"{tid}:{text}|")
    for tid in (1, 2, 3):
        store.finish(tid, "complete")
        assert store.get(tid).messages[-1].content == "".join(expected[tid])


def test_begin_follow_takes_the_snapshot_as_the_streaming_answer():
    store = Store()
    store.load_thread({"id": 1, "streaming": True, "messages": [
        {"id": 10, "role": "user", "content": "q"},
        {"id": 11, "role": "assistant", "status": "streaming", "content": "so far "}]})
    key = store.thread(1).messages[1].key
    assert store.begin_follow(1, 10) is None  # not a streaming message
    answer = store.begin_follow(1, 11)
    assert answer.key == key and store.thread(1).streaming and answer.text == "so far "
    assert store.begin_follow(1, 11) is None  # already streaming
    store.set_reconnecting(1, True)
    assert store.thread(1).reconnecting
    store.append_tokens(1, ["more"])
    store.finish(1, "complete")
    assert (answer.status, answer.text) == ("complete", "so far more") and not store.thread(1).reconnecting
    store.set_reconnecting(1, True)  # nothing streams: nothing to mark
    assert not store.thread(1).reconnecting
