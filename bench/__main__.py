"""`python -m bench` (`just bench`): measure every hop, print a table, write bench/results/<time>.json.

    python -m bench                       # everything (~12 min on 2 noisy cores)
    python -m bench --quick               # a short smoke pass (~3 min)
    python -m bench --stacks app,reference --figures latency,capacity
    python -m bench --figures profile     # where LiteLLM's per-chunk time goes (cProfile), settings compared
    # both event loops and both LiteLLM routes side by side, and the app past its capacity:
    python -m bench --figures latency,capacity,overload \\
        --stacks app,app-asyncio,app-vllm,litellm-only,litellm-only-vllm,reference

Figures: latency (added latency p50/p99, TTFT overhead, CPU/token, memory/stream at 100 x 30 tok/s),
capacity (most streams at 30 tok/s with p99 <= 50 ms), overload (one app stack at 1.5x its capacity: median
latency, failed streams, SSE frames per token), embedded, browser (cold/warm load; 10 streams x 100 tok/s of plain
and of Markdown-heavy text; one long Markdown answer), profile. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from server.config import Settings

from . import stacks
from .report import APP_OVER_LITELLM, browser_table, fmt, table, targets, targets_table
from .stacks import DEFAULT_STACKS, ENV, PY, ROOT, STACKS, Server, Upstream, pinned

ALL_FIGURES = ["latency", "capacity", "overload", "embedded", "browser", "profile"]
RESULTS = ROOT / "bench" / "results"
P99_LIMIT_MS = 50.0
OVERLOAD_FACTOR = 1.5
SERVER_STACKS = [n for n, s in STACKS.items() if not s.in_process]
# answers a server admits at once (--max-generations; the bench starts it at its default): more get 503
ADMITTED_GENERATIONS = int(ENV.get("PINCHAT_MAX_GENERATIONS", Settings.max_generations))


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ramp_for(streams: int) -> float:
    """Seconds over which the streams start: at most 200 new streams a second."""
    return max(1.0, streams / 200)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.subject, self.load = stacks.cores()
        self.tmp = Path(tempfile.mkdtemp(prefix="pinchat-bench-"))
        self.upstream: Upstream | None = None
        self.servers: dict[str, Server] = {}
        self.skipped: dict[str, str] = {}

    # ---- processes -------------------------------------------------------------------------------------------
    def start(self, names: list[str]) -> list[str]:
        self.upstream = Upstream(self.load).start()
        log(f"upstream on :{self.upstream.port}; subject cores {self.subject}, load cores {self.load}")
        ready = []
        for name in names:
            if STACKS[name].in_process:
                ready.append(name)
                continue
            if name == "app+nginx" and (why := stacks.nginx_available()):
                self.skipped[name] = why
                log(f"app+nginx not measured: {why}")
                continue
            try:
                self.servers[name] = Server(name, self.tmp / name.replace("+", "_"), self.upstream.url,
                                            self.subject).start()
                ready.append(name)
                log(f"{name} up at {self.servers[name].url} (pids {self.servers[name].pids()})")
            except Exception as exc:  # noqa: BLE001 - report and go on with the other stacks
                self.skipped[name] = f"did not start: {exc}"
                log(f"{name} not measured: {exc}")
        return ready

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        if self.upstream:
            self.upstream.stop()

    def run_load(self, stack: str, streams: int, window: float, ramp: float, extra: list[str] = ()) -> dict:
        assert self.upstream is not None
        argv = [PY, "-m", "bench.load", "--streams", str(streams), "--window", str(window), "--ramp", str(ramp),
                "--rate", str(self.args.rate), *extra]
        spec = STACKS[stack]
        if spec.kind == "direct":
            argv += ["--mode", "direct", "--url", self.upstream.url]
            cpus = self.subject  # the client *is* the subject here
        elif spec.kind == "litellm":
            argv += ["--mode", "litellm", "--url", self.upstream.url, "--litellm-settings", spec.litellm_settings,
                     "--model", spec.route]
            cpus = self.subject
        else:
            server = self.servers[stack]
            argv += ["--mode", "http", "--url", server.url, *sum((["--pid", str(p)] for p in server.pids()), [])]
            cpus = self.load
        timeout = ramp + window + 120
        done = subprocess.run(argv, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout,
                              preexec_fn=pinned(cpus))
        if done.returncode != 0:
            raise RuntimeError(f"bench.load failed for {stack}: {done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def warm_up(self, name: str) -> None:
        """Connection pools, lazy imports, first SQLite pages: out of the measured runs."""
        try:
            self.run_load(name, 10, 1.0, 0.5)
        except Exception as exc:  # noqa: BLE001
            log(f"warm-up of {name} failed: {exc}")

    # ---- figures ---------------------------------------------------------------------------------------------
    def latency(self, names: list[str]) -> dict:
        a = self.args
        runs: dict[str, list[dict]] = {n: [] for n in names}
        for name in names:
            self.warm_up(name)
        for r in range(a.repeats):
            for name in names:  # interleaved, so slow drift of the machine's noise hits every stack alike
                try:
                    res = self.run_load(name, a.streams, a.window, 1.0)
                except Exception as exc:  # noqa: BLE001
                    log(str(exc))
                    continue
                runs[name].append(res)
                log(f"latency {name} run {r + 1}/{a.repeats}: p50 {fmt(res['latency_ms']['p50'])} "
                    f"p99 {fmt(res['latency_ms']['p99'])} ms (once all stream, {fmt(res['latency_all_streaming_ms']['from_s'], 2)} "
                    f"s into the window: p99 {fmt(res['latency_all_streaming_ms']['p99'])} ms), "
                    f"ttft+ {fmt(res['ttft_overhead_ms']['p50'])} ms, "
                    f"{fmt(res['cpu_us_per_token'], 0)} us/token, {fmt(res['mem_per_stream_kb'], 0)} KB/stream, "
                    f"errors {res['errors']}")
        summary = {}
        for name, rs in runs.items():
            if not rs:
                continue
            summary[name] = {
                "p50_ms": median(r["latency_ms"]["p50"] for r in rs),
                "p99_ms": median(r["latency_ms"]["p99"] for r in rs),
                "p99_all_streaming_ms": median(r["latency_all_streaming_ms"]["p99"] for r in rs),
                "ttft_overhead_ms": median(r["ttft_overhead_ms"]["p50"] for r in rs),
                "cpu_us_per_token": median(r["cpu_us_per_token"] for r in rs),
                "cpu_util": median(r["cpu_util_steady"] for r in rs),
                # the first run after warm-up: later runs reuse memory the first one grew
                "mem_kb_per_stream": rs[0]["mem_per_stream_kb"],
                "errors": sum(r["errors"] for r in rs),
                "runs": rs,
            }
        def paired(a_name, b_name, fn):  # from stacks measured back to back in the same repeat, then the median
            vals = []
            for ra, rb in zip(runs.get(a_name, []), runs.get(b_name, [])):
                try:
                    vals.append(fn(ra, rb))
                except (TypeError, ZeroDivisionError):
                    pass
            return median(vals)

        def cpu_ratio(x, y):
            return x["cpu_us_per_token"] / y["cpu_us_per_token"]

        def p50_delta(x, y):
            return x["latency_ms"]["p50"] - y["latency_ms"]["p50"]

        pairs = [(key, app, litellm, cpu_ratio) for key, app, litellm in APP_OVER_LITELLM] + [
            ("nginx_p50_delta_ms", "app+nginx", "app", p50_delta),
            ("app_cpu_over_reference", "app", "reference", cpu_ratio)]
        ratios = {key: paired(x, y, fn) for key, x, y, fn in pairs if runs.get(x) and runs.get(y)}
        return {"stacks": summary, "ratios": ratios}

    def capacity(self, names: list[str]) -> dict:
        """Stepped search: raise the number of streams until p99 added latency (steady window) passes 50 ms or a
        stream fails; then one bisection step between the last pass and the first fail. Bounded per stack."""
        a = self.args
        out = {}
        for name in names:
            t_end = time.monotonic() + a.capacity_budget
            steps = list(a.capacity_steps)
            passed, failed, trail = 0, None, []

            def attempt(n: int) -> bool:
                res = self.run_load(name, n, a.capacity_window, ramp_for(n))
                p99 = res["latency_ms"]["p99"]
                ok = res["errors"] == 0 and p99 is not None and p99 <= P99_LIMIT_MS
                trail.append({"streams": n, "p99_ms": p99, "p50_ms": res["latency_ms"]["p50"],
                              "errors": res["errors"], "cpu_util": res["cpu_util_steady"], "ok": ok})
                log(f"capacity {name} {n} streams: p99 {fmt(p99)} ms, errors {res['errors']} -> "
                    f"{'ok' if ok else 'over'}")
                return ok

            for n in steps:
                if time.monotonic() + (ramp_for(n) + a.capacity_window + 8) > t_end:
                    break
                try:
                    ok = attempt(n)
                except Exception as exc:  # noqa: BLE001
                    log(str(exc))
                    ok = False
                if ok:
                    passed = n
                else:
                    failed = n
                    break
            n = failed
            while failed is not None and not passed and n and n // 2 >= 10:  # below the first step: halve
                n //= 2
                if time.monotonic() + (ramp_for(n) + a.capacity_window + 8) > t_end:
                    break
                try:
                    if attempt(n):
                        passed = n
                    else:
                        failed = n
                except Exception as exc:  # noqa: BLE001
                    log(str(exc))
                    break
            if failed is not None and passed and failed - passed > 20:
                mid = (passed + failed) // 2
                if time.monotonic() + (ramp_for(mid) + a.capacity_window + 8) <= t_end:
                    try:
                        if attempt(mid):
                            passed = mid
                        else:
                            failed = mid
                    except Exception as exc:  # noqa: BLE001
                        log(str(exc))
            out[name] = {"max_streams": passed, "first_over": failed,
                         "capped": failed is None, "steps": trail}
        return out

    def overload(self, capacity: dict) -> dict:
        """One run of --overload-stack at 1.5x the most streams the capacity figure found for it in this run (else
        --overload-streams): does it degrade gracefully (latency, failures) and send fewer frames than tokens?"""
        a = self.args
        name = a.overload_stack
        if name in self.skipped:
            return {"stack": name, "summary": f"{name} not measured: {self.skipped[name]}"}
        measured = capacity.get(name)
        if measured and measured["max_streams"]:
            found = measured["max_streams"]
            streams, basis = round(OVERLOAD_FACTOR * found), f"{OVERLOAD_FACTOR:g} x its max streams {found}"
        elif measured:
            streams, basis = a.overload_streams, "--overload-streams: no capacity step passed"
        else:
            streams, basis = a.overload_streams, "--overload-streams"
            self.warm_up(name)
        if streams > ADMITTED_GENERATIONS:
            log(f"overload: {streams} streams > the server's --max-generations {ADMITTED_GENERATIONS}: "
                "the rest get 503 and count as failed streams")
        try:
            res = self.run_load(name, streams, a.window, ramp_for(streams),
                                ["--slow-share", str(a.slow_share), "--slow-pause", str(a.slow_pause)])
        except Exception as exc:  # noqa: BLE001
            log(str(exc))
            return {"stack": name, "streams": streams, "summary": f"{name} at {streams} streams failed: {exc}"}
        out = {"stack": name, "streams": streams, "streams_from": basis, "rate": a.rate,
               "p50_ms": res["latency_ms"]["p50"], "p99_ms": res["latency_ms"]["p99"],
               "failed_streams": res["errors"], "busy_rejections": res["busy_rejections"],
               "frames_per_token": res["frames_per_token"], "cpu_util": res["cpu_util_steady"],
               "slow_streams": res["slow_streams"], "slow_pause": a.slow_pause,
               "frames_per_token_fast": res["frames_per_token_fast"],
               "frames_per_token_slow": res["frames_per_token_slow"], "slow_p50_ms": res["slow_latency_ms"]["p50"],
               "run": res}
        out["summary"] = (f"{name} at {streams} streams ({basis}) x {a.rate:g} tok/s: added latency p50 "
                          f"{fmt(out['p50_ms'])} / p99 {fmt(out['p99_ms'])} ms, {out['failed_streams']} failed "
                          f"({out['busy_rejections']} refused with 503), {fmt(out['frames_per_token'], 3)} SSE frames "
                          f"per token, CPU core {fmt(out['cpu_util'], 2)}")
        if out["slow_streams"]:
            out["summary"] += (f"; {out['slow_streams']} slow readers (pause {a.slow_pause:g} s after each read, "
                               f"latency not in the p50/p99: their p50 {fmt(out['slow_p50_ms'])} ms): frames per "
                               f"token slow {fmt(out['frames_per_token_slow'], 3)}, others "
                               f"{fmt(out['frames_per_token_fast'], 3)}")
        log(f"overload {out['summary']}")
        return out


def parse_args(argv=None) -> argparse.Namespace:
    width = max(map(len, STACKS))
    stack_list = "\n".join(f"  {name.ljust(width)}  {stack.what}" for name, stack in STACKS.items())
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__, epilog=f"stacks:\n{stack_list}",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short smoke pass (~3 min)")
    p.add_argument("--stacks", default=",".join(DEFAULT_STACKS),
                   help=f"comma list of the stacks below (default: {','.join(DEFAULT_STACKS)})")
    p.add_argument("--figures", help=f"comma list from {ALL_FIGURES} (default: all; --quick: all but embedded)")
    p.add_argument("--repeats", type=int, help="latency runs per stack (default 3; quick 1)")
    p.add_argument("--streams", type=int, default=100, help="concurrent streams of the latency figure")
    p.add_argument("--rate", type=float, default=30.0, help="tokens/s per stream")
    p.add_argument("--window", type=float, help="steady seconds per latency run (default 6; quick 3)")
    p.add_argument("--long-tokens", type=int,
                   help="browser: tokens of the long Markdown answer (default 8000; quick 2000; 0 = skip it)")
    p.add_argument("--long-rate", type=float, default=400.0,
                   help="browser: tokens/s of the long Markdown answer (default 400: 8000 tokens in 20 s)")
    p.add_argument("--overload-stack", default="app", choices=SERVER_STACKS, metavar="STACK",
                   help="overload: the stack run past its capacity (default app)")
    p.add_argument("--overload-streams", type=int, default=150,
                   help=f"overload: streams when this run did not measure the stack's capacity (default 150; with "
                        f"capacity: {OVERLOAD_FACTOR:g}x its max streams)")
    p.add_argument("--slow-share", type=float, default=0.0,
                   help="overload: share of the streams read by slow readers, whose socket falls behind (0-1, "
                        "default 0; bench/load.py --slow-share)")
    p.add_argument("--slow-pause", type=float, default=0.5,
                   help="overload: seconds a slow reader stops reading after each read (default 0.5)")
    p.add_argument("--cold-runs", type=int, help="browser: cold loads (new contexts), median (default 3; quick 1)")
    p.add_argument("--out", type=Path, help="JSON output (default bench/results/<time>.json)")
    args = p.parse_args(argv)
    args.stacks = [s for s in args.stacks.split(",") if s]
    default_figures = [f for f in ALL_FIGURES if not (args.quick and f == "embedded")]
    args.figures = [f for f in args.figures.split(",") if f] if args.figures else default_figures
    for s in args.stacks:
        if s not in STACKS:
            p.error(f"unknown stack {s!r}")
    for f in args.figures:
        if f not in ALL_FIGURES:
            p.error(f"unknown figure {f!r}")
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.window = args.window or (3.0 if args.quick else 6.0)
    if args.long_tokens is None:
        args.long_tokens = 2000 if args.quick else 8000
    args.cold_runs = args.cold_runs or (1 if args.quick else 3)
    args.capacity_window = 2.0 if args.quick else 4.0
    args.capacity_budget = 20.0 if args.quick else 50.0
    args.capacity_steps = [50, 100, 200, 400] if args.quick else [50, 100, 150, 200, 300, 400, 600, 800]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    results: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": args.quick, "host": {
        "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}, "config": {
        "streams": args.streams, "rate": args.rate, "window": args.window, "repeats": args.repeats,
        "browser_long_tokens": args.long_tokens, "browser_long_rate": args.long_rate,
        "browser_cold_runs": args.cold_runs, "overload_stack": args.overload_stack}}
    bench = Bench(args)
    results["skipped"] = bench.skipped
    try:
        measured = args.stacks if {"latency", "capacity"} & set(args.figures) else []
        overloaded = [args.overload_stack] if "overload" in args.figures else []
        if measured or overloaded:
            ready = bench.start(measured + [n for n in overloaded if n not in measured])
            names = [n for n in ready if n in measured]
            if "latency" in args.figures:
                log(f"latency: {args.streams} streams x {args.rate:g} tok/s, {args.repeats} repeat(s)")
                results["latency"] = bench.latency(names)
            if "capacity" in args.figures:
                results["capacity"] = bench.capacity(names)
            if overloaded:
                results["overload"] = bench.overload(results.get("capacity", {}))
    finally:
        bench.stop()
    if "profile" in args.figures:
        from .profile import run_profile

        results["profile"] = run_profile(args, bench.tmp)
    if "embedded" in args.figures:
        from .embedded_bench import run_embedded

        results["embedded"] = run_embedded(args, bench.tmp)
    if "browser" in args.figures:
        from .browser import run_browser

        results["browser"] = run_browser(args, bench.tmp)
    results["elapsed_s"] = round(time.monotonic() - t0, 1)
    results["host"]["loadavg_end"] = os.getloadavg()
    results["targets"] = targets(results)

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(results, indent=1, default=str))
    print()
    if results.get("latency") or results.get("capacity"):
        print(f"## Streams: {args.streams} x {args.rate:g} tok/s, medians of {args.repeats} run(s); "
          f"max streams = most at {args.rate:g} tok/s with p99 <= {P99_LIMIT_MS:g} ms")
        print(table(results))
    for key in ("overload", "embedded", "browser", "profile"):
        if key in results and results[key].get("summary"):
            print(f"\n## {key}\n{results[key]['summary']}")
            if key == "browser" and results[key].get("cold_tti_ms") is not None:
                print()
                print(browser_table(results[key]))
    if results["targets"]:
        print('\n## Targets (issues 5, 12 and "cheaper per token")')
        print(targets_table(results["targets"]))
    print(f"\n{out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}  ({results['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
