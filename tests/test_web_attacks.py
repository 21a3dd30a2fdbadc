"""The web's own attacks against the real app: CSRF, DNS rebinding, the page's headers, and bad input that must
get a clear 4xx JSON error and change nothing."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import add_user, sign_in


async def thread_count(app) -> int:
    return len(app.rows("SELECT id FROM threads"))


async def test_the_issue_curl_lines_are_refused(app):
    async with httpx.AsyncClient(base_url=app.base) as anyone:
        forged = await anyone.post("/api/threads", content=b'{"title":"x"}',
                                   headers={"Content-Type": "text/plain", "Origin": "http://evil.example"})
        assert forged.status_code == 401
        rebound = await anyone.get("/api/threads", headers={"Host": "evil.example:8080"})
        assert rebound.status_code == 421 and rebound.json()["error"]["code"] == "host_not_allowed"
    assert await thread_count(app) == 0


async def test_csrf_needs_json_and_our_origin_when_a_cookie_signs_in(app):
    await add_user(app, "alice")
    page = await sign_in(app, "alice")
    text_plain = await page.post("/api/threads", content=b'{"title":"x"}', headers={"Content-Type": "text/plain"})
    foreign = await page.post("/api/threads", json={"title": "x"}, headers={"Origin": "http://evil.example"})
    port = int(app.base.rstrip("/").rsplit(":", 1)[1])
    # another program on this machine is another origin: same name, other port (or a port that is no number)
    other_ports = [await page.post("/api/threads", json={"title": "x"}, headers={"Origin": origin})
                   for origin in (f"http://localhost:{port + 1}", "http://localhost", "http://localhost:x")]
    del page.headers["Origin"]
    no_origin = await page.post("/api/threads", json={"title": "x"})
    referer = await page.post("/api/threads", json={"title": "from referer"}, headers={"Referer": app.base})
    for resp in (text_plain, foreign, no_origin, *other_ports):
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "csrf_rejected"
    assert referer.status_code == 201
    page.headers["Origin"] = app.base.rstrip("/")
    assert (await page.post("/api/threads", json={"title": "from the page"})).status_code == 201
    # localhost and 127.0.0.1 on our port are both this server (each a served host)
    assert (await page.post("/api/threads", json={"title": "by name"},
                            headers={"Origin": f"http://localhost:{port}"})).status_code == 201
    assert [r["title"] for r in app.rows("SELECT title FROM threads ORDER BY id")] == ["from referer", "from the page", "by name"]
    sign_out_forged = await page.post("/api/auth/logout", content=b"", headers={"Content-Type": "text/plain"})
    assert sign_out_forged.status_code == 403
    await page.aclose()


async def test_foreign_host_is_refused_before_any_route(app):
    async with app.http() as http:
        for path in ("/", "/api/health", "/api/threads", "/py/main.py"):
            resp = await http.get(path, headers={"Host": "attacker.example"})
            assert resp.status_code == 421, path
        assert (await http.get("/api/threads", headers={"Host": "localhost:1234"})).status_code == 200


async def test_allowed_hosts_adds_a_name(make_app, settings):
    app = await make_app(settings, allowed_hosts=("chat.example.com",))
    async with app.http() as http:
        assert (await http.get("/api/threads", headers={"Host": "chat.example.com"})).status_code == 200
        assert (await http.get("/api/threads", headers={"Host": "other.example.com"})).status_code == 421


async def test_the_page_has_a_strict_policy_and_no_version_banner(app):
    async with httpx.AsyncClient(base_url=app.base) as http:
        for path in ("/", "/api/health", "/api/threads"):
            resp = await http.get(path)
            assert "Python" not in resp.headers["Server"] and "aiohttp" not in resp.headers["Server"]
        page = await http.get("/")
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp
    assert "script-src 'self' 'wasm-unsafe-eval'" in csp
    assert page.headers["Referrer-Policy"] == "same-origin" and page.headers["X-Frame-Options"] == "DENY"
    async with app.http() as http:  # conversations and accounts are kept by no cache, errors neither
        for path in ("/api/threads", "/api/auth/me", "/api/threads/12345"):
            assert (await http.get(path)).headers["Cache-Control"] == "no-store", path


BIG = "99999999999999999999999"


@pytest.mark.parametrize("method,path,body,status", [
    ("GET", f"/api/threads/{BIG}", None, 404),
    ("GET", "/api/threads/-1", None, 404),
    ("POST", f"/api/threads/{BIG}/chat", {"message": "hi"}, 404),
    ("POST", "/api/threads", {"parent_id": int(BIG), "anchor": {"message_id": 1, "start": 0, "end": 1}}, 422),
    ("POST", "/api/threads", b'{"title": "\\ud800"}', 422),
    ("POST", "/api/threads", {"title": 5}, 422),
    ("POST", "/api/threads", {"title": "two\nlines"}, 422),
    ("POST", "/api/threads", {"title": "nul\u0000"}, 422),
    ("POST", "/api/threads", [1, 2], 400),
    ("DELETE", f"/api/tokens/{BIG}", None, 404),
])
async def test_bad_input_gets_a_4xx_json_error_and_changes_nothing(app, method, path, body, status):
    async with app.http() as http:
        if isinstance(body, bytes):
            resp = await http.request(method, path, content=body, headers={"Content-Type": "application/json"})
        else:
            resp = await http.request(method, path, json=body)
        assert resp.status_code == status, resp.text
        assert set(resp.json()["error"]) == {"code", "message"}
    assert await thread_count(app) == 0


async def test_names_are_trimmed_and_never_blank(app):
    """User names, thread titles and token names: spaces around them are dropped, a blank user or token name is a
    422 that adds nothing, a blank title means the automatic one."""
    async with app.http() as http:
        users = len((await http.get("/api/users")).json()["users"])
        tokens = (await http.get("/api/tokens")).json()["tokens"]
        for body in ({"username": "   ", "password": "abcdefgh12"}, {"username": "ca\trol", "password": "abcdefgh12"}):
            resp = await http.post("/api/users", json=body)
            assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_field", resp.text
        made = await http.post("/api/users", json={"username": " carol ", "password": "abcdefgh12"})
        assert made.status_code == 201 and made.json()["username"] == "carol"
        # invisible formatting characters are refused; a fullwidth name is the same name (NFKC)
        for name in ("carol\u200b", "\u202eevil", "ca\u2060rol"):
            resp = await http.post("/api/users", json={"username": name, "password": "abcdefgh12"})
            assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_field", (name, resp.text)
        same = await http.post("/api/users", json={"username": "ｃａｒｏｌ", "password": "abcdefgh12"})
        assert same.status_code == 409 and same.json()["error"]["code"] == "username_taken", same.text
        assert len((await http.get("/api/users")).json()["users"]) == users + 1
        carol = await sign_in(app, "carol", "abcdefgh12")  # tokens are made from a session
        assert (await carol.post("/api/tokens", json={"name": "  "})).status_code == 422
        assert (await carol.get("/api/tokens")).json()["tokens"] == []
        await carol.aclose()
        assert (await http.get("/api/tokens")).json()["tokens"] == tokens
        assert (await http.post("/api/threads", json={"title": "   "})).json()["title"] is None
        assert (await http.post("/api/threads", json={"title": "  Plans "})).json()["title"] == "Plans"


async def test_lone_surrogates_deep_nesting_and_oversized_bodies(app):
    thread = await app.new_thread()
    raw = {"Content-Type": "application/json"}
    async with app.http() as http:
        message = await http.post(f"/api/threads/{thread['id']}/chat", content=b'{"message": "\\ud800"}', headers=raw)
        assert message.status_code == 422
        deep = b'{"title": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        nested = await http.post("/api/threads", content=deep, headers=raw)
        assert nested.status_code == 400
        huge = await http.post("/api/threads", content=b'{"x": "' + b"a" * (2 * 1024 * 1024) + b'"}', headers=raw)
        assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"
        import_body = b'{"x": "' + b"a" * (33 * 1024 * 1024) + b'"}'  # an import may be larger, up to 32 MiB
        huge = await http.post("/api/import", content=import_body, headers=raw)
        assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"
    assert len(app.rows("SELECT id FROM threads")) == 1 and app.rows("SELECT id FROM messages") == []


async def test_per_user_limits_on_streams_and_chats_per_minute(make_app, settings, fake):
    from tests.fake_upstream import Script

    app = await make_app(settings, max_streams_per_user=1, chats_per_minute=2)
    first, second = await app.new_thread(), await app.new_thread()
    fake.push(Script(tokens=[f"t{i} " for i in range(300)], delay=0.02))
    async with app.http(timeout=30) as http:
        async with http.stream("POST", f"/api/threads/{first['id']}/chat", json={"message": "long"}) as streaming:
            lines = streaming.aiter_lines()  # kept open: leaving an httpx line iterator closes the response
            await lines.__anext__()  # the first answer is streaming now
            busy = await http.post(f"/api/threads/{second['id']}/chat", json={"message": "and this"})
            assert busy.status_code == 429 and busy.json()["error"]["code"] == "too_many_streams"
            assert busy.headers["Retry-After"]
            await http.post(f"/api/threads/{first['id']}/cancel", json={})
        assert (await http.post(f"/api/threads/{second['id']}/chat", json={"message": "ok"})).status_code == 200
        third = await http.post(f"/api/threads/{second['id']}/chat", json={"message": "one too many"})
        assert third.status_code == 429 and third.json()["error"]["code"] == "rate_limited"
        assert int(third.headers["Retry-After"]) > 0
    assert len(app.rows("SELECT id FROM messages WHERE role = 'user'")) == 2  # the refused ones wrote nothing
    # Deleting the threads does not give the minute back (the limit counted the messages, which a delete takes)
    async with app.http(timeout=30) as http:
        for thread in (first, second):
            assert (await http.request("DELETE", f"/api/threads/{thread['id']}", json={})).status_code == 204
        third = (await http.post("/api/threads", json={})).json()
        again = await http.post(f"/api/threads/{third['id']}/chat", json={"message": "after deleting"})
        assert again.status_code == 429 and again.json()["error"]["code"] == "rate_limited"


async def test_past_the_admission_limit_a_new_chat_gets_503_and_the_running_one_goes_on(make_app, settings, fake):
    from tests.fake_upstream import Script

    app = await make_app(settings, max_generations=1)
    first, second = await app.new_thread(), await app.new_thread()
    fake.push(Script(tokens=[f"t{i} " for i in range(100)], delay=0.01))
    async with app.http(timeout=30) as http:
        async with http.stream("POST", f"/api/threads/{first['id']}/chat", json={"message": "long"}) as streaming:
            lines = streaming.aiter_lines()
            await lines.__anext__()
            busy = await http.post(f"/api/threads/{second['id']}/chat", json={"message": "and this"})
            assert busy.status_code == 503 and busy.json()["error"]["code"] == "server_busy"
            assert busy.headers["Retry-After"] == "5"
            rest = [line async for line in lines]
    assert '"type":"done"' in rest[-1] or any('"done"' in line for line in rest)
    assert len(app.rows("SELECT id FROM messages WHERE thread_id = ?", second["id"])) == 0


async def test_a_forwarded_address_that_is_not_an_ip_counts_as_the_peer(app):
    """X-Real-IP / X-Forwarded-For from a trusted proxy (loopback here) key the sign-in throttle and reach the log
    and the database: a value that is not an IP address (text, bytes that are not UTF-8) counts as the peer's own
    address, and is never a 500."""
    import asyncio
    from urllib.parse import urlsplit

    from server.keys import DB

    url = urlsplit(app.base)
    body = b'{"username": "nobody", "password": "guess guess"}'
    for header in (b"X-Real-IP: \xff\xfe", b"X-Real-IP: not-an-ip", b"X-Forwarded-For: 203.0.113.9, <script>",
                   b"X-Real-IP: 203.0.113.9"):
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        writer.write(b"POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Origin: http://localhost\r\n" + header + b"\r\nConnection: close\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        status = (await reader.read()).split(b"\r\n")[0]
        writer.close()
        assert status.endswith(b" 401 Unauthorized"), (header, status)
    accounts = app.client.server.app[DB].accounts
    assert (await accounts.failures("addr:127.0.0.1", 600))[0] == 3
    assert (await accounts.failures("addr:203.0.113.9", 600))[0] == 1
