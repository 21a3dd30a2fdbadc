"""Accounts through the real app: sign-in and out, the one-time URL, sessions that end, throttling, API tokens,
single sign-on by a trusted proxy's header, the command line, and `--auth none`."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys

import httpx
from httpx_sse import aconnect_sse

from server.credentials import login_link
from server.db import MIGRATIONS, Database
from server.keys import DB, REGISTRY
from server.timestamps import now
from tests.conftest import PASSWORD, add_user, browser_like, sign_in
from tests.fake_upstream import Script
from tests.server_process import ROOT, ServerProcess


def accounts(app):
    return app.client.server.app[DB].accounts


async def test_one_time_url_signs_in_once_and_leaves_the_address_bar(app):
    url = await login_link(accounts(app), (await accounts(app).user_by_name("owner"))["id"], app.base)
    async with browser_like(app) as page:
        resp = await page.get(url.removeprefix(app.base.rstrip("/")))
        assert resp.status_code == 303 and resp.headers["Location"] == "/"
        cookie = resp.headers["Set-Cookie"]
        assert "pinchat_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert "Secure" not in cookie  # plain HTTP here
        me = (await page.get("/api/auth/me")).json()
        assert me["user"]["username"] == "owner" and me["user"]["is_admin"] is True
    async with browser_like(app) as other:  # the same URL again: used up
        resp = await other.get(url.removeprefix(app.base.rstrip("/")))
        assert resp.status_code == 303 and resp.headers["Location"] == "/#signin-expired"
        assert "set-cookie" not in resp.headers
        assert (await other.get("/api/auth/me")).status_code == 401


async def test_sign_in_and_out_with_a_password(app):
    await add_user(app, "alice")
    async with browser_like(app) as page:
        assert (await page.get("/api/threads")).status_code == 401
        bad = await page.post("/api/auth/login", json={"username": "alice", "password": "wrong password"})
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_credentials"
        nobody = await page.post("/api/auth/login", json={"username": "nobody", "password": "wrong password"})
        assert nobody.json() == bad.json()  # a missing name answers exactly like a wrong password
        planted = "attacker-chosen"
        ok = await page.post("/api/auth/login", json={"username": "alice", "password": PASSWORD},
                             headers={"Cookie": f"pinchat_session={planted}"})
        assert ok.status_code == 200 and ok.json()["user"]["username"] == "alice"
        session = ok.cookies["pinchat_session"]
        assert session != planted  # a fresh secret at every sign-in
        assert (await page.get("/api/threads")).json() == {"threads": []}
        assert (await page.post("/api/auth/logout", json={})).status_code == 204
        assert (await page.get("/api/auth/me")).status_code == 401
    async with browser_like(app, cookies={"pinchat_session": session}) as replay:
        assert (await replay.get("/api/threads")).status_code == 401  # the row is gone, not just the cookie


async def test_cookie_is_secure_behind_a_trusted_https_proxy_only(make_app, settings):
    app = await make_app(settings)
    await add_user(app, "alice")
    async with browser_like(app) as page:
        resp = await page.post("/api/auth/login", json={"username": "alice", "password": PASSWORD},
                               headers={"X-Forwarded-Proto": "https"})
        assert "Secure" in resp.headers["Set-Cookie"]
    untrusted = await make_app(settings, trusted_proxies=("10.9.9.9",))
    async with browser_like(untrusted) as page:
        resp = await page.post("/api/auth/login", json={"username": "alice", "password": PASSWORD},
                               headers={"X-Forwarded-Proto": "https"})
        assert resp.status_code == 200 and "Secure" not in resp.headers["Set-Cookie"]


async def stream_until_ended(client: httpx.AsyncClient, thread_id: int) -> list[dict]:
    """Follow a chat until the server ends it (or the connection drops); the events read."""
    import json

    events = []
    try:
        async with aconnect_sse(client, "POST", f"/api/threads/{thread_id}/chat", json={"message": "go"}) as src:
            async for sse in src.aiter_sse():
                events.append(json.loads(sse.data))
    except httpx.HTTPError:
        pass
    return events


async def test_password_change_ends_the_other_sessions_and_their_streams(app, fake):
    await add_user(app, "alice")
    here, there = await sign_in(app, "alice", timeout=30), await sign_in(app, "alice", timeout=30)
    thread = (await there.post("/api/threads", json={})).json()
    fake.push(Script(tokens=[f"t{i} " for i in range(500)], delay=0.02))
    stream = asyncio.create_task(stream_until_ended(there, thread["id"]))
    while not (await here.get(f"/api/threads/{thread['id']}")).json()["streaming"]:
        await asyncio.sleep(0.02)
    changed = await here.post("/api/auth/password", json={"current_password": PASSWORD, "new_password": "n3w password!"})
    assert changed.status_code == 200
    events = await asyncio.wait_for(stream, 5)
    assert len(events) < 400  # cut off, long before the answer's end
    assert (await there.get("/api/auth/me")).status_code == 401
    assert (await here.get("/api/auth/me")).status_code == 200  # this session goes on, with a new secret
    detail = (await here.get(f"/api/threads/{thread['id']}")).json()
    while detail["streaming"]:
        await asyncio.sleep(0.05)
        detail = (await here.get(f"/api/threads/{thread['id']}")).json()
    assert detail["messages"][-1]["status"] == "interrupted" and detail["messages"][-1]["content"].startswith("t0 ")
    wrong = await here.post("/api/auth/password", json={"current_password": PASSWORD, "new_password": "x" * 10})
    assert wrong.status_code == 403
    weak = await here.post("/api/auth/password", json={"current_password": "n3w password!", "new_password": "short"})
    assert weak.status_code == 422 and weak.json()["error"]["code"] == "weak_password"
    for client in (here, there):
        await client.aclose()


async def test_signing_out_or_revoking_stops_the_answers_started_with_it(make_app, settings, fake):
    """With the detach grace of a real server (30 s: an answer whose reader left goes on for it), ending a session
    or a token still stops the answers it started at once, saved as interrupted, also one whose stream the page
    already left (a reload): not only the response is cut. Another session of the same user keeps its answer."""
    app = await make_app(settings, detach_grace=30)
    registry = app.client.server.app[REGISTRY]
    await add_user(app, "alice")
    first, second = await sign_in(app, "alice", timeout=30), await sign_in(app, "alice", timeout=30)
    token = (await first.post("/api/tokens", json={"name": "script"})).json()
    script = httpx.AsyncClient(base_url=app.base, headers={"Authorization": f"Bearer {token['token']}"}, timeout=30)

    async def answering(client) -> tuple[int, asyncio.Task]:
        thread_id = (await client.post("/api/threads", json={})).json()["id"]
        fake.push(Script(tokens=[f"t{i} " for i in range(1500)], delay=0.02))  # 30 s unless something ends it
        stream = asyncio.create_task(stream_until_ended(client, thread_id))
        while not ((generation := registry.get(thread_id)) and generation.text):
            await asyncio.sleep(0.02)
        return thread_id, stream

    async def stopped(thread_id: int) -> dict:
        async with asyncio.timeout(3):
            while registry.get(thread_id):
                await asyncio.sleep(0.02)
        return (await app.client.server.app[DB].messages(thread_id))[-1]

    by_script, script_stream = await answering(script)
    assert (await first.request("DELETE", f"/api/tokens/{token['id']}", json={})).status_code == 204
    assert (await asyncio.wait_for(script_stream, 3))[-1]["type"] != "done"
    answer = await stopped(by_script)
    assert answer["status"] == "interrupted" and answer["content"].startswith("t0 ")

    by_first, first_stream = await answering(first)
    by_second, second_stream = await answering(second)
    first_stream.cancel()  # the page reloaded: nobody reads the first answer, which goes on for the grace
    await asyncio.sleep(0.3)
    assert registry.get(by_first) is not None
    assert (await first.post("/api/auth/logout", json={})).status_code == 204
    answer = await stopped(by_first)
    assert answer["status"] == "interrupted" and answer["content"].startswith("t0 ")
    assert registry.get(by_second) is not None and not second_stream.done()  # the other session's answer goes on
    registry.get(by_second).stop("cancelled")
    await asyncio.wait_for(second_stream, 3)
    for client in (first, second, script):
        await client.aclose()


async def test_changing_the_password_keeps_this_sessions_answers(make_app, settings, fake):
    """The session that changes the password gets a new secret and goes on: so do its streams and answers, also past
    the re-check of open streams' credentials (which once ended them, the old session row being gone)."""
    app = await make_app(settings, credential_recheck=0.2, detach_grace=30)
    await add_user(app, "alice")
    page = await sign_in(app, "alice", timeout=30)
    thread_id = (await page.post("/api/threads", json={})).json()["id"]
    fake.push(Script(tokens=[f"t{i} " for i in range(100)], delay=0.02))
    stream = asyncio.create_task(stream_until_ended(page, thread_id))
    while not ((generation := app.client.server.app[REGISTRY].get(thread_id)) and generation.text):
        await asyncio.sleep(0.02)
    changed = await page.post("/api/auth/password", json={"current_password": PASSWORD, "new_password": "n3w password!"})
    assert changed.status_code == 200
    events = await asyncio.wait_for(stream, 10)
    assert events[-1]["type"] == "done" and len(events) == 102  # start, 100 tokens, done: never cut
    assert (await app.client.server.app[DB].messages(thread_id))[-1]["status"] == "complete"
    assert (await page.get("/api/auth/me")).status_code == 200
    await page.aclose()


async def test_a_disabled_user_is_out_at_once(app):
    alice = await add_user(app, "alice")
    page = await sign_in(app, "alice")
    token = (await page.post("/api/tokens", json={"name": "script"})).json()["token"]
    resp = await app.client.patch(f"/api/users/{alice['id']}", json={"disabled": True})
    assert resp.status == 200 and (await resp.json())["disabled"] is True
    assert (await page.get("/api/threads")).status_code == 401
    again = await page.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert again.status_code == 401
    async with httpx.AsyncClient(base_url=app.base, headers={"Authorization": f"Bearer {token}"}) as script:
        assert (await script.get("/api/threads")).status_code == 401
    await page.aclose()


async def test_failed_sign_ins_are_throttled_and_the_throttle_survives_a_restart(make_app, settings):
    app = await make_app(settings)
    await add_user(app, "alice")
    async with browser_like(app) as page:
        for _ in range(10):
            resp = await page.post("/api/auth/login", json={"username": "alice", "password": "guess guess"})
            assert resp.status_code == 401
        blocked = await page.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
        assert blocked.json()["error"]["code"] == "too_many_attempts"
    await app.client.close()
    restarted = await make_app(settings)
    async with browser_like(restarted) as page:
        resp = await page.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
        assert resp.status_code == 429


async def test_guesses_sent_in_parallel_are_throttled_too(app):
    """Each attempt is counted before its (slow) password check, so guesses in flight count each other: of 40 sent
    at once for one account at most 10 are checked (then the rest one by one, up to 10 in all), and of 60 for other
    names from the same address at most 30 in all."""
    await add_user(app, "alice")
    async with browser_like(app) as page:
        async def guess(name: str) -> int:
            resp = await page.post("/api/auth/login", json={"username": name, "password": "guess guess"})
            return resp.status_code

        statuses = await asyncio.gather(*(guess("alice") for _ in range(40)))
        checked = statuses.count(401)
        assert set(statuses) <= {401, 429} and checked <= 10 and 429 in statuses, statuses
        while (status := await guess("alice")) == 401:  # one at a time, up to the limit
            checked += 1
        assert status == 429 and checked == 10
        assert (await page.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})).status_code \
            == 429
        statuses = await asyncio.gather(*(guess(f"user{i}") for i in range(60)))
        assert statuses.count(401) + checked <= 30 and 429 in statuses, statuses
        failures = await accounts(app).failures("user:alice", 600)
        assert failures[0] == 10  # refused attempts are not failures of their own


async def test_api_tokens_are_shown_once_used_and_revoked(app):
    await add_user(app, "alice")
    await add_user(app, "bob")
    alice, bob = await sign_in(app, "alice"), await sign_in(app, "bob")
    created = await alice.post("/api/tokens", json={"name": "my script"})
    assert created.status_code == 201
    token = created.json()
    assert token["token"].startswith("pc_")
    listed = (await alice.get("/api/tokens")).json()["tokens"]
    assert [t["name"] for t in listed] == ["my script"] and "token" not in listed[0]
    assert (await bob.get("/api/tokens")).json() == {"tokens": []}
    async with httpx.AsyncClient(base_url=app.base, headers={"Authorization": f"Bearer {token['token']}"}) as script:
        made = await script.post("/api/threads", content=b'{"title": "from a script"}',
                                 headers={"Content-Type": "application/json"})  # no Origin: bearer is CSRF-exempt
        assert made.status_code == 201
        assert [t["title"] for t in (await alice.get("/api/threads")).json()["threads"]] == ["from a script"]
        # a token cannot make tokens (a leaked one would mint others and outlive its revoking)
        minted = await script.post("/api/tokens", json={"name": "another"})
        assert minted.status_code == 403 and minted.json()["error"]["code"] == "session_required"
        assert len((await alice.get("/api/tokens")).json()["tokens"]) == 1
        assert (await bob.request("DELETE", f"/api/tokens/{token['id']}", json={})).status_code == 404  # not bob's
        assert (await alice.request("DELETE", f"/api/tokens/{token['id']}", json={})).status_code == 204
        assert (await script.get("/api/threads")).status_code == 401
    for client in (alice, bob):
        await client.aclose()


async def test_single_sign_on_header_is_believed_from_trusted_proxies_only(make_app, settings):
    app = await make_app(settings, auth_header="Remote-User")
    async with browser_like(app, headers={"Remote-User": "carol"}) as proxied:
        me = await proxied.get("/api/auth/me")
        assert me.status_code == 200 and me.json()["user"]["username"] == "carol"  # created on first sight
        assert (await proxied.post("/api/threads", json={"title": "sso"})).status_code == 201
    # A long name (an e-mail address) is kept whole, request after request; one past 254 characters is refused,
    # never cut to a prefix another person's name may share.
    long_name = "x" * 70 + "@example.org"
    async with browser_like(app, headers={"Remote-User": long_name}) as proxied:
        for _ in range(2):
            me = await proxied.get("/api/auth/me")
            assert me.status_code == 200 and me.json()["user"]["username"] == long_name
    for refused in ("y" * 255, "a\tb"):
        async with browser_like(app, headers={"Remote-User": refused}) as proxied:
            resp = await proxied.get("/api/threads")
            assert resp.status_code == 403 and resp.json()["error"]["code"] == "forbidden"
    assert app.rows("SELECT username FROM users WHERE username LIKE 'y%' OR username LIKE 'a%b'") == []
    stranger = await make_app(settings, auth_header="Remote-User", trusted_proxies=("10.9.9.9",))
    async with httpx.AsyncClient(base_url=stranger.base, headers={"Remote-User": "carol"}) as direct:
        assert (await direct.get("/api/threads")).status_code == 401


async def test_auth_none_is_the_owner_without_signing_in(make_app, settings):
    app = await make_app(settings, auth="none")
    async with browser_like(app) as page:
        assert (await page.get("/api/auth/me")).json()["user"]["username"] == "owner"
        assert (await page.post("/api/threads", json={})).status_code == 201
        assert (await page.post("/api/threads", content=b"{}")).status_code == 403  # CSRF rules still apply


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=ROOT, input=stdin, capture_output=True,
                          text=True, timeout=60)


async def test_command_line_user_management(tmp_path, make_app, settings):
    db = str(tmp_path / "chat.db")
    added = run_cli("users", "--db", db, "add", "dave", "--admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    listed = run_cli("users", "--db", db, "list").stdout
    assert "owner" in listed and "dave" in listed and "admin" in listed
    assert run_cli("users", "--db", db, "add", "dave", "--password-stdin", stdin=PASSWORD + "\n").returncode != 0
    for bad in ("   ", "x" * 65, "tab\there"):  # the API's rules: trimmed, one line, 1-64 characters
        refused = run_cli("users", "--db", db, "add", bad, "--password-stdin", stdin=PASSWORD + "\n")
        assert refused.returncode != 0 and "cannot be a user name" in refused.stderr
    assert run_cli("users", "--db", db, "list").stdout.count("\n") == listed.count("\n")
    app = await make_app(settings)  # same file (settings.db)
    await sign_in(app, "dave")
    assert run_cli("users", "--db", db, "passwd", "dave", "--password-stdin", stdin="another one!\n").returncode == 0
    async with browser_like(app) as page:
        old = await page.post("/api/auth/login", json={"username": "dave", "password": PASSWORD})
        assert old.status_code == 401
    assert run_cli("users", "--db", db, "disable", "dave").returncode == 0
    async with browser_like(app) as page:
        assert (await page.post("/api/auth/login", json={"username": "dave", "password": "another one!"})).status_code == 401
    url = run_cli("users", "--db", db, "login-url", "--base-url", app.base).stdout.strip()
    async with browser_like(app) as page:
        assert (await page.get(url.removeprefix(app.base.rstrip("/")))).status_code == 303
        assert (await page.get("/api/auth/me")).json()["user"]["username"] == "owner"
    token = run_cli("users", "--db", db, "token", "owner").stdout.strip()
    async with httpx.AsyncClient(base_url=app.base, headers={"Authorization": f"Bearer {token}"}) as script:
        assert (await script.get("/api/threads")).status_code == 200


async def test_the_command_line_ends_running_streams_and_stops_a_disabled_users_answers(make_app, settings, fake):
    """The CLI is another process (as a second worker would be): the server finds what it changed by re-checking
    its open streams' sessions, tokens and users every `credential_recheck` seconds."""
    app = await make_app(settings, credential_recheck=0.2, detach_grace=30)  # an answer without a reader goes on
    await add_user(app, "alice")
    page = await sign_in(app, "alice", timeout=30)
    token = (await page.post("/api/tokens", json={"name": "script"})).json()["token"]
    script = httpx.AsyncClient(base_url=app.base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    by_page, by_script = [(await client.post("/api/threads", json={})).json()["id"] for client in (page, script)]
    db = str(settings.db)

    async def answer_while(client, thread_id: int, *cli_args: str, stdin: str = "") -> list[dict]:
        fake.push(Script(tokens=[f"t{i} " for i in range(1500)], delay=0.02))  # 30 s unless something ends it
        stream = asyncio.create_task(stream_until_ended(client, thread_id))
        while not ((generation := app.client.server.app[REGISTRY].get(thread_id)) and generation.text):
            await asyncio.sleep(0.02)
        done = await asyncio.to_thread(run_cli, "users", "--db", db, *cli_args, stdin=stdin)
        assert done.returncode == 0, done.stderr
        return await asyncio.wait_for(stream, 5)

    events = await answer_while(page, by_page, "passwd", "alice", "--password-stdin", stdin="another one!\n")
    assert 0 < len(events) < 1500 and events[-1]["type"] != "done"  # the page's stream ended: its session is gone
    assert (await page.get("/api/auth/me")).status_code == 401
    async with asyncio.timeout(3):  # the answer its session started stops too (not after the 30 s grace)
        while app.client.server.app[REGISTRY].get(by_page):
            await asyncio.sleep(0.05)

    events = await answer_while(script, by_script, "disable", "alice")
    assert 0 < len(events) < 1500 and events[-1]["type"] != "done"  # the token's user is disabled
    while app.client.server.app[REGISTRY].get(by_script):
        await asyncio.sleep(0.05)
    answer = (await app.client.server.app[DB].messages(by_script))[-1]
    assert answer["status"] == "interrupted" and answer["content"].startswith("t0 t1 ")
    await page.aclose()
    await script.aclose()


async def test_start_prints_a_sign_in_url_to_the_console_and_refuses_an_open_server(tmp_path, fake):
    from tests.conftest import write_models_file

    models = write_models_file(tmp_path / "models.yaml", fake)
    server = ServerProcess("--db", str(tmp_path / "x.db"), "--models", str(models))
    server.headers = {"x": "y"}  # no token made in advance: the printed URL is the way in
    await server.start()
    try:
        line = ""
        while "token=" not in line:
            line = await asyncio.to_thread(server.proc.stdout.readline)
        assert " on uvloop: " in line  # the faster loop by default (in-process tests run the standard one)
        url = line.split("sign in as the owner with ")[1].split()[0]
        async with httpx.AsyncClient(follow_redirects=True) as page:
            resp = await page.get(url.replace("localhost", "127.0.0.1"))
            assert resp.status_code == 200  # followed to the page
            assert (await page.get(f"{server.url}/api/auth/me")).json()["user"]["username"] == "owner"
        # A request the HTTP parser refuses (a URL over 8 KB) never reaches the app: a 400, one log line, no
        # traceback.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /api/health?q=" + b"x" * 9000 + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert (await reader.read()).split(b"\r\n")[0].endswith(b" 400 Bad Request")
        writer.close()
        # An API token put in a query parameter by mistake is refused (401) and never written to the log
        async with httpx.AsyncClient() as stray:
            for query in ("access_token=pc_strayvalue1", "q=pc_strayvalue2", "password=strayvalue3"):
                assert (await stray.get(f"{server.url}/api/threads?{query}")).status_code == 401
    finally:
        server.stop()
    log = server.proc.stdout.read()
    assert "Traceback" not in log and "LineTooLong (400)" in log and '" 400 ' in log
    assert "plain HTTP" not in log  # on loopback: no warning
    assert "strayvalue" not in log and log.replace("%5Bhidden%5D", "[hidden]").count("=[hidden]") >= 4, log[-2000:]
    assert "token=[hidden]" in log.replace("%5Bhidden%5D", "[hidden]") and url.split("token=")[1] not in log
    # Once the owner has a password, a start prints the address without a secret (a console is often logged)
    assert run_cli("users", "--db", str(tmp_path / "x.db"), "passwd", "owner", "--password-stdin",
                   stdin="owner password 1\n").returncode == 0
    # (on all interfaces this time: allowed, with a warning that it is plain HTTP)
    server = ServerProcess("--db", str(tmp_path / "x.db"), "--models", str(models), "--host", "0.0.0.0")
    server.headers = {"x": "y"}
    await server.start()
    try:
        line, before = "", []
        while "pinchat is running" not in line:
            line = await asyncio.to_thread(server.proc.stdout.readline)
            before.append(line)
    finally:
        server.stop()
    assert f"sign in with your password at http://localhost:{server.port}/ " in line and "token=" not in line, line
    assert any(s.startswith("warning: --host 0.0.0.0 serves plain HTTP") for s in before), before
    refused = run_cli("--host", "0.0.0.0", "--auth", "none", "--db", str(tmp_path / "y.db"))
    assert refused.returncode != 0
    assert refused.stderr.strip().count("\n") == 0 and "--auth none" in refused.stderr


async def test_session_and_token_ids_are_never_given_again(tmp_path):
    """Streams are held by a session's or token's id, so a new sign-in must not get the id of one that ended (the
    newest row deleted, the next insert took its id: its streams outlived it). A file made before the change keeps
    its sessions and tokens."""
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)  # the schema as it was before (version 3)
    for number, script in enumerate(MIGRATIONS[:3], start=1):
        old.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
    stamp = now()
    old.execute("INSERT INTO users (id, username, created_at) VALUES (1, 'alice', ?)", (stamp,))
    old.execute("INSERT INTO sessions VALUES (1, 'h1', 1, ?, ?)", (stamp, stamp))
    old.execute("INSERT INTO api_tokens VALUES (1, 1, 'script', 't1', ?, NULL)", (stamp,))
    old.commit()
    old.close()
    db = await Database.open(path)
    try:
        accounts = db.accounts
        assert (await accounts.session("h1", 3600))[0] == 1 and (await accounts.token_user("t1"))[0] == 1
        newest = await accounts.create_session(1, "h2")
        await accounts.delete_session(newest)
        assert await accounts.create_session(1, "h3") > newest
        token = (await accounts.create_token(1, "another", "t2"))["id"]
        assert await accounts.delete_token(1, token)
        assert (await accounts.create_token(1, "third", "t3"))["id"] > token
    finally:
        await db.close()


async def test_two_admins_cannot_demote_each_other_at_once_and_the_owner_stays_an_admin(app):
    """Each change an admin makes is written only while they are still an enabled admin (checked in the same
    statement): two admins demoting or disabling each other at the same moment leave one of them an admin (both
    requests got 200 and no admin was left but the owner). The owner is never disabled nor demoted, so an admin
    always remains."""
    owner_id = (await (await app.client.get("/api/auth/me")).json())["user"]["id"]
    for n, change in enumerate(({"is_admin": False}, {"disabled": True})):
        one = await add_user(app, f"admin-a{n}", admin=True)
        two = await add_user(app, f"admin-b{n}", admin=True)
        a, b = await sign_in(app, one["username"]), await sign_in(app, two["username"])
        ra, rb = await asyncio.gather(a.patch(f"/api/users/{two['id']}", json=change),
                                      b.patch(f"/api/users/{one['id']}", json=change))
        await a.aclose()
        await b.aclose()
        assert sorted((ra.status_code, rb.status_code)) == [200, 403], (ra.text, rb.text)
        users = {u["id"]: u for u in (await (await app.client.get("/api/users")).json())["users"]}
        still = [u for u in (users[one["id"]], users[two["id"]]) if u["is_admin"] and not u["disabled"]]
        assert len(still) == 1, users
        for body in ({"is_admin": False}, {"disabled": True}):
            admin = await sign_in(app, still[0]["username"])
            resp = await admin.patch(f"/api/users/{owner_id}", json=body)
            await admin.aclose()
            assert resp.status_code == 422 and resp.json()["error"]["code"] == "cannot_change_owner", resp.text
    owner = next(u for u in (await (await app.client.get("/api/users")).json())["users"] if u["id"] == owner_id)
    assert owner["is_admin"] and not owner["disabled"]
