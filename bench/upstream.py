"""The load upstream: an OpenAI-compatible `POST /v1/chat/completions` that streams paced, time-stamped tokens.

Each token's text carries the wall-clock time (time.time(), CLOCK_REALTIME, comparable across processes on one
machine) at which it was written to the socket: `~1732461234.123456~ `. The first token also carries the time the
request arrived: `^1732461234.120001^~1732461234.123456~ `. A client computes added latency = receive - send.

The pace comes from a directive in the last user message, `[[bench tokens=300 rate=30 first_delay_ms=0]]`
(without one: 10 tokens at 30/s). Same wire format as tests/fake_upstream.py (role delta first, finish chunk,
optional usage chunk, `data: [DONE]`), but written on raw asyncio transports with one timer per token, so
thousands of tokens per second cost a few percent of a core and never distort what is being measured.

Run alone: `python -m bench.upstream --port 9200` (prints `ready <port>`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time

DIRECTIVE = re.compile(rb"\[\[bench([^\]]*)\]\]")
HEADERS = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n")


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class Stream:
    """One streamed completion on a connection: a timer per token, written with its send time."""

    __slots__ = ("conn", "loop", "tokens", "interval", "model", "usage", "arrival", "i", "t0", "handle", "prompt")

    def __init__(self, conn: UpstreamProtocol, body: dict, opts: dict[str, float], arrival: float) -> None:
        self.conn = conn
        self.loop = conn.loop
        self.tokens = int(opts.get("tokens", 10))
        self.interval = 1.0 / float(opts.get("rate", 30))
        self.model = json.dumps(body.get("model", "bench"))[1:-1].encode()
        self.usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        self.arrival = arrival
        self.i = 0
        self.t0 = self.loop.time() + float(opts.get("first_delay_ms", 0)) / 1000
        self.handle = self.loop.call_at(self.t0, self.tick)

    def frame(self, delta: bytes, finish: bytes = b"null") -> bytes:
        return _chunk(b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":%d,"model":"%s",'
                      b'"choices":[{"index":0,"delta":{%s},"finish_reason":%s}]}\n\n'
                      % (int(self.arrival), self.model, delta, finish))

    def tick(self) -> None:
        transport = self.conn.transport
        if transport is None or transport.is_closing():
            return
        now = time.time()
        if self.i == 0:
            text = b'"role":"assistant","content":"^%.6f^~%.6f~ "' % (self.arrival, now)
        else:
            text = b'"content":"~%.6f~ "' % now
        transport.write(self.frame(text))
        self.i += 1
        if self.i < self.tokens:
            self.handle = self.loop.call_at(self.t0 + self.i * self.interval, self.tick)
            return
        tail = self.frame(b"", b'"stop"')
        if self.usage:
            usage = b'{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}' % (
                self.prompt, self.tokens, self.prompt + self.tokens)
            tail += _chunk(b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":%d,'
                           b'"model":"%s","choices":[],"usage":%s}\n\n' % (int(self.arrival), self.model, usage))
        tail += _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        transport.write(tail)
        self.conn.stream_ended()

    def cancel(self) -> None:
        self.handle.cancel()


class UpstreamProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, only what OpenAI clients (httpx, aiohttp) send: Content-Length bodies."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.stream: Stream | None = None
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stream is not None:
            self.stream.cancel()
            self.stream = None
        self.transport = None

    def data_received(self, data: bytes) -> None:
        arrival = time.time()
        self.buf += data
        while self.stream is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
            length = int(headers.get("content-length", 0))
            if len(self.buf) < end + 4 + length:
                return
            body_bytes = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            self.keep_alive = headers.get("connection", "").lower() != "close"
            self.handle(head[0], body_bytes, arrival)

    def handle(self, request_line: str, body_bytes: bytes, arrival: float) -> None:
        assert self.transport is not None
        method, _, rest = request_line.partition(" ")
        path = rest.split(" ")[0]
        if method != "POST" or not path.endswith("/chat/completions"):
            self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return
        body = json.loads(body_bytes or b"{}")
        messages = body.get("messages") or [{}]
        users = [m for m in messages if m.get("role") == "user"] or [{}]
        match = DIRECTIVE.search(str(users[-1].get("content", "")).encode())
        opts = dict(p.split("=", 1) for p in (match.group(1).decode().split() if match else []) if "=" in p)
        if not body.get("stream"):
            text = "".join(f"~{time.time():.6f}~ " for _ in range(int(opts.get("tokens", 10))))
            payload = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion", "created": int(arrival),
                                  "model": body.get("model", "bench"),
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                               "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(payload), payload))
            return
        self.transport.write(HEADERS)
        self.stream = Stream(self, body, {k: float(v) for k, v in opts.items()}, arrival)

    def stream_ended(self) -> None:
        self.stream = None
        if not self.keep_alive and self.transport is not None:
            self.transport.close()
        elif self.buf:
            self.data_received(b"")


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: UpstreamProtocol(loop), host, port, backlog=4096)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
