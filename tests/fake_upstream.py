"""A scripted OpenAI-compatible upstream for tests and benchmarks.

It answers `POST /v1/chat/completions` (streaming and not) with chosen tokens, delays and faults, and records every
request it saw and how each one ended (completed, client closed the connection, fault injected).

What a request gets, in order of precedence:
1. the next `Script` pushed with `push()` (in-process tests);
2. directives in the last user message, e.g. `[[tokens=40 delay_ms=50 prefix=A]]` (tests driving the app from
   another process: browser, nginx, benchmarks). Keys: tokens, prefix, delay_ms, first_delay_ms, status,
   fail_after, hang_after, finish (the finish reason, e.g. length), text (urlsafe base64 of a literal reply, streamed in pieces of `chunk` characters);
3. a short default reply.

Requests for a model whose name contains "utility" (the app's background group: titles, summaries, starter
questions) are kept apart: their own `push_utility()` queue, `utility_records`, and a default reply that fits the
prompt, so background work never takes a script meant for a chat.

Run it alone: `python -m tests.fake_upstream --port 9100`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web

DIRECTIVE = re.compile(r"\[\[([^\]]*)\]\]")
DEFAULT_REPLY = ["Hello", "!", " I am", " the", " scripted", " fake", " upstream", "."]


@dataclass
class Script:
    tokens: list[str] = field(default_factory=lambda: list(DEFAULT_REPLY))
    delay: float = 0.0  # seconds between tokens
    first_delay: float = 0.0  # silence before the first token
    status: int = 200  # non-200: fail before any token, with an OpenAI-style error body
    fail_after: int | None = None  # drop the connection after this many tokens
    hang_after: int | None = None  # go silent for ever after this many tokens
    finish_reason: str = "stop"
    send_usage: bool = True  # False: a server that ignores stream_options.include_usage
    error_after: int | None = None  # after this many tokens, an OpenAI-style `{"error": ...}` event ends the stream

    @classmethod
    def from_message(cls, text: str) -> Script | None:
        match = DIRECTIVE.search(text)
        if not match:
            return None
        opts = dict(part.split("=", 1) for part in match.group(1).split() if "=" in part)
        prefix = opts.get("prefix", "t")
        count = int(opts.get("tokens", 10))
        tokens = [f"{prefix}{i} " for i in range(count)]
        if "text" in opts:  # literal text (urlsafe base64, e.g. Markdown), streamed in pieces of `chunk` characters
            text = base64.urlsafe_b64decode(opts["text"].encode()).decode()
            size = max(1, int(opts.get("chunk", 4)))
            tokens = [text[i:i + size] for i in range(0, len(text), size)]
        return cls(
            tokens=tokens,
            delay=int(opts.get("delay_ms", 0)) / 1000,
            first_delay=int(opts.get("first_delay_ms", 0)) / 1000,
            status=int(opts.get("status", 200)),
            fail_after=int(opts["fail_after"]) if "fail_after" in opts else None,
            hang_after=int(opts["hang_after"]) if "hang_after" in opts else None,
            finish_reason=opts.get("finish", "stop"),
        )


@dataclass
class Record:
    body: dict
    headers: dict = field(default_factory=dict)
    outcome: str = "open"  # open | completed | client_closed | failed | error_status
    tokens_sent: int = 0
    send_times: list[float] = field(default_factory=list)  # time.time() when each token was written
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def messages(self) -> list[dict]:
        return self.body.get("messages", [])


class FakeUpstream:
    def __init__(self) -> None:
        self.scripts: deque[Script] = deque()
        self.records: list[Record] = []
        self.utility_scripts: deque[Script] = deque()
        self.utility_records: list[Record] = []
        self.request_seen = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The `api_base` to give LiteLLM."""
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    def push_utility(self, *scripts: Script) -> None:
        self.utility_scripts.extend(scripts)

    async def start(self, port: int = 0) -> FakeUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        # handler_cancellation: notice a client that closes while we are silent, like a real provider would.
        # shutdown_timeout: now and then (1 run in 3, `openai/` route, after a scripted 5xx before a fallback) a
        # connection of LiteLLM's process-wide client is still counted as busy when the test ends (not traced
        # further: also on the code before issue 14); closing would wait aiohttp's default 60 s for it.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def wait_ended(self, index: int = -1, timeout: float = 5.0) -> Record:
        """Wait until request `index` has ended (completed, failed or closed by the client)."""
        deadline = time.monotonic() + timeout
        while len(self.records) <= (index if index >= 0 else 0):
            if time.monotonic() > deadline:
                raise TimeoutError("the fake upstream saw no such request")
            await asyncio.sleep(0.01)
        record = self.records[index]
        await asyncio.wait_for(record.ended.wait(), max(0.0, deadline - time.monotonic()))
        return record

    def _script_for(self, body: dict, utility: bool) -> Script:
        queue = self.utility_scripts if utility else self.scripts
        if queue:
            return queue.popleft()
        users = [m for m in body.get("messages", []) if m.get("role") == "user"]
        content = users[-1].get("content", "") if users else ""
        content = content if isinstance(content, str) else ""
        if utility:
            return Script(tokens=[_utility_reply(content)])
        return Script.from_message(content) or Script()

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        record = Record(body=body, headers=dict(request.headers))
        utility = "utility" in str(body.get("model", ""))
        (self.utility_records if utility else self.records).append(record)
        self.request_seen.set()
        script = self._script_for(body, utility)
        try:
            if script.status != 200:
                record.outcome = "error_status"
                return web.json_response(
                    {"error": {"message": f"scripted failure {script.status}", "type": "server_error"}},
                    status=script.status,
                )
            if not body.get("stream"):
                await asyncio.sleep(script.first_delay)
                record.outcome = "completed"
                return web.json_response(_completion(body, "".join(script.tokens), script.finish_reason))
            return await self._stream(request, body, script, record)
        finally:
            if record.outcome == "open":
                record.outcome = "client_closed"
            record.ended.set()

    async def _stream(self, request: web.Request, body: dict, script: Script, record: Record) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        model = body.get("model", "fake")
        try:
            await asyncio.sleep(script.first_delay)
            for i, token in enumerate(script.tokens):
                if script.fail_after is not None and i == script.fail_after:
                    record.outcome = "failed"
                    request.transport.abort()  # a provider dropping the connection mid-stream
                    return resp
                if script.error_after is not None and i == script.error_after:
                    await resp.write(_frame({"error": {"message": "scripted error event", "code": 503}}))
                    record.outcome = "failed"
                    return resp
                if script.hang_after is not None and i == script.hang_after:
                    await asyncio.Event().wait()  # silent until the client goes away
                if i and script.delay:
                    await asyncio.sleep(script.delay)
                await resp.write(_frame(_chunk(model, {"content": token} if i else {"role": "assistant", "content": token})))
                record.tokens_sent += 1
                record.send_times.append(time.time())
            await resp.write(_frame(_chunk(model, {}, script.finish_reason)))
            if script.send_usage and (body.get("stream_options") or {}).get("include_usage"):
                usage = {"prompt_tokens": _count_prompt(body), "completion_tokens": len(script.tokens)}
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                await resp.write(_frame({**_chunk(model, {}), "choices": [], "usage": usage}))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            record.outcome = "completed"
        except (ConnectionResetError, asyncio.CancelledError):
            record.outcome = "client_closed"
            raise
        return resp


def _utility_reply(prompt: str) -> str:
    if "summary" in prompt:
        return f"Summary of {prompt.count(chr(10) + 'user: ') + prompt.count(chr(10) + 'assistant: ')} new messages."
    if "title" in prompt:
        return "Scripted Title"
    if "questions" in prompt:
        return "1. What does this passage mean?\n2. Where does it come from?\n3. How is it used?"
    return "ok"


def _chunk(model: str, delta: dict, finish_reason: str | None = None) -> dict:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def _completion(body: dict, text: str, finish_reason: str) -> dict:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": _count_prompt(body), "completion_tokens": len(text.split()), "total_tokens": 0},
    }


def _count_prompt(body: dict) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))


def _frame(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


async def _serve(port: int) -> None:
    fake = await FakeUpstream().start(port)
    print(f"fake upstream at {fake.url}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=9100)
    asyncio.run(_serve(parser.parse_args().port))
