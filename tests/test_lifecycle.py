"""The server as a real process: a crash loses at most the last flush window, SIGTERM saves open streams."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.conftest import write_models_file
from tests.fake_upstream import Script
from tests.server_process import ROOT, ServerProcess


def answer(db, message_id):
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT content, status FROM messages WHERE id = ?", (message_id,)).fetchone()
    finally:
        conn.close()


@pytest.fixture
def server_args(tmp_path, fake):
    models = write_models_file(tmp_path / "models.yaml", fake)
    return ["--db", str(tmp_path / "chat.db"), "--models", str(models), "--flush-interval", "0.2"]


async def start_stream(http: httpx.AsyncClient, fake) -> tuple[dict, list, object]:
    fake.push(Script(tokens=[f"s{i} " for i in range(400)], delay=0.02))
    thread = (await http.post("/api/threads", json={})).json()
    ctx = aconnect_sse(http, "POST", f"/api/threads/{thread['id']}/chat", json={"message": "go"})
    return thread, ctx


async def test_crash_keeps_flushed_text_and_restart_marks_it_interrupted(tmp_path, fake, server_args):
    server = await ServerProcess(*server_args).start()
    try:
        async with server.http(timeout=10) as http:
            thread, ctx = await start_stream(http, fake)
            async with ctx as src:
                events = []
                async for sse in src.aiter_sse():  # still reading: the client stays connected
                    events.append(json.loads(sse.data))
                    if len(events) == 30:
                        await asyncio.sleep(0.5)  # a few flushes
                        server.proc.kill()  # SIGKILL: no chance to save anything more
                        await server.wait()
    except httpx.TransportError:
        pass
    finally:
        server.stop()
    db = tmp_path / "chat.db"
    content, status = answer(db, events[0]["message_id"])
    assert status == "streaming" and content.startswith("s0 s1 s2 ")  # flushed during the stream
    restarted = await ServerProcess(*server_args).start()
    try:
        async with restarted.http() as http:
            detail = (await http.get(f"/api/threads/{thread['id']}")).json()
        assert [m["status"] for m in detail["messages"]] == ["complete", "interrupted"]
        assert detail["messages"][1]["content"] == content
    finally:
        restarted.stop()


async def test_sigterm_saves_open_streams_as_interrupted(tmp_path, fake, server_args):
    server = await ServerProcess(*server_args).start()
    events = []
    try:
        async with server.http(timeout=10) as http:
            thread, ctx = await start_stream(http, fake)
            async with ctx as src:
                async for sse in src.aiter_sse():
                    events.append(json.loads(sse.data))
                    if len(events) == 10:
                        server.proc.send_signal(signal.SIGTERM)
        assert await server.wait() == 0
    finally:
        server.stop()
    assert events[-1]["type"] == "interrupted" and events[-1]["reason"] == "shutdown"
    text = "".join(e["text"] for e in events if e["type"] == "token")
    assert answer(tmp_path / "chat.db", events[0]["message_id"]) == (text, "interrupted")
    assert (await fake.wait_ended()).outcome == "client_closed"


async def test_bad_models_file_is_a_clear_startup_error(tmp_path):
    bad = tmp_path / "models.yaml"
    bad.write_text("model_list:\n  - model_name: other\n    litellm_params: {model: openai/x}\n")
    server = ServerProcess("--db", str(tmp_path / "x.db"), "--models", str(bad))
    with pytest.raises(RuntimeError, match="model_name: chat"):
        await server.start()
    assert "Traceback" not in server.output()


async def test_a_taken_port_is_a_clear_startup_error(tmp_path, server_args):
    first = await ServerProcess(*server_args).start()
    try:
        second = subprocess.run(
            [sys.executable, "-m", "server", "--port", str(first.port), "--db", str(tmp_path / "other.db"),
             "--models", server_args[3]], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert second.returncode != 0
        assert f"cannot listen on 127.0.0.1:{first.port}" in second.stderr
        assert "Traceback" not in second.stdout + second.stderr
    finally:
        first.stop()


async def test_an_address_not_of_this_machine_is_a_clear_startup_error(tmp_path, server_args):
    """192.0.2.1 (TEST-NET-1) is never an address of this machine: the error says to check --host, not the port."""
    refused = subprocess.run(
        [sys.executable, "-m", "server", "--host", "192.0.2.1", "--db", str(tmp_path / "other.db"),
         "--models", server_args[3]], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "cannot listen on 192.0.2.1" in refused.stderr and "check --host" in refused.stderr, refused.stderr
    assert "--port" not in refused.stderr and "Traceback" not in refused.stdout + refused.stderr


async def test_the_console_log_has_one_line_per_request_and_no_litellm_chatter(tmp_path, fake, server_args):
    """LiteLLM's per-request INFO lines (each printed twice, by its handler and ours) are kept out of the log;
    LITELLM_LOG brings them back, once each, in our format."""
    for env, chatter in (({}, False), ({"LITELLM_LOG": "INFO"}, True)):
        server = await ServerProcess(*server_args, env=env).start()
        try:
            fake.push(Script(tokens=["a ", "b"]))
            async with server.http(timeout=10) as http:
                thread = (await http.post("/api/threads", json={})).json()
                async with aconnect_sse(http, "POST", f"/api/threads/{thread['id']}/chat",
                                        json={"message": "hi"}) as src:
                    events = [json.loads(sse.data) async for sse in src.aiter_sse()]
            assert events[-1]["type"] == "done"
            server.proc.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
            log = server.output()
        finally:
            server.stop()
        assert log.count(f"POST /api/threads/{thread['id']}/chat") == 1, log
        assert ("INFO LiteLLM: \nLiteLLM completion() model= fake-model;" in log) == chatter, log
        assert " - LiteLLM:INFO: " not in log and " - LiteLLM Router:INFO: " not in log  # LiteLLM's own handler


async def test_access_lines_of_proxied_posts_show_the_client_and_keep_the_connection(tmp_path, fake, server_args):
    """Behind nginx (a loopback peer is a trusted proxy) the access line of a request with a body shows the address
    nginx forwards, and logging it breaks nothing: the next request on the same keep-alive connection is answered
    (the logger once raised on every POST, dropping its line and the connection: nginx answered 502)."""
    server = await ServerProcess(*server_args).start()
    try:
        forwarded = {"X-Real-IP": "203.0.113.9", "X-Forwarded-For": "203.0.113.9"}
        limits = httpx.Limits(max_connections=1)  # one connection, kept alive: every request after the first reuses it
        async with server.http(timeout=10, limits=limits) as http:
            http.headers.update(forwarded)
            statuses = [(await http.post("/api/threads?probe=proxied-post", json={})).status_code for _ in range(5)]
            statuses.append((await http.get("/api/health?probe=proxied-get")).status_code)
            statuses.append((await http.get("/?token=s3cret-sign-in&probe=proxied-token")).status_code)
        server.proc.send_signal(signal.SIGTERM)
        assert await server.wait() == 0
        log = server.output()
    finally:
        server.stop()
    assert statuses[:6] == [201] * 5 + [200], statuses
    lines = [line for line in log.splitlines() if "aiohttp.access" in line]
    for probe, count in (("proxied-post", 5), ("proxied-get", 1), ("proxied-token", 1)):
        mine = [line for line in lines if f"probe={probe} " in line]
        assert len(mine) == count and all(" 203.0.113.9 " in line for line in mine), log
    assert "s3cret-sign-in" not in log and "token=[hidden]" in log
    assert "Traceback" not in log and "Error handling request" not in log, log
