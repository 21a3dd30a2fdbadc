"""Per-user isolation, as a matrix: two users, every route, each user's own ids and the other's.

For every cell, another user's id must answer exactly as a missing id does (same status, same body), so that an id
tells nothing; one's own id gets the route's success status. Nothing of the other user's changes.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import add_user, sign_in

MISSING = 2**62  # an id that names nothing


async def make_conversation(client, fake_text: str) -> dict:
    """A thread with one answered message and a pin on that answer; returns their ids."""
    thread = (await client.post("/api/threads", json={"title": fake_text})).json()
    async with client.stream("POST", f"/api/threads/{thread['id']}/chat", json={"message": fake_text}) as resp:
        body = (await resp.aread()).decode()
    answer_id = next(json.loads(line[5:]) for line in body.splitlines()
                     if line.startswith("data:") and '"done"' in line)["message_id"]
    pin = (await client.post("/api/threads", json={
        "parent_id": thread["id"], "anchor": {"message_id": answer_id, "start": 0, "end": 3}})).json()
    return {"thread": thread["id"], "answer": answer_id, "pin": pin["id"]}


# (name, method, path, body or None, status for one's own ids); {thread}, {answer}, {pin} are filled in.
ROUTES = [
    ("get thread", "GET", "/api/threads/{thread}", None, 200),
    ("get pin", "GET", "/api/threads/{pin}", None, 200),
    ("export md", "GET", "/api/threads/{thread}/export?format=md", None, 200),
    ("export json", "GET", "/api/threads/{thread}/export?format=json", None, 200),
    ("cancel", "POST", "/api/threads/{thread}/cancel", {}, 200),
    ("pin on thread", "POST", "/api/threads",
     {"parent_id": "{thread}", "anchor": {"message_id": "{answer}", "start": 0, "end": 2}}, 201),
    ("merge", "POST", "/api/threads/{thread}/merge", {"threads": ["{pin}"], "format": "transcript"}, 200),
    ("chat", "POST", "/api/threads/{pin}/chat", {"message": "hi"}, 200),
    ("delete pin", "DELETE", "/api/threads/{pin}", None, 204),
    ("delete thread", "DELETE", "/api/threads/{thread}", None, 204),
]


def fill(value, ids: dict):
    if isinstance(value, str):
        for key, number in ids.items():
            if value == "{" + key + "}":
                return number
            value = value.replace("{" + key + "}", str(number))
        return value
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    return value


async def call(client, method: str, path: str, body) -> tuple[int, str]:
    resp = await client.request(method, path, json=body if body is not None else ({} if method != "GET" else None))
    return resp.status_code, resp.text


@pytest.mark.parametrize("route", ROUTES, ids=[r[0] for r in ROUTES])
async def test_every_route_hides_the_other_users_ids(app, route):
    name, method, path, body, own_status = route
    await add_user(app, "alice")
    await add_user(app, "bob")
    alice, bob = await sign_in(app, "alice", timeout=30), await sign_in(app, "bob", timeout=30)
    mine = await make_conversation(alice, "alice's secret")
    theirs = await make_conversation(bob, "bob's secret")
    await app.idle()  # titles and starter questions have landed
    missing = {k: MISSING for k in mine}
    before = (await bob.get(f"/api/threads/{theirs['thread']}")).json()

    foreign = await call(alice, method, fill(path, theirs), fill(body, theirs))
    absent = await call(alice, method, fill(path, missing), fill(body, missing))
    assert foreign == absent, f"{name}: another user's id answers differently from a missing one"
    assert foreign[0] in (404, 422) and "bob" not in foreign[1]

    status, text = await call(alice, method, fill(path, mine), fill(body, mine))
    assert status == own_status, f"{name}: {text}"
    assert "bob" not in text

    after = (await bob.get(f"/api/threads/{theirs['thread']}")).json()
    assert after == before  # nothing of bob's changed
    for client in (alice, bob):
        await client.aclose()


async def test_lists_imports_and_trees_are_per_user(app):
    await add_user(app, "alice")
    await add_user(app, "bob")
    alice, bob = await sign_in(app, "alice", timeout=30), await sign_in(app, "bob", timeout=30)
    mine = await make_conversation(alice, "alice's secret")
    theirs = await make_conversation(bob, "bob's secret")
    listed = (await alice.get("/api/threads")).json()["threads"]
    assert [t["id"] for t in listed] == [mine["thread"]]
    exported = (await bob.get(f"/api/threads/{theirs['thread']}/export?format=json")).json()
    imported = await alice.post("/api/import", json=exported)
    assert imported.status_code == 201
    assert len((await alice.get("/api/threads")).json()["threads"]) == 2
    assert [t["id"] for t in (await bob.get("/api/threads")).json()["threads"]] == [theirs["thread"]]
    # the owner (an admin) manages accounts but does not read their conversations
    assert (await app.client.get(f"/api/threads/{mine['thread']}")).status == 404
    assert (await (await app.client.get("/api/threads")).json()) == {"threads": []}
    assert (await alice.get("/api/users")).status_code == 403
    for client in (alice, bob):
        await client.aclose()
