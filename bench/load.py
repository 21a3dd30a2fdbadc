"""The load generator and measuring client: N concurrent streams, every token stamped on receipt.

Modes (one process each, started by bench/__main__.py and pinned to its own core):
- `http`: our API (`app`, `app+nginx`, `reference`): create N threads, then N concurrent `POST .../chat`.
- `direct`: the upstream itself (`POST /v1/chat/completions`): the floor.
- `litellm`: LiteLLM's Router iterating the stream in this process: LiteLLM's own cost.

HTTP is read on raw asyncio transports (bench/stream_client.py): the receive time is taken in `data_received`,
before any parsing, and a token is found by its send-time marker (`~<epoch>~`, see bench/upstream.py) in the
de-chunked body, whatever the framing around it (our SSE JSON, the reference's, or OpenAI chunks). A token whose
`data:` line carried no earlier token opens a frame: frames per token is below 1 when the server sent several
tokens in one frame.

Slow readers (`--slow-share`, `--slow-pause`): that share of the streams, spread evenly, reads through a 4 KB
receive window and stops reading for `--slow-pause` seconds after every read; once the kernel's buffers between
them are full (the reader's window, then the server's send buffer), the server's socket is not drained. Their
latency is their own doing and reported apart (`slow_latency_ms`; `latency_ms` is the other readers'); frames per
token is given for both groups.

Stream i starts at `ramp * i / N`; stream length is `ramp + window`, so all N streams are open during the
steady window [ramp, ramp + window]: latency percentiles, CPU per token and RSS are taken over that window.
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from bench.stream_client import StreamResult, run_http_stream

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
        slow = int((i + 1) * args.slow_share) > int(i * args.slow_share)  # floor(n * share) streams, spread evenly
        return await run_http_stream(url, body, args.slow_pause if slow else 0.0)

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
    lat_all, lat_steady, lat_slow = [], [], []
    ttft_over = []
    tokens_total = 0
    for r in results:
        tokens_total += len(r.sent)
        for s, rc in zip(r.sent, r.recv):
            d = (rc - s) * 1000
            lat_all.append(d)
            if lo <= s <= hi:
                (lat_slow if r.slow else lat_steady).append(d)
        if r.first_recv and r.arrival:
            ttft_over.append(((r.first_recv - r.t_req) - (r.first_send - r.arrival)) * 1000)
    # The window opens 1 s after the first request whether or not every stream's first token has come: when the
    # server is still catching up with the 100 starts of the ramp, the window's first tokens carry that backlog.
    # Reported beside the window's percentiles: the same, from the moment every stream has its first token.
    all_streaming = max((r.first_recv for r in results if r.first_recv), default=lo)
    lat_streaming = [(rc - s) * 1000 for r in results if not r.slow
                     for s, rc in zip(r.sent, r.recv) if max(lo, all_streaming) <= s <= hi]
    steady_tokens = len(lat_steady) + len(lat_slow)
    errors = [r.error or f"incomplete: {len(r.sent)}/{tokens} tokens" for r in results
              if r.error or len(r.sent) < tokens]
    cpu_steady = samples.get("end_cpu", 0) - samples.get("steady_cpu", 0)
    # tokens the subject handled during the steady window: count by receive time
    handled = sum(1 for r in results for rc in r.recv if lo <= rc <= hi)

    def frames_per_token(group: list[StreamResult]) -> float | None:
        """SSE frames that carried tokens / tokens, both by receive time in the steady window (http and direct)."""
        tokens = sum(1 for r in group for rc in r.recv if lo <= rc <= hi)
        frames = sum(1 for r in group for i in r.frame_starts if lo <= r.recv[i] <= hi)
        return frames / tokens if frames and tokens else None
    out = {
        "mode": args.mode, "streams": n, "rate": rate, "ramp": ramp, "window": window,
        "tokens_per_stream": tokens, "tokens_total": tokens_total, "steady_tokens": steady_tokens,
        "errors": len(errors), "error_samples": errors[:3],
        "busy_rejections": sum(1 for r in results if r.error == "HTTP 503"),
        "frames_per_token": frames_per_token(results),
        "slow_streams": sum(r.slow for r in results), "slow_pause": args.slow_pause,
        "frames_per_token_fast": frames_per_token([r for r in results if not r.slow]),
        "frames_per_token_slow": frames_per_token([r for r in results if r.slow]),
        "slow_latency_ms": {"p50": percentile(lat_slow, 50), "p99": percentile(lat_slow, 99)},
        "latency_ms": {"p50": percentile(lat_steady, 50), "p90": percentile(lat_steady, 90),
                       "p99": percentile(lat_steady, 99), "max": max(lat_steady) if lat_steady else None},
        "latency_all_ms": {"p50": percentile(lat_all, 50), "p99": percentile(lat_all, 99)},
        "latency_all_streaming_ms": {"p50": percentile(lat_streaming, 50), "p99": percentile(lat_streaming, 99),
                                     "from_s": all_streaming - lo},
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
    parser.add_argument("--slow-share", type=float, default=0.0,
                        help="http: share of the streams read by slow readers (0-1, spread evenly)")
    parser.add_argument("--slow-pause", type=float, default=0.5,
                        help="http: seconds a slow reader stops reading after each read (4 KB receive window)")
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
