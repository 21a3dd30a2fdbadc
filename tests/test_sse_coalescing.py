"""Coalescing when the loop is late, through the real app: real LiteLLM against the scripted upstream, reached over
a link that delivers the upstream's bytes in bursts, so several chunks land in one read and several token events
are pending when the response's writer wakes. Every character arrives in order, in fewer frames than tokens, and
a frame's id is its last token's: a resume from it goes on after the whole run."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import pytest
from httpx_sse import aconnect_sse

from tests.conftest import write_models_file
from tests.fake_upstream import FakeUpstream, Script
from tests.test_resume import read_events, text

TOKENS = [f"w{i}é " for i in range(80)]


class BurstyLink:
    """A TCP relay to `upstream` that holds the upstream's bytes for `window` seconds after the first of a burst,
    then writes them to the client in one write (like a late event loop or a coalescing network)."""

    def __init__(self, upstream: FakeUpstream, window: float) -> None:
        self.upstream, self.window = upstream, window
        self.server: asyncio.Server | None = None
        self.pumps: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def start(self) -> BurstyLink:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        self.server.close()
        for pump in self.pumps:
            pump.cancel()
        await asyncio.gather(*self.pumps, return_exceptions=True)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", urlsplit(self.upstream.url).port)
        for pump in (self._pump(client_r, up_w, 0.0), self._pump(up_r, client_w, self.window)):
            task = asyncio.create_task(pump)
            self.pumps.add(task)
            task.add_done_callback(self.pumps.discard)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, window: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(1 << 16):
                parts, deadline = [data], loop.time() + window
                while (left := deadline - loop.time()) > 0:
                    try:
                        more = await asyncio.wait_for(reader.read(1 << 16), left)
                    except TimeoutError:
                        break
                    if not more:
                        break
                    parts.append(more)
                writer.write(b"".join(parts))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


# LiteLLM's own routes give the app one event per upstream token, so the runs of pending events are the writer's;
# on our openai_compatible/ route one read of the upstream is one event already (tests/test_openai_compatible.py).
@pytest.fixture(params=["openai", "hosted_vllm"])
async def late_app(request, make_app, settings, fake, tmp_path):
    link = await BurstyLink(fake, window=0.05).start()
    models = write_models_file(tmp_path / "bursty.yaml", link, route=request.param)  # type: ignore[arg-type]
    yield await make_app(settings, models=models, detach_grace=5)
    await link.close()


def seq_of(event: dict) -> int:
    return int(event["id"].split(".")[1])


async def test_a_late_loop_sends_each_run_of_pending_tokens_as_one_frame_with_its_last_id(late_app, fake):
    fake.push(Script(tokens=TOKENS, delay=0.005))
    thread = await late_app.new_thread()

    events = await late_app.chat(thread["id"], "go")

    start, done = events[0], events[-1]
    tokens = [e for e in events if e["type"] == "token"]
    assert [e["type"] for e in events] == ["start"] + ["token"] * len(tokens) + ["done"]
    assert text(events) == "".join(TOKENS)  # exact, in order
    assert len(tokens) < len(TOKENS)  # runs went out as one frame each
    # Event n + 1 is token n: a frame's id is its last token's, so the text up to it is exactly that many tokens.
    assert all(e["id"].startswith(f"{start['message_id']}.") for e in events)
    assert seq_of(start) == 1 and seq_of(done) == len(TOKENS) + 2
    so_far = ""
    for event in tokens:
        so_far += event["text"]
        assert so_far == "".join(TOKENS[:seq_of(event) - 1])
    assert done["usage"]["completion_tokens"] == len(TOKENS) and done["finish_reason"] == "stop"
    rows = late_app.rows("SELECT status, content FROM messages WHERE id = ?", start["message_id"])
    assert tuple(rows[0]) == ("complete", "".join(TOKENS))


async def test_a_resume_from_a_coalesced_frame_goes_on_after_its_whole_run(late_app, fake):
    fake.push(Script(tokens=TOKENS, delay=0.01))
    thread = await late_app.new_thread()
    path = f"/api/threads/{thread['id']}"
    async with late_app.http(timeout=30) as http:
        first = await read_until_coalesced(http, path)
        rest, status = await read_events(http, "GET", path + "/stream", headers={"Last-Event-ID": first[-1]["id"]})
    assert status == 200
    assert seq_of(rest[0]) == seq_of(first[-1]) + 1
    assert text(first) + text(rest) == "".join(TOKENS)  # no gap, no duplicate
    assert rest[-1]["type"] == "done"


async def read_until_coalesced(http, path: str) -> list[dict]:
    """Start a chat and read it until a frame that carried more than one token, then drop the connection."""
    events = []
    async with aconnect_sse(http, "POST", path + "/chat", json={"message": "go"}) as src:
        async for sse in src.aiter_sse():
            if sse.data:
                events.append({"id": sse.id, **json.loads(sse.data)})
            if events and events[-1]["type"] == "token" and seq_of(events[-1]) - seq_of(events[-2]) > 1:
                return events
    raise AssertionError("no coalesced frame before the end")
