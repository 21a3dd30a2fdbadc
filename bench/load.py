"""The load generator and measuring client: N concurrent streams, every token stamped on receipt.

Modes (one process each, started by bench/__main__.py and pinned to its own core):
- `http`: our API (`app`, `app+nginx`, `reference`): create N threads, then N concurrent `POST .../chat`.
- `direct`: the upstream itself (`POST /v1/chat/completions`): the floor.
- `litellm`: LiteLLM's Router iterating the stream in this process: LiteLLM's own cost.

HTTP is read on raw asyncio transports: the receive time is taken in `data_received`, before any parsing, and a
token is found by its send-time marker (`~<epoch>~`, see bench/upstream.py) in the de-chunked body, whatever the
framing around it (our SSE JSON, the reference's, or OpenAI chunks). A token whose `data:` line carried no earlier
token opens a frame: frames per token is below 1 when the server sent several tokens in one frame.

Stream i starts at `ramp * i / N`; stream length is `ramp + window`, so all N streams are open during the
steady window [ramp, ramp + window]: latency percentiles, CPU per token and RSS are taken over that window.
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from urllib.parse import urlsplit

MARK = re.compile(rb"~(\d+\.\d+)~")
ARRIVAL = re.compile(rb"\^(\d+\.\d+)\^")
FRAME_OR_MARK = re.compile(rb"(?P<frame>data:)|~\d+\.\d+~")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15), all threads
    return total / TICK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/statm") as f:
            total += int(f.read().split()[1]) * PAGE
    return total


class StreamResult:
    __slots__ = ("sent", "recv", "frame_starts", "t_req", "arrival", "first_send", "first_recv", "error", "done")

    def __init__(self) -> None:
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

    def __init__(self, request: bytes, result: StreamResult, finished: asyncio.Future) -> None:
        self.request = request
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


async def run_http_stream(url: str, body: dict) -> StreamResult:
    loop = asyncio.get_running_loop()
    host, port, request = http_request("POST", url, body)
    result = StreamResult()
    finished = loop.create_future()
    try:
        await loop.create_connection(lambda: StreamProtocol(request, result, finished), host, port)
        await finished
    except OSError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


async def create_threads(base: str, n: int) -> list[int]:
    import aiohttp

    ids: list[int] = []
    async with aiohttp.ClientSession() as session:
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            async with sem:
                async with session.post(f"{base}/api/threads", json={"title": f"bench {i}"},
                                        headers={"Origin": base}) as resp:
                    resp.raise_for_status()
                    ids.append((await resp.json())["id"])

        await asyncio.gather(*(one(i) for i in range(n)))
    return ids


def litellm_settings(profile: str) -> None:
    import litellm

    if profile in ("app", "lean"):  # what the app sets at start
        from server.provider import configure_litellm

        configure_litellm()
    if profile == "lean":
        from bench.lean import apply_lean

        apply_lean()


async def run_litellm_stream(router, message: str) -> StreamResult:
    result = StreamResult()
    result.t_req = time.time()
    try:
        stream = await router.acompletion(model="chat", messages=[{"role": "user", "content": message}],
                                          stream=True, stream_options={"include_usage": True})
        try:
            async for chunk in stream:
                now = time.time()
                if chunk.choices:
                    text = chunk.choices[0].delta.content
                    if text:
                        result.tokens(text.encode(), now)
            result.done = True
        finally:
            await stream.aclose()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        result.error = f"{type(exc).__name__}: {exc}"[:300]
    return result


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


async def main_async(args: argparse.Namespace) -> dict:
    pids = args.pid or [os.getpid()]
    n, rate, ramp, window = args.streams, args.rate, args.ramp, args.window
    tokens = int(round(rate * (ramp + window))) + 1
    message = f"[[bench tokens={tokens} rate={rate} first_delay_ms=0]] Tell me a story."
    router = None
    bodies: list[tuple[str, dict]] = []
    if args.mode == "http":
        ids = await create_threads(args.url, n)
        bodies = [(f"{args.url}/api/threads/{i}/chat", {"message": message}) for i in ids]
    elif args.mode == "direct":
        body = {"model": "bench", "stream": True, "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": message}]}
        bodies = [(f"{args.url}/v1/chat/completions", body)] * n
    else:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        litellm_settings(args.litellm_settings)
        from litellm import Router

        router = Router(model_list=[{"model_name": "chat", "litellm_params": {
            "model": args.model, "api_base": f"{args.url}/v1", "api_key": "sk-bench"}}], num_retries=0)
        # warm the client and LiteLLM's lazy imports outside the measurement
        await asyncio.gather(*(run_litellm_stream(router, "[[bench tokens=3 rate=100]]") for _ in range(4)))

    gc_pauses: list[float] = []
    if args.gc_stats:
        import gc

        t_gc = [0.0]

        def on_gc(phase: str, info: dict) -> None:
            if phase == "start":
                t_gc[0] = time.perf_counter()
            elif info.get("generation") == 2:
                gc_pauses.append((time.perf_counter() - t_gc[0]) * 1000)

        gc.callbacks.append(on_gc)
    if args.gc_freeze:
        import gc

        gc.freeze()
    profiler = None
    if args.cprofile:
        import cProfile

        profiler = cProfile.Profile()

    loop = asyncio.get_running_loop()
    samples: dict[str, float] = {}
    rss_peak = 0

    async def sampler() -> None:
        nonlocal rss_peak
        while True:
            rss_peak = max(rss_peak, rss_bytes(pids))
            await asyncio.sleep(0.1)

    async def mark(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        samples[f"{name}_cpu"] = cpu_seconds(pids)
        samples[f"{name}_wall"] = time.time()
        samples[f"{name}_rss"] = rss_bytes(pids)
        if profiler is not None:
            (profiler.enable if name == "steady" else profiler.disable)()

    async def start(i: int) -> StreamResult:
        await asyncio.sleep(ramp * i / n)
        if router is not None:
            return await run_litellm_stream(router, message)
        url, body = bodies[i]
        return await run_http_stream(url, body)

    rss_base = rss_bytes(pids)
    cpu_start = cpu_seconds(pids)
    t_start = time.time()
    sampling = asyncio.create_task(sampler())
    marks = [asyncio.create_task(mark("steady", ramp + 0.05)),
             asyncio.create_task(mark("end", ramp + window - 0.05))]
    results = await asyncio.gather(*(start(i) for i in range(n)))
    sampling.cancel()
    await asyncio.gather(*marks, return_exceptions=True)
    cpu_total = cpu_seconds(pids) - cpu_start
    if profiler is not None:
        profiler.dump_stats(args.cprofile)

    lo, hi = samples.get("steady_wall", t_start), samples.get("end_wall", time.time())
    lat_all, lat_steady = [], []
    ttft_over = []
    tokens_total = 0
    for r in results:
        tokens_total += len(r.sent)
        for s, rc in zip(r.sent, r.recv):
            d = (rc - s) * 1000
            lat_all.append(d)
            if lo <= s <= hi:
                lat_steady.append(d)
        if r.first_recv and r.arrival:
            ttft_over.append(((r.first_recv - r.t_req) - (r.first_send - r.arrival)) * 1000)
    steady_tokens = len(lat_steady)
    errors = [r.error or f"incomplete: {len(r.sent)}/{tokens} tokens" for r in results
              if r.error or len(r.sent) < tokens]
    cpu_steady = samples.get("end_cpu", 0) - samples.get("steady_cpu", 0)
    # tokens the subject handled during the steady window: count by receive time
    handled = sum(1 for r in results for rc in r.recv if lo <= rc <= hi)
    frames = sum(1 for r in results for i in r.frame_starts if lo <= r.recv[i] <= hi)
    out = {
        "mode": args.mode, "streams": n, "rate": rate, "ramp": ramp, "window": window,
        "tokens_per_stream": tokens, "tokens_total": tokens_total, "steady_tokens": steady_tokens,
        "errors": len(errors), "error_samples": errors[:3],
        "busy_rejections": sum(1 for r in results if r.error == "HTTP 503"),
        # SSE frames that carried tokens / tokens, both by receive time in the steady window (http and direct)
        "frames_per_token": frames / handled if frames and handled else None,
        "latency_ms": {"p50": percentile(lat_steady, 50), "p90": percentile(lat_steady, 90),
                       "p99": percentile(lat_steady, 99), "max": max(lat_steady) if lat_steady else None},
        "latency_all_ms": {"p50": percentile(lat_all, 50), "p99": percentile(lat_all, 99)},
        "ttft_overhead_ms": {"p50": percentile(ttft_over, 50), "p90": percentile(ttft_over, 90),
                             "max": max(ttft_over) if ttft_over else None},
        "cpu_us_per_token": cpu_steady / handled * 1e6 if handled else None,
        "cpu_us_per_token_total": cpu_total / tokens_total * 1e6 if tokens_total else None,
        "cpu_util_steady": cpu_steady / (hi - lo) if hi > lo else None,
        "rss_base": rss_base, "rss_steady": samples.get("end_rss"), "rss_peak": rss_peak,
        "mem_per_stream_kb": (samples.get("end_rss", rss_base) - rss_base) / n / 1024,
        "pids": pids,
        "gc2_pauses_ms": sorted(gc_pauses)[-5:], "gc2_count": len(gc_pauses),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["http", "direct", "litellm"], required=True)
    parser.add_argument("--url", required=True, help="the API base (http) or the upstream base (direct, litellm)")
    parser.add_argument("--pid", type=int, action="append", help="server process(es) to measure (default: self)")
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--rate", type=float, default=30)
    parser.add_argument("--ramp", type=float, default=1.0)
    parser.add_argument("--window", type=float, default=6.0)
    parser.add_argument("--litellm-settings", choices=["stock", "app", "lean"], default="app")
    parser.add_argument("--model", default="openai/bench", help="litellm mode: the deployment's LiteLLM model")
    parser.add_argument("--gc-stats", action="store_true", help="report full (generation 2) GC pauses")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after start-up (experiment)")
    parser.add_argument("--cprofile", help="litellm mode: write a cProfile of the steady window here")
    args = parser.parse_args()
    out = asyncio.run(main_async(args))
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
