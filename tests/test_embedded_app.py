"""The app on its default model: the real embedded SmolLM2 through the whole HTTP path."""

from __future__ import annotations

import json

import httpx
from httpx_sse import aconnect_sse

from server.config import Settings


async def test_default_app_streams_the_embedded_model_and_stop_saves_it(make_app, tmp_path):
    app = await make_app(Settings(db=tmp_path / "chat.db", models=None, pool_size=1))
    thread = await app.new_thread()
    events = []
    async with app.http(timeout=60) as http:
        async with aconnect_sse(http, "POST", f"/api/threads/{thread['id']}/chat",
                                json={"message": "Tell me a long story about a dragon who learns to bake bread."}) as src:
            async for sse in src.aiter_sse():
                events.append(json.loads(sse.data))
                if events[-1]["type"] == "token" and sum(e["type"] == "token" for e in events) == 5:
                    resp = await http.post(f"/api/threads/{thread['id']}/cancel")
                    assert resp.json() == {"cancelled": True}
    assert events[0]["type"] == "start" and events[-1]["type"] == "interrupted"
    text = "".join(e["text"] for e in events if e["type"] == "token")
    assert text.strip()
    detail = await app.thread(thread["id"])
    assert (detail["messages"][1]["status"], detail["messages"][1]["content"]) == ("interrupted", text)
