"""The `embedded` figure: tokens/s of the embedded model through the whole app versus llama-cpp-python alone.

Same model file, same Llama construction as server/embedded.py (its own class, n_ctx 2048, n_threads 1, the same
sampling: temperature 0.7, max_tokens 512), same prompt; one stream, then two concurrent streams (the app's
default pool of two instances; alone: two instances in two threads). The rate is decode tokens/s of each stream
(first token to last), so the prompt's prefill, identical on both sides, does not blur the comparison; the
end-to-end rate (request to last token) is reported too. Runs unpinned: two streams need both cores.

`python -m bench.embedded_bench --alone --streams 2` runs the llama-cpp-python side alone (prints JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from .stacks import ENV, PY, ROOT, free_port, stop, wait_http

PROMPT = ("Write a long, detailed story about a lighthouse keeper who rescues a ship during a storm. "
          "Describe the sea, the light, the crew and the morning after. Use at least 400 words.")
MAX_TOKENS = 512


def rates(t_req: float, stamps: list[float]) -> dict:
    n = len(stamps)
    decode = (n - 1) / (stamps[-1] - stamps[0]) if n > 1 and stamps[-1] > stamps[0] else None
    return {"tokens": n, "decode_tps": decode, "e2e_tps": n / (stamps[-1] - t_req) if n else None,
            "ttft_ms": (stamps[0] - t_req) * 1000 if n else None}


def alone(streams: int) -> list[dict]:
    sys.path.insert(0, str(ROOT))
    from server.embedded import _llama_class, gguf_path

    llama = _llama_class()
    instances = [llama(str(gguf_path()), n_ctx=2048, n_threads=1, verbose=False) for _ in range(streams)]
    messages = [{"role": "user", "content": PROMPT}]
    for inst in instances:  # warm-up, as the app's instances are warm after its first answer
        for _ in inst.create_chat_completion(messages, stream=True, max_tokens=4, temperature=0.7):
            pass
    out: list[dict] = [{} for _ in range(streams)]

    def run(i: int) -> None:
        t_req = time.time()
        stamps = []
        for chunk in instances[i].create_chat_completion(messages, stream=True, max_tokens=MAX_TOKENS,
                                                         temperature=0.7):
            if chunk["choices"][0]["delta"].get("content") is not None:
                stamps.append(time.time())
        out[i] = rates(t_req, stamps)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


async def through_app(url: str, streams: int) -> list[dict]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async def one() -> dict:
            async with session.post(f"{url}/api/threads", json={}) as resp:
                tid = (await resp.json())["id"]
            t_req = time.time()
            stamps = []
            async with session.post(f"{url}/api/threads/{tid}/chat", json={"message": PROMPT}) as resp:
                buf = b""
                async for data in resp.content.iter_any():
                    now = time.time()
                    buf += data
                    *frames, buf = buf.split(b"\n\n")
                    for frame in frames:
                        if b'"type":"token"' in frame:
                            stamps.append(now)
            return rates(t_req, stamps)

        return list(await asyncio.gather(*(one() for _ in range(streams))))


def check() -> str | None:
    done = subprocess.run([PY, "-c", "import llama_cpp; from server.embedded import gguf_path; gguf_path()"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or ["import failed"])[-1]
    return None


def run_embedded(args, tmp: Path) -> dict:
    why = check()
    if why:
        print(f"[bench] embedded model not measured: {why}", file=sys.stderr)
        return {"skipped": why, "summary": f"not measured: {why}"}
    repeats = 1 if args.quick else 2
    db = tmp / "embedded.db"
    port = free_port()
    log = (tmp / "embedded-app.log").open("w")
    proc = subprocess.Popen([PY, "-m", "server", "--host", "127.0.0.1", "--port", str(port), "--db", str(db)],
                            cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    res: dict = {"app": {1: [], 2: []}, "llama": {1: [], 2: []}}
    try:
        wait_http(f"{url}/api/health", 120, proc)
        asyncio.run(through_app(url, 2))  # warm-up: creates both pool instances
        for _ in range(repeats):
            for streams in (1, 2):
                res["app"][streams].append(asyncio.run(through_app(url, streams)))
                done = subprocess.run([PY, "-m", "bench.embedded_bench", "--alone", "--streams", str(streams)],
                                      cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
                if done.returncode != 0:
                    raise RuntimeError(done.stderr[-1500:])
                res["llama"][streams].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"[bench] embedded {streams} stream(s): app "
                      f"{[round(r['decode_tps'] or 0) for r in res['app'][streams][-1]]} tok/s, llama-cpp "
                      f"{[round(r['decode_tps'] or 0) for r in res['llama'][streams][-1]]} tok/s", file=sys.stderr)
    finally:
        stop(proc)
        log.close()

    def med(side: str, streams: int, key: str = "decode_tps"):
        vals = [r[key] for run in res[side][streams] for r in run if r.get(key)]
        return statistics.median(vals) if vals else None

    fig = {s: {n: {"decode_tps": med(s, n), "e2e_tps": med(s, n, "e2e_tps"), "ttft_ms": med(s, n, "ttft_ms")}
               for n in (1, 2)} for s in ("app", "llama")}
    # ratios within one repeat (app and llama-cpp measured back to back), then the median
    def paired(fn):
        vals = []
        for i in range(repeats):
            try:
                vals.append(fn(i))
            except (TypeError, ZeroDivisionError, IndexError):
                pass
        return statistics.median(vals) if vals else None

    def dec(side, n, i):
        return statistics.median(r["decode_tps"] for r in res[side][n][i])

    ratios = {
        "app_over_llama_1": paired(lambda i: dec("app", 1, i) / dec("llama", 1, i)),
        "app_over_llama_2": paired(lambda i: dec("app", 2, i) / dec("llama", 2, i)),
        "app_two_over_one": paired(lambda i: min(r["decode_tps"] for r in res["app"][2][i]) / dec("app", 1, i)),
        "llama_two_over_one": paired(lambda i: min(r["decode_tps"] for r in res["llama"][2][i]) / dec("llama", 1, i)),
    }
    lines = ["| embedded (SmolLM2-135M, decode tok/s per stream) | 1 stream | 2 streams (each) |",
             "|---|---|---|"]
    for side, label in (("llama", "llama-cpp-python alone"), ("app", "through the app (SSE)")):
        lines.append(f"| {label} | {fig[side][1]['decode_tps']:.1f} | {fig[side][2]['decode_tps']:.1f} |")
    lines.append(f"app/llama: 1 stream {ratios['app_over_llama_1']:.0%}, 2 streams {ratios['app_over_llama_2']:.0%}; "
                 f"2-stream/1-stream: app {ratios['app_two_over_one']:.0%}, llama {ratios['llama_two_over_one']:.0%}")
    return {"figures": fig, "ratios": ratios, "runs": res, "summary": "\n".join(lines)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alone", action="store_true", required=True)
    parser.add_argument("--streams", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(alone(args.streams)))


if __name__ == "__main__":
    main()
