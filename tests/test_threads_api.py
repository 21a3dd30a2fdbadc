"""Thread CRUD and the error contract: bad input gets a clear 4xx JSON error and changes nothing."""

from __future__ import annotations

import pytest

from tests.fake_upstream import Script


def count(app, table: str) -> int:
    return app.rows(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]


async def test_create_list_get_delete(app, fake):
    first = await app.new_thread(title="First")
    second = await app.new_thread()
    assert first["title"] == "First" and first["parent_id"] is None and first["anchor"] is None
    resp = await app.client.get("/api/threads")
    listed = (await resp.json())["threads"]
    assert [t["id"] for t in listed][:2] == [second["id"], first["id"]]  # newest first
    fake.push(Script(tokens=["answer"]))
    await app.chat(first["id"], "question")
    listed = (await (await app.client.get("/api/threads")).json())["threads"]
    assert listed[0]["id"] == first["id"]  # activity moves a thread up
    detail = await app.thread(first["id"])
    assert [m["status"] for m in detail["messages"]] == ["complete", "complete"]
    assert detail["pins"] == [] and detail["streaming"] is False
    resp = await app.client.delete(f"/api/threads/{first['id']}")
    assert resp.status == 204
    assert (await app.client.get(f"/api/threads/{first['id']}")).status == 404
    assert app.rows("SELECT * FROM messages WHERE thread_id = ?", first["id"]) == []


async def test_health(app):
    resp = await app.client.get("/api/health")
    assert resp.status == 200 and (await resp.json())["status"] == "ok"


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("post", "/api/threads", {"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "invalid_json"),
        ("post", "/api/threads", {"json": ["a", "list"]}, 400, "invalid_json"),
        ("post", "/api/threads", {"json": {"title": 42}}, 422, "invalid_field"),
        ("post", "/api/threads", {"json": {"title": "x" * 201}}, 422, "invalid_field"),
        ("post", "/api/threads", {"json": {"parent_id": 1}}, 422, "invalid_pin"),
        ("post", "/api/threads", {"json": {"parent_id": 999, "anchor": {"message_id": 1, "start": 0, "end": 1}}},
         422, "invalid_pin"),
        ("get", "/api/threads/999", {}, 404, "thread_not_found"),
        ("get", "/api/threads/abc", {}, 404, "thread_not_found"),
        ("delete", "/api/threads/999", {}, 404, "thread_not_found"),
        ("post", "/api/threads/999/chat", {"json": {"message": "hi"}}, 404, "thread_not_found"),
        ("get", "/api/nope", {}, 404, "not_found"),
        ("put", "/api/threads", {}, 405, "method_not_allowed"),
    ],
)
async def test_bad_requests_get_json_errors_and_write_nothing(app, method, path, kwargs, status, code):
    resp = await getattr(app.client, method)(path, **kwargs)
    assert resp.status == status
    body = await resp.json()
    assert body["error"]["code"] == code and body["error"]["message"]
    assert count(app, "threads") == 0 and count(app, "messages") == 0
    if status == 405:  # HTTP requires a 405 to list the methods allowed
        assert set(resp.headers["Allow"].split(",")) >= {"GET", "POST"}, resp.headers


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 422, "invalid_message"),
        ({"message": ""}, 422, "invalid_message"),
        ({"message": "   "}, 422, "invalid_message"),
        ({"message": 12}, 422, "invalid_message"),
        ({"message": "x" * 32_001}, 413, "message_too_long"),
    ],
)
async def test_bad_chat_messages_write_nothing(app, fake, body, status, code):
    thread = await app.new_thread()
    resp = await app.post(f"/api/threads/{thread['id']}/chat", body)
    assert resp.status == status and (await resp.json())["error"]["code"] == code
    assert count(app, "messages") == 0 and fake.records == []


async def test_oversized_body_is_refused_with_json(app):
    thread = await app.new_thread()
    resp = await app.post(f"/api/threads/{thread['id']}/chat", {"message": "x" * 2_000_000})
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "request_too_large"
    assert count(app, "messages") == 0
