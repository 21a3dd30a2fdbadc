"""The load upstream: an OpenAI-compatible `POST /v1/chat/completions` that streams paced, time-stamped tokens.

Each token's text carries the wall-clock time (time.time(), CLOCK_REALTIME, comparable across processes on one
machine) at which it was written to the socket: `~1732461234.123456~ `. The first token also carries the time the
request arrived: `^1732461234.120001^~1732461234.123456~ `. A client computes added latency = receive - send.

The pace comes from a directive in the last user message, `[[bench tokens=300 rate=30 first_delay_ms=0]]`
(without one: 10 tokens at 30/s). `md=1` makes the tokens Markdown-heavy text (`MD_PIECES`, cycled): headings,
paragraphs with **bold**, `code`, links and inline math, bullet and numbered lists, a quote, fenced Python code,
GFM tables and `$$..$$` display math. Every token still carries its `~<send time>~` marker, placed where it stays
plain visible text after rendering (after a heading's words, in a code comment, in a table cell, outside math,
never next to another `~`, so that no `~~` strikethrough run can form); `python -m bench.upstream --check-md`
renders a stream of them with the page's own renderer (web/py/markdown_render.py) and checks that every marker
comes out as text, in order. Same wire format as tests/fake_upstream.py (role delta first, finish chunk,
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


# Markdown-heavy tokens: each piece is one token, `{m}` is where its marker goes. A piece holds a construct whole
# where a marker inside would break it (a `$..$` formula, a table's delimiter row, a code fence line), so markers
# never land in math, link targets, code spans or delimiter rows.
MD_PIECES = [
    "## Streaming {m} and rendering\n\n",
    "The {m} ", "renderer {m} ", "keeps **every {m}** ", "finished block {m} ", "and only rebuilds {m} ",
    "the `tail` {m} ", "of the answer; {m} ", "see [the notes](https://example.com/notes) {m} ", "for *why* {m} ",
    "the cost $O(n)$ {m} ", "stays flat. {m}\n\n",
    "- first, **parse** {m} the last two blocks\n", "- then `diff` {m} the block list\n",
    "- keep [unchanged](https://example.com/dom) {m} DOM\n", "- finally paint {m} once per frame\n\n",
    "```python\n# an example {m}\n",
    "def mean(values):  # {m}\n", "    total = 0.0  # {m}\n", "    for v in values:  # {m}\n",
    "        total += v  # {m}\n", "    return total / len(values)  # {m}\n", "\n# usage {m}\n",
    "print(mean([1, 2, 3]))  # {m}\n",
    "```\n\nThe table {m} ", "compares {m} ", "three runs: {m}\n\n",
    "| run {m} | tokens | p99 ms |\n", "|---|---:|---:|\n| `cold` {m} | 300 | 41.5 |\n",
    "| warm {m} | 300 | 22.0 |\n", "| **md** {m} | 8000 | 48.9 |\n",
    "\nWith {m} ", "$n$ tokens {m} ", "the total is {m}\n\n",
    "$$\n\\sum_{i=1}^{n} t_i = \\frac{n(n+1)}{2}\n$$\n\nand {m} ", "for a frame {m} ",
    "of length $\\Delta t$ {m} ", "we want\n\n$$\\int_0^{\\Delta t} r(t)\\,dt \\le 50$$\n\nat most {m} ",
    "milliseconds. {m}\n\n",
    "1. open {m} the stream\n", "2. read {m} the chunks\n", "3. render {m} the blocks\n\n",
    "> Note: {m} ", "a quote _with emphasis_ {m}\n\n",
    "### Details {m}\n\n", "Some {m} ", "more plain {m} ", "words to {m} ", "fill the {m} ", "paragraph. {m}\n\n",
]
for _p in MD_PIECES:
    assert _p.count("{m}") == 1 and not _p.startswith("{m}") and not _p.endswith("{m}"), _p
# (before, after) around the marker, JSON-escaped for the chunk's "content" string
MD_PARTS = [tuple(json.dumps(x)[1:-1].encode() for x in p.split("{m}")) for p in MD_PIECES]


def md_text(tokens: int, stamp=lambda i: f"{time.time():.6f}") -> str:
    """The whole Markdown text of `tokens` md tokens (markers from `stamp(i)`), as the stream sends it."""
    return "".join(MD_PIECES[i % len(MD_PIECES)].replace("{m}", f"~{stamp(i)}~") for i in range(tokens))


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class Stream:
    """One streamed completion on a connection: a timer per token, written with its send time."""

    __slots__ = ("conn", "loop", "tokens", "interval", "model", "usage", "arrival", "i", "t0", "handle", "prompt",
                 "md")

    def __init__(self, conn: UpstreamProtocol, body: dict, opts: dict[str, float], arrival: float) -> None:
        self.conn = conn
        self.loop = conn.loop
        self.tokens = int(opts.get("tokens", 10))
        self.interval = 1.0 / float(opts.get("rate", 30))
        self.model = json.dumps(body.get("model", "bench"))[1:-1].encode()
        self.usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        self.arrival = arrival
        self.md = bool(opts.get("md", 0))
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
        if self.md:
            before, after = MD_PARTS[self.i % len(MD_PARTS)]
            text = b'"content":"%s~%.6f~%s"' % (before, now, after)
            if self.i == 0:
                text = b'"role":"assistant","content":"%s^%.6f^~%.6f~%s"' % (before, self.arrival, now, after)
        elif self.i == 0:
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
            n = int(float(opts.get("tokens", 10)))
            text = md_text(n) if float(opts.get("md", 0)) else "".join(f"~{time.time():.6f}~ " for _ in range(n))
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


MARK = re.compile(r"~(\d+\.\d+)~")


def check_md(tokens: int = 2 * len(MD_PIECES) + 7) -> list[str]:
    """Render `tokens` md tokens with the page's renderer (web/py) after every token, as a stream would, and after
    the last one as a finished answer; return the problems: a marker missing from the rendered text (chrome text
    excluded) or out of order, and which constructs never appeared."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "web" / "py"))
    from markdown_render import MarkdownStream, render_blocks

    def text_of(node):
        if node.tag is None:
            return "" if node.chrome else node.text
        return "".join(text_of(c) for c in node.children)

    def tags_of(node, out):
        if node.tag is not None:
            out.add(node.tag)
            for c in node.children:
                tags_of(c, out)
        return out

    problems = []
    stream, source = MarkdownStream(), ""
    for i in range(tokens):
        source += MD_PIECES[i % len(MD_PIECES)].replace("{m}", f"~{1000 + i}.000001~")
        shown = MARK.findall("".join(text_of(b.node) for b in stream.update(source)))
        want = [f"{1000 + j}.000001" for j in range(i + 1)]
        if shown != want:
            missing = sorted(set(want) - set(shown))[:5]
            problems.append(f"after token {i}: {len(shown)} of {i + 1} markers in the rendered text"
                            f"{', missing ' + ', '.join(missing) if missing else ', out of order'}")
    blocks = render_blocks(source)
    if MARK.findall("".join(text_of(b.node) for b in blocks)) != [f"{1000 + j}.000001" for j in range(tokens)]:
        problems.append("the finished answer lost markers")
    tags = set()
    for b in blocks:
        tags_of(b.node, tags)
    for tag in ("h2", "h3", "strong", "em", "code", "a", "ul", "ol", "li", "pre", "table", "td", "math",
                "blockquote"):
        if tag not in tags:
            problems.append(f"no <{tag}> in the rendered answer")
    if "s" in tags:
        problems.append("a strikethrough (<s>) formed from markers")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--check-md", action="store_true",
                        help="render md=1 tokens with web/py/markdown_render.py and check every marker stays text")
    args = parser.parse_args()
    if args.check_md:
        problems = check_md()
        print("\n".join(problems) if problems else f"ok: {2 * len(MD_PIECES) + 7} md tokens, every marker is text")
        raise SystemExit(1 if problems else 0)
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
