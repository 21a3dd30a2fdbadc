"""The LiteLLM route to an OpenAI-compatible server: `openai/` and `hosted_vllm/` (the one models.example.yaml
recommends, measured cheaper per chunk by bench/routes.py) behave the same for the app: the Router falls back to a
backup deployment on 429 and 5xx before the first token, usage and finish reason are saved alike, and a cancel
closes the upstream connection at once."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from httpx_sse import aconnect_sse

from tests.conftest import write_models_file
from tests.fake_upstream import Script
from tests.test_chat_stream import answer_row, kinds, read_until_tokens

ROUTES = ["openai", "hosted_vllm", "openai_compatible"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("status", [429, 500])
async def test_failure_before_the_first_token_falls_back_with_usage_and_finish_reason_saved(
        tmp_path, make_app, settings, fake, backup, route, status):
    app = await make_app(settings, models=write_models_file(tmp_path / "models.yaml", fake, backup, route=route))
    fake.push(Script(status=status))
    tokens = ["from ", "the ", "backup"]
    backup.push(Script(tokens=tokens, finish_reason="length"))
    thread = await app.new_thread()

    events = await app.chat(thread["id"], "hello")

    assert kinds(events) == ["start", "token", "done"]
    assert "".join(e["text"] for e in events if e["type"] == "token") == "".join(tokens)
    done = events[-1]
    assert done["finish_reason"] == "length" and done["usage"]["completion_tokens"] == len(tokens)
    assert [r.outcome for r in fake.records] == ["error_status"]
    assert [r.outcome for r in backup.records] == ["completed"]
    row = answer_row(app, events[0]["message_id"])
    assert (row["status"], row["content"], row["finish_reason"]) == ("complete", "".join(tokens), "length")
    usage = json.loads(row["usage"])
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        done["usage"]["prompt_tokens"], len(tokens), done["usage"]["prompt_tokens"] + len(tokens))


@pytest.mark.parametrize("route", ROUTES)
async def test_cancel_closes_the_upstream_at_once(tmp_path, make_app, settings, fake, route):
    app = await make_app(settings, models=write_models_file(tmp_path / "models.yaml", fake, route=route))
    fake.push(Script(tokens=[f"c{i} " for i in range(1000)], delay=0.01))
    thread = await app.new_thread()
    async with app.http(timeout=10) as http:
        async with aconnect_sse(http, "POST", f"/api/threads/{thread['id']}/chat", json={"message": "go"}) as src:
            events = await read_until_tokens(src, 3)
            resp = await app.post(f"/api/threads/{thread['id']}/cancel")
            cancelled = time.monotonic()
            assert (resp.status, await resp.json()) == (200, {"cancelled": True})
            record = await fake.wait_ended(timeout=1.0)
            closed_after = time.monotonic() - cancelled
            async for sse in src.sse:
                events.append(json.loads(sse.data))
    assert record.outcome == "client_closed"
    assert closed_after < 0.5  # the upstream sees the close within milliseconds; the margin is for loaded CI
    sent = record.tokens_sent
    await asyncio.sleep(0.1)
    assert record.tokens_sent == sent < 1000  # it stopped writing
    assert events[-1] == {"type": "interrupted", "message_id": events[0]["message_id"], "reason": "cancelled"}
    row = answer_row(app, events[0]["message_id"])
    assert (row["status"], row["content"]) == ("interrupted", "".join(e["text"] for e in events
                                                                       if e["type"] == "token"))
