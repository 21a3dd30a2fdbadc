"""The measuring client's HTTP side (bench/load.py): one streamed request on a raw asyncio transport, the receive
time taken in `data_received` before any parsing, tokens found by their send-time markers (`~<epoch>~`, see
bench/upstream.py) in the de-chunked body whatever the framing, and which tokens opened an SSE frame. A slow reader
(`pause`) reads through a small receive window and stops reading for `pause` seconds after every read."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from urllib.parse import urlsplit

MARK = re.compile(rb"~(\d+\.\d+)~")
ARRIVAL = re.compile(rb"\^(\d+\.\d+)\^")
FRAME_OR_MARK = re.compile(rb"(?P<frame>data:)|~\d+\.\d+~")
SLOW_RCVBUF = 4096  # bytes: a slow reader's receive window


class StreamResult:
    __slots__ = ("sent", "recv", "frame_starts", "t_req", "arrival", "first_send", "first_recv", "error", "done",
                 "slow")

    def __init__(self, slow: bool = False) -> None:
        self.slow = slow
        self.sent: list[float] = []
        self.recv: list[float] = []
        self.frame_starts: list[int] = []  # indices (into sent/recv) of the tokens that opened an SSE frame
        self.t_req = 0.0
        self.arrival = 0.0
        self.first_send = 0.0
        self.first_recv = 0.0
        self.error: str | None = None
        self.done = False

    def tokens(self, data: bytes, now: float) -> int:
        """Record the markers in `data`; return the offset just after the last one (0 if none)."""
        if not self.sent:
            m = ARRIVAL.search(data)
            if m:
                self.arrival = float(m.group(1))
        end = 0
        for m in MARK.finditer(data):
            self.sent.append(float(m.group(1)))
            self.recv.append(now)
            end = m.end()
        if self.sent and not self.first_recv:
            self.first_recv = now
            self.first_send = self.sent[0]
        return end


class StreamProtocol(asyncio.Protocol):
    """One HTTP/1.1 request (Connection: close), chunked or close-delimited body, markers scanned as bytes come."""

    def __init__(self, request: bytes, result: StreamResult, finished: asyncio.Future, pause: float = 0.0) -> None:
        self.request = request
        self.pause = pause  # seconds of not reading after each read (a slow reader)
        self.result = result
        self.finished = finished
        self.head = b""
        self.headers_done = False
        self.chunked = False
        self.status = 0
        self.raw = b""  # undecoded chunked bytes
        self.remaining = 0  # bytes left in the current chunk
        self.skip = 0  # CRLF after a chunk
        self.tail = b""  # the unmatched end of the body so far (a marker may straddle two reads)
        self.frame_open = False  # a `data:` line was read and no token after it yet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.result.t_req = time.time()
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.headers_done:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end].decode("latin-1"), self.head[end + 4:]
            self.headers_done = True
            self.status = int(head.split(" ", 2)[1])
            self.chunked = "transfer-encoding: chunked" in head.lower()
            if self.status != 200:
                self.result.error = f"HTTP {self.status}"
        if self.chunked:
            data = self.dechunk(data)
        if data:
            self.scan(data, now)
        if self.pause:
            transport: asyncio.ReadTransport = self.transport  # type: ignore[assignment]
            transport.pause_reading()
            asyncio.get_running_loop().call_later(self.pause, transport.resume_reading)

    def dechunk(self, data: bytes) -> bytes:
        out = []
        buf = self.raw + data
        pos = 0
        while pos < len(buf):
            if self.skip:
                n = min(self.skip, len(buf) - pos)
                self.skip -= n
                pos += n
                continue
            if self.remaining:
                n = min(self.remaining, len(buf) - pos)
                out.append(buf[pos:pos + n])
                self.remaining -= n
                pos += n
                if not self.remaining:
                    self.skip = 2
                continue
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            size = int(buf[pos:end].split(b";")[0], 16)
            pos = end + 2
            if size == 0:
                self.result.done = True
                self.transport.close()
                pos = len(buf)
                break
            self.remaining = size
        self.raw = buf[pos:]
        return b"".join(out)

    def scan(self, data: bytes, now: float) -> None:
        text = self.tail + data
        self.note_frames(text, len(self.tail))
        last = self.result.tokens(text, now) if b"~" in text else 0
        self.tail = text[last:][-48:]

    def note_frames(self, text: bytes, new_from: int) -> None:
        """Record which of the tokens about to be taken from `text` open a frame. `text` starts with the tail of
        the last scan, which holds no whole marker but may hold a `data:` already seen (one ending before
        `new_from`)."""
        index = len(self.result.sent)
        for m in FRAME_OR_MARK.finditer(text):
            if m["frame"]:
                if m.end() > new_from:
                    self.frame_open = True
                continue
            if self.frame_open:
                self.result.frame_starts.append(index)
                self.frame_open = False
            index += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.chunked:
            self.result.done = self.headers_done
        if not self.finished.done():
            self.finished.set_result(None)


def http_request(method: str, url: str, body: dict | None) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    payload = json.dumps(body).encode() if body is not None else b""
    # Origin: the app runs with --auth none here, whose state changes must come from its own origin (CSRF check).
    req = (f"{method} {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nOrigin: {parts.scheme}://{parts.netloc}\r\n"
           "Content-Type: application/json\r\n"
           f"Accept: text/event-stream\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode()
    return parts.hostname or "127.0.0.1", parts.port or 80, req + payload


async def run_http_stream(url: str, body: dict, pause: float = 0.0) -> StreamResult:
    loop = asyncio.get_running_loop()
    host, port, request = http_request("POST", url, body)
    result = StreamResult(slow=pause > 0)
    finished = loop.create_future()
    try:
        def protocol() -> StreamProtocol:
            return StreamProtocol(request, result, finished, pause)

        if pause:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)  # before connect: the window is small
            sock.setblocking(False)
            await loop.sock_connect(sock, (host, port))
            await loop.create_connection(protocol, sock=sock)
        else:
            await loop.create_connection(protocol, host, port)
        await finished
    except OSError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result
