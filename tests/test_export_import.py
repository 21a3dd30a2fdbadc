"""POST /api/import takes back exactly the trees the rest of the API could have built, and every export.

Each refused import answers 422 with the code POST /api/threads gives the same mistake, and writes nothing.
"""

from __future__ import annotations

import asyncio
import copy
import sqlite3

import pytest

from server.schemas import MAX_PIN_DEPTH
from tests.fake_upstream import Script
from tests.test_pin_workflow import index_anchors, shape

ANSWER = "Lyon is in France, on the Rhône."


async def exported_pin_tree(app, fake) -> dict:
    """The JSON export of a conversation (a question, ANSWER) with one pin on "Lyon"."""
    main = await app.new_thread(title="Trip")
    fake.push(Script(tokens=[ANSWER]))
    answer_id = (await app.chat(main["id"], "Where is Lyon?"))[0]["message_id"]
    await app.new_thread(parent_id=main["id"], anchor={"message_id": answer_id, "start": 0, "end": 4})
    await app.idle()
    return await export(app, main["id"])


async def export(app, thread_id: int) -> dict:
    resp = await app.client.get(f"/api/threads/{thread_id}/export?format=json")
    assert resp.status == 200
    return await resp.json()


def thread_count(app) -> int:
    return len(app.rows("SELECT id FROM threads"))


async def assert_refused(app, document: dict, code: str, says: str) -> None:
    before = thread_count(app), len(app.rows("SELECT id FROM messages"))
    resp = await app.post("/api/import", document)
    body = await resp.json()
    assert resp.status == 422, body
    assert body["error"]["code"] == code and says in body["error"]["message"], body
    assert (thread_count(app), len(app.rows("SELECT id FROM messages"))) == before


async def test_import_refuses_a_pin_on_a_user_message(app, fake):
    document = await exported_pin_tree(app, fake)
    root = document["thread"]
    question = root["messages"][0]
    assert question["role"] == "user"
    root["pins"][0]["anchor"] = {"message_id": question["id"], "start": 0, "end": 5, "text": question["content"][:5]}
    await assert_refused(app, document, "invalid_anchor", "must point at an assistant message of the parent")


@pytest.mark.parametrize(("span", "says"), [
    ({"start": 4, "end": 0, "text": ""}, "start < end"),
    ({"start": 4, "end": 4, "text": ""}, "start < end"),
    ({"start": 0, "end": len(ANSWER) + 1, "text": ANSWER + "!"}, "must lie inside the message"),
    ({"start": 0, "end": 4, "text": "Nice"}, "must be the message's characters [0, 4)"),
    ({"start": 0, "end": 5, "text": "Lyon"}, "must be the message's characters [0, 5)"),
], ids=["start-after-end", "empty", "past-the-end", "other-words", "text-shorter-than-span"])
async def test_import_refuses_an_anchor_the_pin_route_would_refuse(app, fake, span, says):
    document = await exported_pin_tree(app, fake)
    document["thread"]["pins"][0]["anchor"].update(span)
    await assert_refused(app, document, "invalid_anchor", says)


async def test_anchor_offsets_are_code_points(app, fake):
    document = await exported_pin_tree(app, fake)
    start = ANSWER.index("Rhône")
    document["thread"]["pins"][0]["anchor"].update(start=start, end=start + 5, text="Rhône")
    resp = await app.post("/api/import", document)
    assert resp.status == 201, await resp.text()


async def test_import_refuses_duplicate_message_ids(app, fake):
    document = await exported_pin_tree(app, fake)
    root = document["thread"]
    root["messages"].append({**root["messages"][0], "content": "again"})
    await assert_refused(app, document, "invalid_export", "is used twice")
    in_another_thread = copy.deepcopy(root)
    del in_another_thread["messages"][-1]
    in_another_thread["pins"][0]["messages"] = [{**in_another_thread["messages"][1]}]
    await assert_refused(app, {**document, "thread": in_another_thread}, "invalid_export", "is used twice")


async def test_import_refuses_duplicate_thread_ids(app, fake):
    """A merge names the threads it merged by id: two threads with one id would make it name the wrong one."""
    document = await exported_pin_tree(app, fake)
    document["thread"]["pins"][0]["id"] = document["thread"]["id"]
    await assert_refused(app, document, "invalid_export", "thread ids are unique")


@pytest.mark.parametrize("title,stored", [("Line one\nLine two", "Line one Line two"), ("tab\there", "tab here"),
                                          ("bell\x07", "bell"), ("x" * 201, "x" * 200)])
async def test_import_makes_a_title_one_line_as_post_threads_keeps_them(app, fake, title, stored):
    """An export from a server before titles were one line still imports: its title is flattened, not refused."""
    document = await exported_pin_tree(app, fake)
    document["thread"]["pins"][0]["title"] = title
    resp = await app.post("/api/import", document)
    assert resp.status == 201, await resp.text()
    copy_ = await export(app, (await resp.json())["id"])
    assert copy_["thread"]["pins"][0]["title"] == stored


async def test_import_trims_titles_and_a_blank_one_is_no_title(app, fake):
    document = await exported_pin_tree(app, fake)
    document["thread"]["title"] = "  Trip  "
    document["thread"]["pins"][0]["title"] = "   "
    resp = await app.post("/api/import", document)
    assert resp.status == 201, await resp.text()
    copy_ = await export(app, (await resp.json())["id"])
    assert (copy_["thread"]["title"], copy_["thread"]["pins"][0]["title"]) == ("Trip", None)


async def test_a_stored_title_that_is_not_one_line_exports_flattened_and_imports(app, fake):
    document = await exported_pin_tree(app, fake)
    root_id = document["thread"]["id"]
    conn = sqlite3.connect(app.settings.db)  # as a server from before titles were one line could have stored it
    with conn:
        conn.execute("UPDATE threads SET title = ? WHERE id = ?", ("Line one\n  Line two\x07 " + "x" * 300, root_id))
    conn.close()
    exported = await export(app, root_id)
    assert exported["thread"]["title"] == ("Line one Line two " + "x" * 300)[:200]
    resp = await app.post("/api/import", exported)
    assert resp.status == 201, await resp.text()


async def test_a_chain_at_the_pin_cap_exports_and_imports_back_and_one_more_level_is_refused(make_app, settings, fake):
    app = await make_app(settings, chats_per_minute=1000)
    thread = await app.new_thread(title="Deep")
    for level in range(MAX_PIN_DEPTH + 1):
        answer_id = (await app.chat(thread["id"], f"level {level}"))[0]["message_id"]
        if level < MAX_PIN_DEPTH:
            thread = await app.new_thread(parent_id=thread["id"], anchor={"message_id": answer_id, "start": 0, "end": 5})
    await app.idle()
    root_id = app.rows("SELECT id FROM threads WHERE parent_id IS NULL")[0]["id"]
    exported = await export(app, root_id)

    resp = await app.post("/api/import", exported)
    assert resp.status == 201, await resp.text()
    again = await export(app, (await resp.json())["id"])
    assert shape(index_anchors(again["thread"])) == shape(index_anchors(copy.deepcopy(exported["thread"])))

    count = thread_count(app)
    resp = await app.post("/api/threads", {"parent_id": thread["id"],
                                           "anchor": {"message_id": answer_id, "start": 0, "end": 5}})
    body = await resp.json()
    assert resp.status == 422 and body["error"]["code"] == "invalid_pin", body
    assert f"at most {MAX_PIN_DEPTH} levels" in body["error"]["message"]
    assert thread_count(app) == count

    deepest = exported["thread"]
    for _ in range(MAX_PIN_DEPTH):
        deepest = deepest["pins"][0]
    answer = deepest["messages"][-1]
    deepest["pins"].append({"id": None, "title": None, "summary": None, "messages": [], "pins": [],
                            "anchor": {"message_id": answer["id"], "start": 0, "end": 5, "text": answer["content"][:5]}})
    await assert_refused(app, exported, "invalid_pin", f"pins nest at most {MAX_PIN_DEPTH} levels")


async def test_imported_answers_do_not_count_against_the_chats_per_minute(make_app, settings, fake):
    """The per-minute limit counts answers begun here: importing conversations (a whole export, many answers at
    once) leaves the user free to chat."""
    app = await make_app(settings, chats_per_minute=2)
    document = await exported_pin_tree(app, fake)  # one answer begun: one of the two a minute
    for _ in range(3):
        assert (await app.post("/api/import", document)).status == 201
    thread = await app.new_thread()
    fake.push(Script(tokens=["still ", "free"]))
    assert (await app.chat(thread["id"], "and now?"))[-1]["type"] == "done"
    resp = await app.post(f"/api/threads/{thread['id']}/chat", {"message": "one too many"})
    assert resp.status == 429 and (await resp.json())["error"]["code"] == "rate_limited"  # the limit still holds


async def test_an_export_over_the_usual_body_limit_imports_back(app, fake):
    """Exports grow with the conversation: one of ~1.5 MB (over the 1 MiB of every other body) imports back whole,
    while a chat body of that size is still refused."""
    document = await exported_pin_tree(app, fake)
    long_answer = "word " * 60_000  # 300 KB each
    root = document["thread"]
    next_id = 1 + max(m["id"] for m in root["messages"] + root["pins"][0]["messages"])
    for i in range(5):
        root["messages"] += [{**root["messages"][0], "id": next_id + 2 * i, "content": f"question {i}"},
                             {**root["messages"][1], "id": next_id + 2 * i + 1, "content": long_answer}]
    resp = await app.post("/api/import", document)
    assert resp.status == 201, await resp.text()
    imported = (await (await app.client.get(f"/api/threads/{(await resp.json())['id']}")).json())["messages"]
    assert len(imported) == 12 and imported[-1]["content"] == long_answer
    thread = await app.new_thread()
    too_big = await app.post(f"/api/threads/{thread['id']}/chat", {"message": long_answer * 4})
    assert too_big.status == 413 and (await too_big.json())["error"]["code"] == "request_too_large"


async def test_imports_take_turns_and_a_stalled_upload_loses_its_turn(app, fake, monkeypatch):
    """A process imports IMPORTS_AT_ONCE at a time (parsing one takes many times its bytes): uploads that stall
    hold the turns, another import waits and then gets 503 import_busy with Retry-After; a stalled upload gets 408
    import_too_slow once its time is up, which frees its turn."""
    from server import routes

    document = await exported_pin_tree(app, fake)
    monkeypatch.setattr(routes, "IMPORT_WAIT", 0.5)
    monkeypatch.setattr(routes, "IMPORT_READ_SECONDS", 2.0)
    server = app.client.server
    stalled = []
    for _ in range(routes.IMPORTS_AT_ONCE):
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(f"POST /api/import HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                     f"Authorization: Bearer {app.token}\r\nContent-Type: application/json\r\n"
                     "Content-Length: 5000\r\n\r\n".encode() + b'{"threads": [')
        await writer.drain()
        stalled.append((reader, writer))
    await asyncio.sleep(0.3)  # both uploads hold a turn
    before = thread_count(app)
    resp = await app.post("/api/import", document)
    assert resp.status == 503, await resp.text()
    assert (await resp.json())["error"]["code"] == "import_busy" and resp.headers["Retry-After"] == "60"
    for reader, writer in stalled:
        answer = await asyncio.wait_for(reader.read(65536), 5)
        assert answer.split(b"\r\n")[0].endswith(b" 408 Request Timeout"), answer[:200]
        assert b'"import_too_slow"' in answer
        writer.close()
    assert thread_count(app) == before
    resp = await app.post("/api/import", document)
    assert resp.status == 201, await resp.text()
    assert thread_count(app) == before + 2  # the thread and its pin


@pytest.mark.parametrize("title, plain, full", [
    ("Trip to Lyon: the 2nd day!", "trip-to-lyon-the-2nd-day", None),
    ("Résumé café", "resume-cafe", "r%C3%A9sum%C3%A9-caf%C3%A9"),
    ("東京", "conversation", "%E6%9D%B1%E4%BA%AC"),
    ('"a"; filename=evil.exe', "a-filename-evil-exe", None),
])
async def test_an_export_is_named_after_its_title(app, title, plain, full):
    """The download is named after the conversation (it was conversation-<id> for every one); a title in another
    script keeps its letters through RFC 6266's filename*, and nothing in a title can break the header."""
    thread = await app.new_thread(title=title)
    for fmt in ("md", "json"):
        resp = await app.client.get(f"/api/threads/{thread['id']}/export?format={fmt}")
        assert resp.status == 200
        expected = f'attachment; filename="{plain}-{thread["id"]}.{fmt}"'
        if full:
            expected += f"; filename*=UTF-8''{full}-{thread['id']}.{fmt}"
        assert resp.headers["Content-Disposition"] == expected
