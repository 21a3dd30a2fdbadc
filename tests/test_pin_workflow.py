"""The pin workflow: background titles / starter questions / summaries, context within a budget, merge, export."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
from httpx_sse import aconnect_sse

from server.context import PIN_NOTE
from server.keys import BUDGET
from server.utility import FIXED_SUGGESTIONS
from tests.fake_upstream import Script


async def chat_text(app, thread_id: int, message: str) -> tuple[int, str]:
    events = await app.chat(thread_id, message)
    assert events[-1]["type"] == "done", events[-1]
    return events[0]["message_id"], "".join(e["text"] for e in events if e["type"] == "token")


async def test_title_starter_questions_and_summary_land_after_an_answer(app, fake):
    thread = await app.new_thread()
    fake.push(Script(tokens=["Paris ", "is ", "the ", "capital."]))
    answer_id, _ = await chat_text(app, thread["id"], "What is the capital of France?")
    assert (await app.thread(thread["id"]))["title"] == "What is the capital of France?"  # the plain title at once
    await app.idle()
    detail = await app.thread(thread["id"])
    assert detail["title"] == "Scripted Title"
    assert detail["summary"] == "Summary of 2 new messages."
    listed = (await (await app.client.get("/api/threads")).json())["threads"]
    assert listed[0]["title"] == "Scripted Title"

    pin = await app.new_thread(parent_id=thread["id"], anchor={"message_id": answer_id, "start": 0, "end": 5})
    assert pin["suggestions"] == FIXED_SUGGESTIONS  # returned at once, before the model answers
    await app.idle()
    generated = (await app.thread(pin["id"]))["suggestions"]
    assert generated == FIXED_SUGGESTIONS + [
        "What does this passage mean?", "Where does it come from?", "How is it used?"]
    prompts = [r.messages[-1]["content"] for r in fake.utility_records]
    assert any('"Paris"' in p and "questions" in p for p in prompts)


async def test_a_failing_utility_call_leaves_chat_working_and_the_plain_title(app, fake):
    fake.push_utility(*[Script(status=500) for _ in range(4)])
    thread = await app.new_thread()
    fake.push(Script(tokens=["fine"]))
    await chat_text(app, thread["id"], "Tell me about   tides and the moon")
    await app.idle()
    detail = await app.thread(thread["id"])
    assert detail["title"] == "Tell me about tides and the moon" and detail["summary"] is None
    fake.push(Script(tokens=["still ", "fine"]))
    _, text = await chat_text(app, thread["id"], "more")
    assert text == "still fine"


async def test_junk_titles_are_refused_and_not_logged(app, fake, caplog):
    fake.push_utility(Script(tokens=["Sure! Here is a title for you:\n\nThe Tides\n\nI hope it helps. " * 3]))
    fake.push_utility(Script(tokens=["Sure! Here is a title for you:\n\nThe Tides\n\nI hope it helps. " * 3]))
    thread = await app.new_thread()
    fake.push(Script(tokens=["answer"]))
    with caplog.at_level(logging.DEBUG, logger="server"):
        await chat_text(app, thread["id"], "What causes tides?")
        await app.idle()
    assert (await app.thread(thread["id"]))["title"] == "What causes tides?"
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("server"))
    assert "looked like junk" in ours  # the refusal is logged, the model's words are not
    assert "The Tides" not in ours and "hope it helps" not in ours


async def timed_chat(app, thread_id: int, message: str) -> list[float]:
    arrivals = []
    async with app.http() as http:
        async with aconnect_sse(http, "POST", f"/api/threads/{thread_id}/chat", json={"message": message}) as src:
            async for sse in src.aiter_sse():
                if json.loads(sse.data)["type"] == "token":
                    arrivals.append(time.time())
    return arrivals


async def test_background_work_does_not_delay_a_chat_on_another_thread(app, fake):
    busy, other = await app.new_thread(), await app.new_thread()

    async def lag(message: str) -> float:
        arrivals = await timed_chat(app, other["id"], message)
        sent = fake.records[-1].send_times
        return max(received - s for received, s in zip(arrivals, sent))

    baseline = await lag("[[tokens=20 delay_ms=30 prefix=a]]")
    await app.idle()
    fake.push_utility(*[Script(tokens=["slow"], first_delay=1.0) for _ in range(2)])
    fake.push(Script(tokens=["done"]))
    await chat_text(app, busy["id"], "start the background work")  # title + summary, each 1 s
    during = await lag("[[tokens=20 delay_ms=30 prefix=b]]")
    assert len([r for r in fake.utility_records if r.outcome == "open"]) >= 1  # they overlapped the chat
    assert during < baseline + 0.05
    await app.idle()


def middle_is_newest_suffix(sent: list[dict], history: list[dict]) -> bool:
    return 0 < len(sent) < len(history) and history[-len(sent):] == sent


async def test_long_thread_over_budget_sends_summary_and_newest_messages(make_app, settings, fake):
    app = await make_app(settings, context_budget=300)
    thread = await app.new_thread(title="Long")
    history = []
    for i in range(6):
        words = " ".join(f"answer{i}-{j}" for j in range(30))
        fake.push(Script(tokens=[words]))
        question = f"question {i} " + " ".join(f"q{i}-{j}" for j in range(10))
        await chat_text(app, thread["id"], question)
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": words}]
    await app.idle()
    summary = (await app.thread(thread["id"]))["summary"]
    assert summary == "Summary of 2 new messages."  # rolling: the last update covered the last exchange
    fake.push(Script(tokens=["ok"]))
    await chat_text(app, thread["id"], "and now?")
    sent = fake.records[-1].messages
    assert sent[0] == {"role": "system", "content": f'Summary of the earlier conversation "Long":\n{summary}'}
    assert sent[-1] == {"role": "user", "content": "and now?"}
    assert middle_is_newest_suffix(sent[1:-1], history)
    budget = app.client.server.app[BUDGET]
    assert budget.size(sent) <= 300


async def test_pin_of_a_pin_of_a_pin_gets_ancestor_summaries_in_order(app, fake):
    main = await app.new_thread(title="Main")
    fake.push(Script(tokens=["Alpha beta gamma delta."]))
    a0, _ = await chat_text(app, main["id"], "Start")
    p1 = await app.new_thread(title="P1", parent_id=main["id"], anchor={"message_id": a0, "start": 0, "end": 5})
    fake.push(Script(tokens=["One two three four."]))
    a1, _ = await chat_text(app, p1["id"], "About alpha?")
    p2 = await app.new_thread(title="P2", parent_id=p1["id"], anchor={"message_id": a1, "start": 4, "end": 7})
    fake.push(Script(tokens=["Red green blue."]))
    a2, _ = await chat_text(app, p2["id"], "About two?")
    p3 = await app.new_thread(title="P3", parent_id=p2["id"], anchor={"message_id": a2, "start": 4, "end": 9})
    await app.idle()
    fake.push(Script(tokens=["ok"]))
    await chat_text(app, p3["id"], "About green?")
    assert fake.records[-1].messages == [
        {"role": "system", "content": 'Summary of the earlier conversation "Main":\nSummary of 2 new messages.'},
        {"role": "system", "content": PIN_NOTE.format(text="Alpha")},
        {"role": "system", "content": 'Summary of the earlier conversation "P1":\nSummary of 2 new messages.'},
        {"role": "system", "content": PIN_NOTE.format(text="two")},
        {"role": "user", "content": "About two?"},
        {"role": "assistant", "content": "Red green blue."},
        {"role": "system", "content": PIN_NOTE.format(text="green")},
        {"role": "user", "content": "About green?"},
    ]


async def small_tree(app, fake):
    main = await app.new_thread(title="Trip")
    fake.push(Script(tokens=["Go to Lyon. Eat well."]))
    a0, _ = await chat_text(app, main["id"], "Where should I go?")
    pin = await app.new_thread(title="Lyon", parent_id=main["id"], anchor={"message_id": a0, "start": 6, "end": 10})
    fake.push(Script(tokens=["Lyon is in France."]))
    a1, _ = await chat_text(app, pin["id"], "Where is Lyon?")
    nested = await app.new_thread(title="France", parent_id=pin["id"], anchor={"message_id": a1, "start": 11, "end": 17})
    fake.push(Script(tokens=["France is in Europe."]))
    await chat_text(app, nested["id"], "And France?")
    fake.push(Script(tokens=["Yes, also Paris."]))
    await chat_text(app, main["id"], "Anything else?")
    await app.idle()
    return main, pin, nested


async def merge(app, thread_id: int, body: dict) -> list[dict]:
    events = []
    async with app.http(timeout=30) as http:
        async with aconnect_sse(http, "POST", f"/api/threads/{thread_id}/merge", json=body) as src:
            assert src.response.status_code == 200
            async for sse in src.aiter_sse():
                events.append(json.loads(sse.data))
    return events


async def test_merge_streams_and_is_saved_with_its_kind_and_threads(app, fake):
    main, pin, nested = await small_tree(app, fake)
    fake.push(Script(tokens=["- Lyon ", "is ", "in ", "France"], delay=0.01))
    events = await merge(app, main["id"], {"threads": [pin["id"], nested["id"]], "format": "bullets"})
    assert [e["type"] for e in events] == ["start"] + ["token"] * 4 + ["done"]
    assert events[0]["kind"] == "merge" and events[0]["user_message_id"] is None
    prompt = fake.records[-1].messages[-1]["content"]
    assert "bulleted list" in prompt
    assert prompt.index("Where is Lyon?") < prompt.index("And France?") and "Where should I go?" not in prompt
    detail = await app.thread(main["id"])
    saved = detail["messages"][-1]
    assert (saved["kind"], saved["merged_ids"], saved["content"], saved["status"]) == (
        "merge", sorted([pin["id"], nested["id"]]), "- Lyon is in France", "complete")


async def test_merge_can_be_stopped_and_keeps_the_partial_text(app, fake):
    main, pin, _ = await small_tree(app, fake)
    fake.push(Script(tokens=[f"m{i} " for i in range(300)], delay=0.01))
    events = []
    async with app.http(timeout=30) as http:
        async with aconnect_sse(http, "POST", f"/api/threads/{main['id']}/merge",
                                json={"threads": [main["id"], pin["id"]], "format": "summary"}) as src:
            async for sse in src.aiter_sse():
                events.append(json.loads(sse.data))
                if events[-1]["type"] == "token" and len(events) == 6:
                    assert (await http.post(f"/api/threads/{main['id']}/cancel")).json() == {"cancelled": True}
    assert events[-1]["type"] == "interrupted"
    text = "".join(e["text"] for e in events if e["type"] == "token")
    saved = (await app.thread(main["id"]))["messages"][-1]
    assert (saved["kind"], saved["status"], saved["content"]) == ("merge", "interrupted", text)


async def test_transcript_merge_needs_no_model(app, fake):
    main, pin, nested = await small_tree(app, fake)
    before = len(fake.records)
    events = await merge(app, main["id"], {"threads": [main["id"], pin["id"], nested["id"]], "format": "transcript"})
    assert len(fake.records) == before
    text = "".join(e["text"] for e in events if e["type"] == "token")
    order = ["Where should I go?", "Go to Lyon.", "Where is Lyon?", "Lyon is in France.", "And France?",
             "France is in Europe.", "Anything else?", "Yes, also Paris."]
    assert [text.index(s) for s in order] == sorted(text.index(s) for s in order)
    assert events[-1]["type"] == "done"


async def test_merge_rejects_foreign_ids_and_bad_formats_writing_nothing(app, fake):
    main, pin, _ = await small_tree(app, fake)
    stranger = await app.new_thread()
    count = len(app.rows("SELECT id FROM messages"))
    for body, code in [
        ({"threads": [pin["id"], stranger["id"]], "format": "summary"}, "foreign_threads"),
        ({"threads": [pin["id"]], "format": "poem"}, "invalid_format"),
        ({"threads": [], "format": "summary"}, "invalid_threads"),
        ({"threads": [pin["id"]], "format": "custom"}, "invalid_instruction"),
    ]:
        resp = await app.post(f"/api/threads/{main['id']}/merge", body)
        assert resp.status == 422 and (await resp.json())["error"]["code"] == code
    assert len(app.rows("SELECT id FROM messages")) == count


def shape(node: dict) -> dict:
    """An exported tree without ids: what must survive export + import."""
    return {
        "title": node["title"], "summary": node["summary"],
        "anchor": {k: v for k, v in node["anchor"].items() if k != "message_id"} if node["anchor"] else None,
        "anchor_index": node.get("_anchor_index"),
        "messages": [{k: v for k, v in m.items() if k != "id"} for m in node["messages"]],
        "pins": [shape(p) for p in node["pins"]],
    }


def index_anchors(node: dict) -> dict:
    positions = {m["id"]: i for i, m in enumerate(node["messages"])}
    for pin in node["pins"]:
        pin["_anchor_index"] = positions[pin["anchor"]["message_id"]]
        index_anchors(pin)
    return node


async def test_export_then_import_gives_an_equal_tree_and_readable_markdown(app, fake):
    main, pin, nested = await small_tree(app, fake)
    exported = await (await app.client.get(f"/api/threads/{main['id']}/export?format=json")).json()
    resp = await app.post("/api/import", exported)
    assert resp.status == 201
    copy = await resp.json()
    assert copy["id"] != main["id"]
    again = await (await app.client.get(f"/api/threads/{copy['id']}/export?format=json")).json()
    assert shape(index_anchors(again["thread"])) == shape(index_anchors(exported["thread"]))
    assert again["thread"]["pins"][0]["id"] != pin["id"]

    resp = await app.client.get(f"/api/threads/{main['id']}/export?format=md")
    assert resp.headers["Content-Type"].startswith("text/markdown")
    markdown = await resp.text()
    order = ["# Trip", "Where should I go?", "Go to Lyon. Eat well.", "## 📌 Lyon", "> Lyon", "Where is Lyon?",
             "Lyon is in France.", "### 📌 France", "And France?", "France is in Europe.", "Anything else?",
             "Yes, also Paris."]
    positions = [markdown.index(s) for s in order]
    assert positions == sorted(positions)
    for message in ["Where should I go?", "Where is Lyon?", "And France?", "France is in Europe.", "Anything else?"]:
        assert markdown.count(message) == 1


async def test_import_rejects_what_is_not_an_export(app):
    for body in [{"format": "other"}, {"format": "pinchat-export", "version": 1, "thread": {"messages": "x"}},
                 {"format": "pinchat-export", "version": 1,
                  "thread": {"messages": [], "pins": [{"messages": [], "anchor": {"message_id": 5}}]}}]:
        resp = await app.post("/api/import", body)
        assert resp.status == 422 and (await resp.json())["error"]["code"] == "invalid_export"
    assert app.rows("SELECT id FROM threads") == []


async def test_merge_of_a_large_tree_fits_the_budget(make_app, settings, fake):
    app = await make_app(settings, context_budget=300)
    main = await app.new_thread(title="Big")
    for i in range(4):
        fake.push(Script(tokens=[" ".join(f"word{i}-{j}" for j in range(80))]))
        await chat_text(app, main["id"], f"question {i}")
    await app.idle()
    fake.push(Script(tokens=["merged"]))
    events = await merge(app, main["id"], {"threads": [main["id"]], "format": "summary"})
    assert events[-1]["type"] == "done"
    sent = fake.records[-1].messages
    budget = app.client.server.app[BUDGET]
    assert budget.size(sent) <= 300 and sent[-1]["content"].endswith("…")
