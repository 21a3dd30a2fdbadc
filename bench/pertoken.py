"""Our own work per token, LiteLLM's left out: from the chunk LiteLLM hands over to the socket write.

`python -m bench.pertoken [--tokens 1000] [--streams 1,20] [--repeats 3] [--loop asyncio|uvloop]`

The real app (server.app.create_app: routes, Generation, SSE, SQLite flushes every 0.5 s) serves real HTTP on a
real socket; a reader in another process POSTs `/chat` on 1 or 20 threads at once and reads every stream to its
end, checking ids `<message id>.<n>` and the exact text. The one seam: the Router's `acompletion` returns a fake
LiteLLM stream of pre-built `ModelResponseStream` chunks (one event-loop hop per chunk, as a socket read would
be), so provider.chat_stream / _deltas and everything after them run unchanged.

Each figure is per token and per stream, from two runs of different lengths (short and long, same streams):
(long - short) / extra tokens, so per-stream costs (request, turn commit, final save) cancel out; the feed's own
cost (iterating the fake stream alone, measured the same way) is subtracted. Counts are deterministic:
- callbacks: handles the event loop ran (task steps, future wake-ups, timers); loop iterations; futures created;
  timers armed (loop.call_at); transport.write calls; SQLite saves;
- calls: Python + C function calls (sys.setprofile, in a pass of its own);
- allocs: every malloc/calloc/realloc of Python's object and memory allocators (a hook wrapping them, compiled
  with the C compiler at start; "nan" without one), and us CPU: time.process_time of this process (the reader's CPU
  is its own), both in passes with nothing else installed, median over repeats. Timings are noisy on a shared
  machine: compare them only back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

SHORT = 100  # tokens of the short run


def make_chunks(count: int) -> list:
    from litellm.types.utils import Delta, ModelResponseStream, StreamingChoices, Usage

    def chunk(content, finish=None, **extra):
        return ModelResponseStream(model="bench", choices=[StreamingChoices(
            delta=Delta(content=content, role="assistant"), finish_reason=finish)], **extra)

    body = [chunk(f"t{i} ") for i in range(count)]
    tail = [chunk(None, "stop")]
    usage = chunk(None)
    usage.usage = Usage(prompt_tokens=3, completion_tokens=count, total_tokens=count + 3)
    return body, tail + [usage]


class FakeStream:
    """What Router.acompletion(stream=True) returns, minus LiteLLM's per-chunk work."""

    def __init__(self, chunks: list) -> None:
        self.chunks = iter(chunks)

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self):
        await asyncio.sleep(0)  # a chunk per loop iteration, as from the upstream socket
        try:
            return next(self.chunks)
        except StopIteration:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        pass


class Feed:
    def __init__(self, longest: int) -> None:
        self.body, self.tail = make_chunks(longest)

    def stream(self, count: int) -> FakeStream:
        return FakeStream(self.body[:count] + self.tail)

    async def acompletion(self, *, messages: list[dict], **_: object) -> FakeStream:
        text = messages[-1]["content"]
        return self.stream(int(text.split("=")[1]) if text.startswith("tokens=") else 1)


class Counters:
    """Installs and removes the counting wrappers on one asyncio (not uvloop) event loop."""

    KEYS = ("callbacks", "iterations", "futures", "timers", "writes", "saves")

    def __init__(self, loop: asyncio.AbstractEventLoop, db) -> None:
        self.loop, self.db = loop, db
        self.n = dict.fromkeys(self.KEYS, 0)

    def _wrap(self, owner, name: str, key: str) -> None:
        original = getattr(owner, name)
        n = self.n

        def counted(*args, **kwargs):
            n[key] += 1
            return original(*args, **kwargs)

        self._undo.append((owner, name, owner.__dict__.get(name), isinstance(owner, type)))
        setattr(owner, name, counted)

    def __enter__(self) -> Counters:
        from asyncio import events, selector_events

        self._undo = []
        self._wrap(events.Handle, "_run", "callbacks")
        self._wrap(self.loop, "_run_once", "iterations")
        self._wrap(self.loop, "create_future", "futures")
        self._wrap(self.loop, "call_at", "timers")
        self._wrap(selector_events._SelectorSocketTransport, "write", "writes")
        self._wrap(self.db, "save_answer", "saves")
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, previous, is_class in reversed(self._undo):
            if previous is not None and is_class:
                setattr(owner, name, previous)
            else:
                delattr(owner, name)


ALLOC_HOOK = r"""
#include <Python.h>
static PyMemAllocatorEx orig[3];
static unsigned long long count;
static void *m(void *c, size_t n) { count++; return orig[(size_t)c].malloc(orig[(size_t)c].ctx, n); }
static void *cl(void *c, size_t e, size_t n) { count++; return orig[(size_t)c].calloc(orig[(size_t)c].ctx, e, n); }
static void *r(void *c, void *p, size_t n) { count++; return orig[(size_t)c].realloc(orig[(size_t)c].ctx, p, n); }
static void f(void *c, void *p) { orig[(size_t)c].free(orig[(size_t)c].ctx, p); }
static PyObject *start(PyObject *s, PyObject *a) {
    for (size_t d = 1; d < 3; d++) {  /* PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ: what Python objects use */
        PyMemAllocatorEx hook = {(void *)d, m, cl, r, f};
        PyMem_GetAllocator((PyMemAllocatorDomain)d, &orig[d]);
        PyMem_SetAllocator((PyMemAllocatorDomain)d, &hook);
    }
    Py_RETURN_NONE;
}
static PyObject *get(PyObject *s, PyObject *a) { return PyLong_FromUnsignedLongLong(count); }
static PyMethodDef methods[] = {{"start", start, METH_NOARGS, 0}, {"get", get, METH_NOARGS, 0}, {0}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "allochook", 0, -1, methods};
PyMODINIT_FUNC PyInit_allochook(void) { return PyModule_Create(&mod); }
"""


def alloc_counter(workdir: Path):
    """Every allocation Python makes (malloc/calloc/realloc of its object and memory domains), counted by a hook
    wrapping its allocators: built with the C compiler here, None without one."""
    import importlib.util
    import subprocess
    import sysconfig

    source, target = workdir / "allochook.c", workdir / f"allochook{sysconfig.get_config_var('EXT_SUFFIX')}"
    source.write_text(ALLOC_HOOK)
    built = subprocess.run(["cc", "-shared", "-fPIC", "-O2", f"-I{sysconfig.get_paths()['include']}", str(source),
                            "-o", str(target)], capture_output=True)
    if built.returncode != 0:
        return None
    spec = importlib.util.spec_from_file_location("allochook", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.start()
    return module.get


class Profile:
    """Python and C calls on this thread (sys.setprofile)."""

    def __init__(self) -> None:
        self.calls = 0

    def __enter__(self) -> Profile:
        def hook(frame, event, arg):
            if event == "call" or event == "c_call":
                self.calls += 1

        sys.setprofile(hook)
        return self

    def __exit__(self, *exc) -> None:
        sys.setprofile(None)


async def feed_only(feed: Feed, streams: int, tokens: int) -> None:
    async def one() -> None:
        async for _ in await feed.acompletion(messages=[{"content": f"tokens={tokens}"}]):
            pass

    await asyncio.gather(*(one() for _ in range(streams)))


class Bench:
    """The app on a real port, and the reader process."""

    def __init__(self, workdir: Path, longest: int) -> None:
        self.workdir = workdir
        self.feed = Feed(longest)

    async def start(self) -> None:
        from aiohttp import web

        from server.app import ROUTER, create_app
        from server.config import Settings
        from server.credentials import TOKEN_PREFIX, new_secret, secret_hash
        from server.db import Database
        from server.keys import DB, OWNER, REGISTRY

        models = self.workdir / "models.yaml"
        models.write_text(json.dumps({"model_list": [{"model_name": "chat", "litellm_params": {
            "model": "openai/bench", "api_base": "http://127.0.0.1:9/v1", "api_key": "sk-bench"}}]}))
        settings = Settings(db=self.workdir / "chat.db", models=models, detach_grace=0, chats_per_minute=10**6,
                            max_streams_per_user=10**6)
        db = await Database.open(settings.db)
        self.secret = TOKEN_PREFIX + new_secret()
        await db.accounts.create_token((await db.accounts.ensure_owner())["id"], "bench", secret_hash(self.secret))
        await db.close()
        app = create_app(settings)
        app[ROUTER].acompletion = self.feed.acompletion
        self.runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self.runner.setup()
        app[REGISTRY].on_complete = None  # titles and summaries are per answer, not per token
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.app, self.db, self.owner = app, app[DB], app[OWNER]
        self.reader = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.pertoken", "--reader", str(self.port), self.secret,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)

    async def stop(self) -> None:
        self.reader.stdin.close()
        await self.reader.wait()
        await self.runner.cleanup()

    async def run(self, streams: int, tokens: int, measure) -> dict:
        """One round: `streams` chats of `tokens` tokens, read to their end by the reader process."""
        threads = [(await self.db.create_thread(self.owner["id"], "bench"))["id"] for _ in range(streams)]
        gc.collect()
        with measure() as m:
            self.reader.stdin.write(f"{tokens} {','.join(map(str, threads))}\n".encode())
            report = json.loads(await self.reader.stdout.readline())
        assert report["ok"], report
        return m


class Plain:
    """CPU time and allocations, nothing else installed."""

    allocs = None  # the allocation counter, when it could be built

    def __enter__(self) -> Plain:
        self.a0, self.t0 = self.allocs() if self.allocs else 0, time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.us = (time.process_time() - self.t0) * 1e6
        self.n = {"allocs": self.allocs() - self.a0 if self.allocs else float("nan"), "us": self.us}


async def measure_all(streams_list: list[int], tokens: int, repeats: int, counting: bool) -> dict:
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as tmp:
        Plain.allocs = alloc_counter(Path(tmp))
        bench = Bench(Path(tmp), tokens)
        await bench.start()

        async def per_token(streams: int, measure, figures) -> dict:
            """(long - short) of the app minus (long - short) of the feed alone, per extra token."""
            async def feed(n: int) -> dict:
                with measure() as m:
                    await feed_only(bench.feed, streams, n)
                return figures(m)

            app_long = figures(await bench.run(streams, tokens, measure))
            app_short = figures(await bench.run(streams, SHORT, measure))
            feed_long, feed_short = await feed(tokens), await feed(SHORT)
            extra = streams * (tokens - SHORT)
            return {k: ((app_long[k] - app_short[k]) - (feed_long[k] - feed_short[k])) / extra for k in app_long}

        try:
            results = {}
            for streams in streams_list:
                await bench.run(streams, SHORT, Plain)  # warm-up
                row = {}
                if counting:
                    row.update(await per_token(streams, lambda: Counters(loop, bench.db), lambda m: m.n))
                    row.update(await per_token(streams, Profile, lambda m: {"calls": m.calls}))
                plain = [await per_token(streams, Plain, lambda m: m.n) for _ in range(repeats)]
                row["allocs"] = statistics.median(p["allocs"] for p in plain)
                row["us"] = statistics.median(p["us"] for p in plain)
                row["us_min"] = min(p["us"] for p in plain)
                results[streams] = row
            return results
        finally:
            await bench.stop()


async def reader(port: int, secret: str) -> None:
    """The reader process: for each line `<tokens> <thread ids>` on stdin, stream those chats at once."""
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    async def chat(thread_id: int, tokens: int) -> bool:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        body = json.dumps({"message": f"tokens={tokens}"}).encode()
        w.write(f"POST /api/threads/{thread_id}/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {secret}"
                f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                .encode() + body)
        head = await r.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head.lower(), head
        data = bytearray()
        while size := int((await r.readuntil(b"\r\n")).strip(), 16):
            data += (await r.readexactly(size + 2))[:-2]
        await r.readexactly(2)
        w.close()
        frames = [f for f in data.decode().split("\n\n") if f and not f.startswith(":")]
        events = [(f.split("\n")[0][4:], json.loads(f.split("\n")[1][6:])) for f in frames]
        message_id = events[0][1]["message_id"]
        text = "".join(e["text"] for _, e in events if e["type"] == "token")
        return ([i for i, _ in events] == [f"{message_id}.{n}" for n in range(1, len(events) + 1)]
                and text == "".join(f"t{i} " for i in range(tokens)) and events[-1][1]["type"] == "done")

    while line := await stdin.readline():
        tokens, threads = line.split()
        oks = await asyncio.gather(*(chat(int(t), int(tokens)) for t in threads.split(b",")))
        sys.stdout.write(json.dumps({"ok": all(oks)}) + "\n")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1000, help="tokens per stream in the long run")
    parser.add_argument("--streams", default="1,20", help="concurrent streams, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="CPU timing repeats (median)")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio",
                        help="uvloop: CPU time only (the counters need the asyncio loop)")
    parser.add_argument("--reader", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        asyncio.run(reader(int(args.reader[0]), args.reader[1]))
        return
    from server import provider

    provider.configure_litellm()
    streams = [int(s) for s in args.streams.split(",")]
    coro = measure_all(streams, args.tokens, args.repeats, counting=args.loop == "asyncio")
    if args.loop == "uvloop":
        import uvloop

        results = uvloop.run(coro)
    else:
        results = asyncio.run(coro)
    print(f"per token, per stream ({args.tokens} - {SHORT} tokens; feed subtracted; loop {args.loop}):")
    columns = [*Counters.KEYS, "calls", "allocs", "us", "us_min"]
    print(f"{'streams':>8}" + "".join(f"{c:>11}" for c in columns))
    for streams, row in results.items():
        print(f"{streams:>8}" + "".join(f"{row[c]:>11.2f}" if c in row else f"{'-':>11}" for c in columns))
    print(json.dumps({"tokens": args.tokens, "loop": args.loop, "results": results}))


if __name__ == "__main__":
    main()
