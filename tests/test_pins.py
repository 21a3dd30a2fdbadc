"""Pins: sub-threads anchored to a span of an assistant answer, and the context the model receives for them."""

from __future__ import annotations

import pytest

from server.context import PIN_NOTE
from tests.fake_upstream import Script

ANSWER = "Paris is the capital of France. It is known for the Eiffel Tower."


async def thread_with_answer(app, fake, answer: str = ANSWER, question: str = "Tell me about Paris"):
    thread = await app.new_thread(title="Paris")
    fake.push(Script(tokens=[answer]))
    events = await app.chat(thread["id"], question)
    return thread, events[0]["message_id"]


async def test_pin_is_anchored_and_listed(app, fake):
    thread, answer_id = await thread_with_answer(app, fake)
    start = ANSWER.index("Eiffel")
    pin = await app.new_thread(parent_id=thread["id"],
                               anchor={"message_id": answer_id, "start": start, "end": start + 12})
    assert pin["parent_id"] == thread["id"]
    assert pin["anchor"] == {"message_id": answer_id, "start": start, "end": start + 12, "text": "Eiffel Tower"}
    detail = await app.thread(thread["id"])
    assert [p["id"] for p in detail["pins"]] == [pin["id"]]
    listed = (await (await app.client.get("/api/threads")).json())["threads"]
    assert pin["id"] not in [t["id"] for t in listed]  # pins are not top-level threads


async def test_pin_context_sent_to_the_model(app, fake):
    thread, answer_id = await thread_with_answer(app, fake)
    fake.push(Script(tokens=["later"]))
    await app.chat(thread["id"], "and later?")  # after the anchor: must not reach the pin's context
    pin = await app.new_thread(parent_id=thread["id"], anchor={"message_id": answer_id, "start": 0, "end": 5})
    fake.push(Script(tokens=["Paris is big."]))
    await app.chat(pin["id"], "How big?")
    assert fake.records[-1].messages == [
        {"role": "user", "content": "Tell me about Paris"},
        {"role": "assistant", "content": ANSWER},
        {"role": "system", "content": PIN_NOTE.format(text="Paris")},
        {"role": "user", "content": "How big?"},
    ]


async def test_nested_pins_carry_every_ancestor(app, fake):
    thread, answer_id = await thread_with_answer(app, fake)
    pin = await app.new_thread(parent_id=thread["id"], anchor={"message_id": answer_id, "start": 0, "end": 5})
    fake.push(Script(tokens=["About 2 million people live in Paris."]))
    pin_events = await app.chat(pin["id"], "How big?")
    pin_answer = pin_events[0]["message_id"]
    nested = await app.new_thread(parent_id=pin["id"], anchor={"message_id": pin_answer, "start": 6, "end": 15})
    assert nested["anchor"]["text"] == "2 million"
    await app.idle()  # the main thread's summary is written
    fake.push(Script(tokens=["ok"]))
    await app.chat(nested["id"], "Is that the metro area?")
    assert fake.records[-1].messages == [
        # further ancestors are represented by their summaries; the parent by its messages up to the anchor
        {"role": "system", "content": 'Summary of the earlier conversation "Paris":\nSummary of 2 new messages.'},
        {"role": "system", "content": PIN_NOTE.format(text="Paris")},
        {"role": "user", "content": "How big?"},
        {"role": "assistant", "content": "About 2 million people live in Paris."},
        {"role": "system", "content": PIN_NOTE.format(text="2 million")},
        {"role": "user", "content": "Is that the metro area?"},
    ]
    # deleting the main thread deletes its pins, nested ones included
    assert (await app.client.delete(f"/api/threads/{thread['id']}")).status == 204
    assert app.rows("SELECT id FROM threads") == []
    assert app.rows("SELECT id FROM messages") == []


async def test_pins_and_main_thread_stream_at_once(app, fake):
    import asyncio

    thread, answer_id = await thread_with_answer(app, fake)
    pins = [await app.new_thread(parent_id=thread["id"], anchor={"message_id": answer_id, "start": 0, "end": 5})
            for _ in range(2)]
    ids = [thread["id"]] + [p["id"] for p in pins]
    results = await asyncio.gather(*(
        app.chat(tid, f"[[tokens=15 delay_ms=20 prefix=T{tid}x]]") for tid in ids))
    for tid, events in zip(ids, results):
        text = "".join(e["text"] for e in events if e["type"] == "token")
        assert text == "".join(f"T{tid}x{i} " for i in range(15))
    sends = [r.send_times for r in fake.records[-3:]]
    assert max(s[0] for s in sends) < min(s[-1] for s in sends)  # the three streams overlapped


@pytest.mark.parametrize(
    "anchor",
    [
        {"message_id": "USER", "start": 0, "end": 3},  # a user message cannot be pinned
        {"message_id": "ANSWER", "start": 5, "end": 5},  # empty span
        {"message_id": "ANSWER", "start": -1, "end": 3},
        {"message_id": "ANSWER", "start": 0, "end": len(ANSWER) + 1},  # past the end
        {"message_id": "ANSWER", "start": 0},  # missing end
        {"message_id": 999_999, "start": 0, "end": 3},  # unknown message
        "not an object",
    ],
)
async def test_wrong_anchors_get_422_and_create_nothing(app, fake, anchor):
    thread, answer_id = await thread_with_answer(app, fake)
    if isinstance(anchor, dict):
        user_id = answer_id - 1
        anchor = {**anchor, "message_id": {"USER": user_id, "ANSWER": answer_id}.get(anchor["message_id"],
                                                                                   anchor["message_id"])}
    resp = await app.post("/api/threads", {"parent_id": thread["id"], "anchor": anchor})
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "invalid_anchor"
    assert len(app.rows("SELECT id FROM threads")) == 1


async def test_anchor_must_belong_to_the_parent(app, fake):
    _, answer_id = await thread_with_answer(app, fake)
    other = await app.new_thread()
    resp = await app.post("/api/threads", {"parent_id": other["id"],
                                           "anchor": {"message_id": answer_id, "start": 0, "end": 3}})
    assert resp.status == 422
