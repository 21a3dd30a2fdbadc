"""The API's models and its OpenAPI document: one description of every input, and bad input never reaching a 500.

- the document is valid OpenAPI 3.1 and names exactly the app's /api/ routes;
- every request model refuses lone surrogates, out-of-range ids and wrong types with the field's error code;
- `parse_body` answers malformed bodies with 400 invalid_json (a real aiohttp app with a tiny route).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from aiohttp import web

from server import openapi
from server import account_schemas as a
from server import schemas as s
from server.errors import ApiError, json_errors

MAX_ID = 2**63 - 1

ANCHOR = {"message_id": 7, "start": 0, "end": 3}
EXPORT = {"format": "pinchat-export", "version": 1, "thread": {
    "id": 1, "title": "Trip", "summary": None, "anchor": None,
    "messages": [{"id": 1, "role": "user", "content": "Where?", "status": "complete", "kind": "chat",
                  "merged_ids": None, "model": None, "usage": None, "finish_reason": None},
                 {"id": 2, "role": "assistant", "content": "Lyon.", "status": "complete", "kind": "chat",
                  "merged_ids": None, "model": "m", "usage": {"total_tokens": 3, "details": {"x": "y"}},
                  "finish_reason": "stop"}],
    "pins": [{"id": 2, "title": None, "summary": None, "anchor": {"message_id": 2, "start": 0, "end": 4,
                                                                   "text": "Lyon"},
              "messages": [], "pins": []}]}}

# A valid body per request model, and the error code each top-level field answers with when it is wrong.
VALID: dict[type, dict[str, Any]] = {
    s.CreateThread: {"title": "Trip", "parent_id": 3, "anchor": ANCHOR},
    s.Chat: {"message": "hello"},
    s.Merge: {"format": "custom", "instruction": "Be brief.", "threads": [1, 2]},
    s.ExportDocument: EXPORT,
    a.Login: {"username": "ann", "password": "secret"},
    a.ChangePassword: {"current_password": "old-password", "new_password": "new-password"},
    a.CreateToken: {"name": "laptop"},
    a.CreateUser: {"username": "bob", "password": "long-enough", "is_admin": False},
    a.PatchUser: {"disabled": True, "is_admin": False, "password": "long-enough"},
}
CODES: dict[type, dict[str, str]] = {
    s.CreateThread: {"title": "invalid_field", "parent_id": "invalid_field", "anchor": "invalid_anchor"},
    s.Chat: {"message": "invalid_message"},
    s.Merge: {"format": "invalid_format", "instruction": "invalid_instruction", "threads": "invalid_threads"},
    s.ExportDocument: {"format": "invalid_export", "version": "invalid_export", "thread": "invalid_export"},
    a.Login: {"username": "invalid_field", "password": "invalid_field"},
    a.ChangePassword: {"current_password": "invalid_field", "new_password": "weak_password"},
    a.CreateToken: {"name": "invalid_field"},
    a.CreateUser: {"username": "invalid_field", "password": "weak_password", "is_admin": "invalid_field"},
    a.PatchUser: {"disabled": "invalid_field", "is_admin": "invalid_field", "password": "weak_password"},
}


def leaves(value: Any, path: tuple = ()):
    """(path, leaf) for every scalar of a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, (*path, index))
    else:
        yield path, value


def replaced(value: Any, path: tuple, new: Any) -> Any:
    value = copy.deepcopy(value)
    target = value
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = new
    return value


def mutations():
    """(model, path, body, surrogate) with one leaf made wrong: a lone surrogate in a string; an id or offset out
    of SQLite's range, a bool, a float or a string for an integer; a number or an object for a string."""
    for model, body in VALID.items():
        for path, leaf in leaves(body):
            if isinstance(leaf, bool):
                bad = [0, "true", []]
            elif isinstance(leaf, int):
                bad = [2**63, -1, True, 1.0, "1"]
            elif isinstance(leaf, str):
                bad = [leaf[:1] + "\ud800" + leaf[1:], leaf[:1] + "\udfff", 12, {"a": 1}]
            else:
                continue
            for new in bad:
                if "usage" in path and not (isinstance(leaf, str) and isinstance(new, str)):
                    continue  # usage is free-form JSON: only its strings are checked
                surrogate = isinstance(new, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in new)
                yield pytest.param(model, path, replaced(body, path, new), surrogate,
                                   id=f"{model.__name__}-{'.'.join(map(str, path))}-{new!r:.12}")


def test_valid_examples_cover_every_request_model():
    bodies = {op.body for op in openapi.OPERATIONS if op.body is not None}
    assert bodies == set(VALID) == set(CODES)
    for model, body in VALID.items():
        s.validate(model, body)
        assert set(CODES[model]) == set(model.model_fields)


@pytest.mark.parametrize(("model", "path", "body", "surrogate"), list(mutations()))
def test_a_wrong_leaf_is_a_422_with_the_field_code(model, path, body, surrogate):
    with pytest.raises(ApiError) as caught:
        s.validate(model, body)
    error = caught.value
    assert error.status == 422 and error.code == CODES[model][path[0]], (error.code, error.message)
    assert f"`{path[0]}" in error.message and "Traceback" not in error.message
    assert "\ud800" not in error.message and "\udfff" not in error.message
    if surrogate:
        assert "surrogate" in error.message, error.message


@pytest.mark.parametrize("model", list(VALID))
def test_unknown_fields_are_refused_except_in_an_import(model):
    body = {**VALID[model], "surprise": 1}
    if model is s.ExportDocument:
        assert s.validate(model, body).format == "pinchat-export"
        return
    with pytest.raises(ApiError) as caught:
        s.validate(model, body)
    assert caught.value.code == "invalid_field" and "`surprise`" in caught.value.message


@pytest.mark.parametrize(("model", "body", "code"), [
    (s.CreateThread, {"parent_id": 1}, "invalid_pin"),
    (s.CreateThread, {"anchor": ANCHOR}, "invalid_pin"),
    (s.CreateThread, {"parent_id": 1, "anchor": {**ANCHOR, "start": 3}}, "invalid_anchor"),
    (s.CreateThread, {"parent_id": 1, "anchor": "not an object"}, "invalid_anchor"),
    (s.CreateThread, {"title": "x" * 201}, "invalid_field"),
    (s.Chat, {}, "invalid_message"),
    (s.Chat, {"message": " \n "}, "invalid_message"),
    (s.Merge, {"format": "custom", "threads": [1]}, "invalid_instruction"),
    (s.Merge, {"format": "custom", "instruction": "  ", "threads": [1]}, "invalid_instruction"),
    (s.Merge, {"format": "summary", "instruction": "x" * 4001, "threads": [1]}, "invalid_instruction"),
    (s.Merge, {"format": "summary", "threads": []}, "invalid_threads"),
    (s.Merge, {"format": "poem", "threads": [1]}, "invalid_format"),
    (s.ExportDocument, {"format": "pinchat-export", "version": 2, "thread": EXPORT["thread"]}, "invalid_export"),
    (s.ExportDocument, replaced(EXPORT, ("thread", "pins", 0, "anchor", "end"), 2**63), "invalid_export"),
    (a.ChangePassword, {"current_password": None, "new_password": "short"}, "weak_password"),
    (a.CreateUser, {"username": "", "password": "long-enough"}, "invalid_field"),
    (a.CreateUser, {"username": "x" * 65, "password": "long-enough"}, "invalid_field"),
    (a.Login, {"username": "ann", "password": "x" * 1025}, "invalid_field"),
    (s.ExportQuery, {"format": "pdf"}, "invalid_format"),
])
def test_rules_across_fields(model, body, code):
    with pytest.raises(ApiError) as caught:
        s.validate(model, body)
    assert (caught.value.status, caught.value.code) == (422, code)
    assert len(caught.value.message) < 300  # the input is never echoed


def test_optional_fields_and_defaults():
    assert s.validate(s.CreateThread, {}).parent_id is None
    assert s.validate(a.ChangePassword, {"current_password": None, "new_password": "long-enough"})
    assert s.validate(a.PatchUser, {}).model_dump(exclude_none=True) == {}
    assert s.validate(s.ExportQuery, {}).format == "md"
    message = s.validate(s.ExportDocument, {**EXPORT, "thread": {"messages": [{"id": 1, "role": "user",
                                                                             "content": ""}]}}).thread.messages[0]
    assert (message.status, message.kind) == ("complete", "chat")


@pytest.mark.parametrize(("value", "expected"), [
    ("1", 1), ("42", 42), (str(MAX_ID), MAX_ID), ("0", None), (str(MAX_ID + 1), None), ("-1", None), ("+1", None),
    (" 1", None), ("1_0", None), ("٧", None), ("1.0", None), ("", None), ("abc", None), ("9" * 40, None),
])
def test_path_id(value, expected):
    assert s.path_id(value) == expected


# --- the document ---------------------------------------------------------------------------------------------

def test_document_is_valid_openapi_3_1():
    doc = openapi.document()
    assert doc["openapi"].startswith("3.1")
    json.dumps(doc, allow_nan=False)  # plain JSON
    try:
        from openapi_spec_validator import validate
    except ImportError:
        validate = None
    if validate is not None:
        validate(doc)
    from jsonschema import Draft202012Validator

    for name, schema in doc["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
    text = json.dumps(doc)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
        assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"], ref
    ids = [op["operationId"] for path in doc["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))
    for path in doc["paths"].values():
        for op in path.values():
            assert op["responses"] and all(code.isdigit() for code in op["responses"])
            for link in next(iter(op["responses"].values())).get("links", {}).values():
                assert link["operationId"] in ids


def test_document_describes_errors_security_and_streams():
    doc = openapi.document()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["session"] == {"type": "apiKey", "in": "cookie", "name": "pinchat_session",
                                  "description": schemes["session"]["description"]}
    assert schemes["token"]["scheme"] == "bearer"
    assert doc["paths"]["/api/health"]["get"]["security"] == []
    assert "security" not in doc["paths"]["/api/threads"]["get"]  # the global one: token or session
    chat = doc["paths"]["/api/threads/{id}/chat"]["post"]
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    assert {"400", "401", "404", "409", "413", "422"} <= set(chat["responses"])
    thread = doc["components"]["schemas"]["CreateThread"]
    assert thread["additionalProperties"] is False
    assert thread["properties"]["anchor"]["x-error-code"] == "invalid_anchor"
    param = doc["paths"]["/api/threads/{id}"]["get"]["parameters"][0]
    assert param["schema"] == {"type": "integer", "minimum": 1, "maximum": MAX_ID}
    export = doc["paths"]["/api/threads/{id}/export"]["get"]
    assert {"text/markdown", "application/json"} == set(export["responses"]["200"]["content"])


async def test_the_table_names_exactly_the_apps_api_routes(settings):
    from server.app import create_app

    missing, extra = openapi.undocumented(create_app(settings))
    assert missing == set(), f"routes without an entry in server/openapi.py OPERATIONS: {missing}"
    assert extra == set(), f"OPERATIONS the app does not serve: {extra}"


async def test_the_document_is_served_to_anyone(make_app, settings, aiohttp_client):
    app = await make_app(settings)
    resp = await app.client.get("/api/openapi.json", headers={"Authorization": ""})
    assert resp.status == 200 and await resp.json() == json.loads(json.dumps(openapi.document()))


# --- parse_body on a real request ------------------------------------------------------------------------------

@pytest.fixture
async def tiny(aiohttp_client):
    async def body(request: web.Request) -> web.Response:
        return web.json_response((await s.parse_body(request, s.Merge)).model_dump())

    async def query(request: web.Request) -> web.Response:
        return web.json_response(s.parse_query(request, s.ExportQuery).model_dump())

    app = web.Application(middlewares=[json_errors])
    app.router.add_post("/body", body)
    app.router.add_get("/query", query)
    return await aiohttp_client(app)


GOOD = {"format": "summary", "threads": [1, 2]}


@pytest.mark.parametrize(("raw", "status", "code", "says"), [
    (json.dumps(GOOD).encode(), 200, None, None),
    (b"", 400, "invalid_json", "empty"),
    (b"{not json", 400, "invalid_json", "not valid JSON"),
    (b"\xff\xfe{}", 400, "invalid_json", "UTF-8"),
    (b'{"format": "summary", "threads": ["\xed\xa0\x80"]}', 400, "invalid_json", "UTF-8"),  # an encoded surrogate
    (b"[1, 2]", 400, "invalid_json", "object"),
    (b'"text"', 400, "invalid_json", "object"),
    (b'{"format": "summary", "threads": [NaN]}', 400, "invalid_json", "not valid JSON"),
    (b'{"format": "summary", "threads": [' + b"9" * 5000 + b"]}", 400, "invalid_json", "not valid JSON"),
    (b"[" * 200_000 + b"]" * 200_000, 400, "invalid_json", None),
    (b'{"a": ' + b"[" * 70 + b"]" * 70 + b"}", 400, "invalid_json", "deeper"),
    (b'{"format": "summary", "threads": [1], "x": ' + b"[" * 60 + b"]" * 60 + b"}", 422, "invalid_field", "`x`"),
    (b'{"format": "summary", "threads": [9223372036854775808]}', 422, "invalid_threads", "threads[0]"),
    (b'{"format": "custom", "instruction": "\\ud800", "threads": [1]}', 422, "invalid_instruction", "surrogate"),
])
async def test_parse_body(tiny, raw, status, code, says):
    resp = await tiny.post("/body", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == status, await resp.text()
    body = await resp.json()
    if code is None:
        assert body == {"format": "summary", "instruction": None, "threads": [1, 2]}
        return
    assert body["error"]["code"] == code
    message = body["error"]["message"]
    assert "Traceback" not in message and 'File "' not in message and len(message) < 300
    if says:
        assert says in message


async def test_parse_query(tiny):
    assert await (await tiny.get("/query")).json() == {"format": "md"}
    assert await (await tiny.get("/query?format=json&other=1")).json() == {"format": "json"}
    resp = await tiny.get("/query?format=pdf")
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "invalid_format"
