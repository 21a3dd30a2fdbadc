"""Shared fixtures: the scripted fake upstream(s), a models.yaml pointing at them, and the real app on a real port."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before LiteLLM is imported, as __main__ does
# Server processes started by tests (browser, nginx, lifecycle) stop an answer when its client goes, as before
# resume: the page's Stop still aborts the fetch only. tests/test_resume.py covers the grace.
os.environ.setdefault("PINCHAT_DETACH_GRACE", "0")

import asyncio
import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import yaml
from httpx_sse import aconnect_sse

from server.config import Settings
from tests.fake_upstream import FakeUpstream


def write_models_file(path: Path, primary: FakeUpstream, backup: FakeUpstream | None = None,
                      route: str = "openai_compatible") -> Path:
    """A LiteLLM model_list: groups `chat` and `utility` on `primary`; with `backup`, a fallback group
    `chat-backup` on it; every deployment through LiteLLM's `route` (provider prefix)."""
    def deployment(name: str, fake: FakeUpstream, model: str = "fake-model") -> dict:
        return {"model_name": name,
                "litellm_params": {"model": f"{route}/{model}", "api_base": fake.url, "api_key": "sk-fake"}}

    config: dict = {"model_list": [deployment("chat", primary), deployment("utility", primary, "fake-utility")],
                    "router_settings": {"num_retries": 0}}
    if backup is not None:
        config["model_list"].append(deployment("chat-backup", backup))
        config["router_settings"]["fallbacks"] = [{"chat": ["chat-backup"]}]
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
async def fake():
    upstream = await FakeUpstream().start()
    yield upstream
    await upstream.close()


@pytest.fixture
async def backup():
    upstream = await FakeUpstream().start()
    yield upstream
    await upstream.close()


@pytest.fixture
def settings(tmp_path, fake) -> Settings:
    # detach_grace=0: a vanished client stops its answer at once, as before resume existed; tests/test_resume.py
    # sets a grace of its own.
    return Settings(db=tmp_path / "chat.db", models=write_models_file(tmp_path / "models.yaml", fake),
                    flush_interval=0.1, detach_grace=0)


async def api_token(db_path: Path, username: str | None = None) -> str:
    """A personal API token for `username` (default: the owner, created on first use), written straight into the
    database file as `python -m server users token` does."""
    from server.credentials import TOKEN_PREFIX, new_secret, secret_hash
    from server.db import Database

    db = await Database.open(db_path)
    try:
        owner = await db.accounts.ensure_owner()
        user = owner if username is None else await db.accounts.user_by_name(username)
        if user is None:
            user = await db.accounts.create_user(username, None)
        secret = TOKEN_PREFIX + new_secret()
        await db.accounts.create_token(user["id"], "tests", secret_hash(secret))
        return secret
    finally:
        await db.close()


class App:
    """The real app on a real port, with helpers that speak its HTTP API (as the owner, with an API token)."""

    def __init__(self, client, settings: Settings, token: str) -> None:
        self.client = client  # aiohttp TestClient, sending the owner's token
        self.settings = settings
        self.base = str(client.make_url("/"))
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"}

    def http(self, **kwargs) -> httpx.AsyncClient:
        """An independent HTTP client (httpx) signed in as the owner."""
        return httpx.AsyncClient(base_url=self.base, headers=self.headers, **kwargs)

    async def post(self, path: str, body=None, **kwargs):
        return await self.client.post(path, json=body, **kwargs)

    async def new_thread(self, **body) -> dict:
        resp = await self.post("/api/threads", body)
        assert resp.status == 201, await resp.text()
        return await resp.json()

    async def thread(self, thread_id: int) -> dict:
        resp = await self.client.get(f"/api/threads/{thread_id}")
        assert resp.status == 200, await resp.text()
        return await resp.json()

    async def chat(self, thread_id: int, message: str) -> list[dict]:
        """Send a message and read the whole SSE answer with an independent parser (httpx-sse)."""
        events = []
        async with self.http(timeout=30) as http:
            async with aconnect_sse(http, "POST", f"/api/threads/{thread_id}/chat", json={"message": message}) as src:
                assert src.response.status_code == 200
                async for sse in src.aiter_sse():
                    events.append({"id": sse.id, **json.loads(sse.data)})
        return events

    async def idle(self) -> None:
        """Wait until the app's background model work (titles, summaries, suggestions) is done."""
        from server.keys import UTILITY

        utility = self.client.server.app[UTILITY]
        while utility.tasks:
            await asyncio.gather(*list(utility.tasks), return_exceptions=True)

    def rows(self, sql: str, *args) -> list[sqlite3.Row]:
        """Read the SQLite file directly, as another process would."""
        conn = sqlite3.connect(self.settings.db)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()


@pytest.fixture
async def make_app(aiohttp_client):
    from server.app import create_app

    async def start(settings: Settings, **overrides) -> App:
        settings = replace(settings, **overrides)
        token = await api_token(settings.db)
        client = await aiohttp_client(create_app(settings), headers={"Authorization": f"Bearer {token}"})
        return App(client, settings, token)

    return start


@pytest.fixture
async def app(make_app, settings) -> App:
    return await make_app(settings)


PASSWORD = "correct horse battery"


async def add_user(app: App, username: str, password: str = PASSWORD, *, admin: bool = False) -> dict:
    resp = await app.post("/api/users", {"username": username, "password": password, "is_admin": admin})
    assert resp.status == 201, await resp.text()
    return await resp.json()


def browser_like(app: App, **kwargs) -> httpx.AsyncClient:
    """A client with no token that behaves like our page: cookies, and the page's Origin on every request."""
    headers = {"Origin": app.base.rstrip("/"), **kwargs.pop("headers", {})}
    return httpx.AsyncClient(base_url=app.base, headers=headers, **kwargs)


async def sign_in(app: App, username: str, password: str = PASSWORD, **kwargs) -> httpx.AsyncClient:
    client = browser_like(app, **kwargs)
    resp = await client.post("/api/auth/login", json={"username": username, "password": password})
    assert resp.status_code == 200, resp.text
    return client
