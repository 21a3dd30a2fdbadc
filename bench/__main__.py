"""`python -m bench` (`just bench`): measure every hop, print a table, write bench/results/<time>.json.

    python -m bench                       # everything (~12 min on 2 noisy cores)
    python -m bench --quick               # a short smoke pass (~3 min)
    python -m bench --stacks app,reference --figures latency,capacity
    python -m bench --figures profile     # where LiteLLM's per-chunk time goes (cProfile), settings compared

Figures: latency (added latency p50/p99, TTFT overhead, CPU/token, memory/stream at 100 x 30 tok/s),
capacity (most streams at 30 tok/s with p99 <= 50 ms), embedded, browser (cold/warm load; 10 streams x 100 tok/s
of plain and of Markdown-heavy text; one long Markdown answer), profile. See bench/README.md.
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

from . import stacks
from .stacks import ENV, PY, ROOT, Server, Upstream, pinned

ALL_STACKS = ["direct", "litellm-only", "app", "app+nginx", "reference"]
EXTRA_STACKS = ["app-tuned", "litellm-stock", "litellm-lean"]
ALL_FIGURES = ["latency", "capacity", "embedded", "browser", "profile"]
RESULTS = ROOT / "bench" / "results"
P99_LIMIT_MS = 50.0
# the browser's load times before Markdown rendering (bench/README.md, 20261124-154632.json): issue 12 allows the
# cold load to grow by at most 10%
BROWSER_BEFORE_MS = {"cold": 2370.0, "warm": 1430.0, "p50": 24.5, "p99": 71.3, "longest": 0.0}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


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
            if name in ("direct", "litellm-only", "litellm-stock", "litellm-lean"):
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
        if stack == "direct":
            argv += ["--mode", "direct", "--url", self.upstream.url]
            cpus = self.subject  # the client *is* the subject here
        elif stack.startswith("litellm"):
            settings = {"litellm-only": "app", "litellm-stock": "stock", "litellm-lean": "lean"}[stack]
            argv += ["--mode", "litellm", "--url", self.upstream.url, "--litellm-settings", settings]
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

    # ---- figures ---------------------------------------------------------------------------------------------
    def latency(self, names: list[str]) -> dict:
        a = self.args
        runs: dict[str, list[dict]] = {n: [] for n in names}
        for name in names:  # warm-up: connection pools, lazy imports, first SQLite pages
            try:
                self.run_load(name, 10, 1.0, 0.5)
            except Exception as exc:  # noqa: BLE001
                log(f"warm-up of {name} failed: {exc}")
        for r in range(a.repeats):
            for name in names:  # interleaved, so slow drift of the machine's noise hits every stack alike
                try:
                    res = self.run_load(name, a.streams, a.window, 1.0)
                except Exception as exc:  # noqa: BLE001
                    log(str(exc))
                    continue
                runs[name].append(res)
                log(f"latency {name} run {r + 1}/{a.repeats}: p50 {fmt(res['latency_ms']['p50'])} "
                    f"p99 {fmt(res['latency_ms']['p99'])} ms, ttft+ {fmt(res['ttft_overhead_ms']['p50'])} ms, "
                    f"{fmt(res['cpu_us_per_token'], 0)} us/token, {fmt(res['mem_per_stream_kb'], 0)} KB/stream, "
                    f"errors {res['errors']}")
        summary = {}
        for name, rs in runs.items():
            if not rs:
                continue
            summary[name] = {
                "p50_ms": median(r["latency_ms"]["p50"] for r in rs),
                "p99_ms": median(r["latency_ms"]["p99"] for r in rs),
                "ttft_overhead_ms": median(r["ttft_overhead_ms"]["p50"] for r in rs),
                "cpu_us_per_token": median(r["cpu_us_per_token"] for r in rs),
                "cpu_util": median(r["cpu_util_steady"] for r in rs),
                # the first run after warm-up: later runs reuse memory the first one grew
                "mem_kb_per_stream": rs[0]["mem_per_stream_kb"],
                "errors": sum(r["errors"] for r in rs),
                "runs": rs,
            }
        ratios = {}  # each ratio from stacks measured back to back in the same repeat, then the median
        def paired(a_name, b_name, fn):
            vals = []
            for ra, rb in zip(runs.get(a_name, []), runs.get(b_name, [])):
                try:
                    vals.append(fn(ra, rb))
                except (TypeError, ZeroDivisionError):
                    pass
            return median(vals)
        if runs.get("app") and runs.get("litellm-only"):
            ratios["app_cpu_over_litellm"] = paired("app", "litellm-only",
                                                    lambda x, y: x["cpu_us_per_token"] / y["cpu_us_per_token"])
        if runs.get("app") and runs.get("app+nginx"):
            ratios["nginx_p50_delta_ms"] = paired("app+nginx", "app",
                                                  lambda x, y: x["latency_ms"]["p50"] - y["latency_ms"]["p50"])
        if runs.get("app") and runs.get("reference"):
            ratios["app_cpu_over_reference"] = paired("app", "reference",
                                                      lambda x, y: x["cpu_us_per_token"] / y["cpu_us_per_token"])
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
                ramp = max(1.0, n / 200)
                res = self.run_load(name, n, a.capacity_window, ramp)
                p99 = res["latency_ms"]["p99"]
                ok = res["errors"] == 0 and p99 is not None and p99 <= P99_LIMIT_MS
                trail.append({"streams": n, "p99_ms": p99, "p50_ms": res["latency_ms"]["p50"],
                              "errors": res["errors"], "cpu_util": res["cpu_util_steady"], "ok": ok})
                log(f"capacity {name} {n} streams: p99 {fmt(p99)} ms, errors {res['errors']} -> "
                    f"{'ok' if ok else 'over'}")
                return ok

            for n in steps:
                if time.monotonic() + (max(1.0, n / 200) + a.capacity_window + 8) > t_end:
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
                if time.monotonic() + (1.0 + a.capacity_window + 8) > t_end:
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
                if time.monotonic() + (max(1.0, mid / 200) + a.capacity_window + 8) <= t_end:
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


def fmt(v, digits=1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def table(results: dict) -> str:
    lat = results.get("latency", {}).get("stacks", {})
    cap = results.get("capacity", {})
    names = [n for n in ALL_STACKS + EXTRA_STACKS if n in lat or n in cap or n in results.get("skipped", {})]
    rows = [("stack", "p50 ms", "p99 ms", "TTFT+ ms", "max streams", "CPU us/tok", "CPU core", "KB/stream", "errors")]
    for n in names:
        if n in results.get("skipped", {}) and n not in lat:
            rows.append((n, "not measured: " + results["skipped"][n], "", "", "", "", "", "", ""))
            continue
        s, c = lat.get(n, {}), cap.get(n, {})
        streams = "-"
        if c:
            streams = (">=" if c.get("capped") else "") + str(c["max_streams"])
        rows.append((n, fmt(s.get("p50_ms"), 2), fmt(s.get("p99_ms"), 1), fmt(s.get("ttft_overhead_ms"), 1), streams,
                     fmt(s.get("cpu_us_per_token"), 0), fmt(s.get("cpu_util"), 2),
                     fmt(s.get("mem_kb_per_stream"), 0), fmt(s.get("errors"))))
    out = []
    widths = [max(len(str(r[i])) for r in rows if not str(r[1]).startswith("not measured")) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        if str(r[1]).startswith("not measured"):
            out.append(f"| {r[0]} | {r[1]} |")
        else:
            out.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")
        if i == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def browser_table(br: dict) -> str:
    """Load times and token-to-DOM figures of this run next to the ones before Markdown rendering."""
    b = BROWSER_BEFORE_MS

    def stream(d):
        if not d or d.get("token_to_dom_p99_ms") is None:
            return "-"
        return (f"{d['token_to_dom_p50_ms']:.1f} / {d['token_to_dom_p99_ms']:.1f} ms, longest task "
                f"{d['longest_task_ms']:.0f} ms ({d['long_tasks']} > 50)")

    la = br.get("long_answer") or {}
    rows = [("browser figure", "before Markdown", "this run"),
            ("cold load", f"{b['cold'] / 1000:.2f} s", f"{br['cold_tti_ms'] / 1000:.2f} s"),
            ("warm load", f"{b['warm'] / 1000:.2f} s", f"{br['warm_tti_ms'] / 1000:.2f} s"),
            ("10 x 100 tok/s plain: p50 / p99", f"{b['p50']:.1f} / {b['p99']:.1f} ms, longest task "
             f"{b['longest']:.0f} ms", stream(br)),
            ("10 x 100 tok/s Markdown: p50 / p99", "-", stream(br.get("markdown"))),
            (f"{la.get('tokens', 'long')}-token Markdown answer"
             + (f" at {la['rate']:g} tok/s" if la.get("rate") else "") + ": p50 / p99", "-", stream(la))]
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    out = ["| " + " | ".join(c.ljust(x) for c, x in zip(r, w)) + " |" for r in rows]
    out.insert(1, "|" + "|".join("-" * (x + 2) for x in w) + "|")
    return "\n".join(out)


def targets(results: dict) -> list[tuple[str, str, str]]:
    """(target, measured, PASS/FAIL/n.a.) for each target of issues 5 and 12 that the run measured."""
    lat = results.get("latency", {}).get("stacks", {})
    ratios = results.get("latency", {}).get("ratios", {})
    cap = results.get("capacity", {})
    emb = results.get("embedded", {})
    br = results.get("browser", {})
    rows = []

    def add(name, value, ok):
        rows.append((name, value, "n/a" if ok is None else ("PASS" if ok else "FAIL")))

    app = lat.get("app", {})
    if app:
        add("app added latency p50 <= 2 ms", f"{fmt(app['p50_ms'], 2)} ms", app["p50_ms"] <= 2)
        add("app added latency p99 <= 10 ms", f"{fmt(app['p99_ms'], 1)} ms", app["p99_ms"] <= 10)
    if "nginx_p50_delta_ms" in ratios:
        d = ratios["nginx_p50_delta_ms"]
        add("app+nginx p50 within +1 ms of app", f"{d:+.2f} ms", d <= 1)
    if cap.get("app") and cap.get("reference"):
        a, r = cap["app"]["max_streams"], cap["reference"]["max_streams"]
        add("app streams >= 2x reference", f"{a} vs {r} ({a / r:.2f}x)" if r else f"{a} vs {r}",
            a >= 2 * r and a > 0)
    if "app_cpu_over_litellm" in ratios:
        x = ratios["app_cpu_over_litellm"]
        add("app CPU/token <= 1.5x litellm-only", f"{x:.2f}x", x <= 1.5)
    if emb.get("ratios"):
        e = emb["ratios"]
        if e.get("app_over_llama_1") is not None:
            add("embedded via app >= 95% of llama-cpp (1 stream)", f"{e['app_over_llama_1']:.0%}",
                e["app_over_llama_1"] >= 0.95)
        if e.get("app_two_over_one") is not None:
            add("embedded: 2 streams each >= 80% of 1", f"{e['app_two_over_one']:.0%}", e["app_two_over_one"] >= 0.8)
    if br.get("cold_tti_ms") is not None:
        add("browser cold load <= 2.5 s", f"{br['cold_tti_ms'] / 1000:.2f} s", br["cold_tti_ms"] <= 2500)
        add("browser warm load <= 1.5 s", f"{br['warm_tti_ms'] / 1000:.2f} s", br["warm_tti_ms"] <= 1500)
        before = BROWSER_BEFORE_MS["cold"]
        add(f"cold load <= 1.1x before Markdown ({before / 1000:.2f} s)",
            f"{br['cold_tti_ms'] / 1000:.2f} s ({br['cold_tti_ms'] / before - 1:+.0%})",
            br["cold_tti_ms"] <= 1.1 * before)
    if br.get("token_to_dom_p99_ms") is not None:
        add("token-to-DOM p99 <= 50 ms (10 x 100 tok/s)", f"{br['token_to_dom_p99_ms']:.1f} ms",
            br["token_to_dom_p99_ms"] <= 50)
        add("no main-thread task > 50 ms", f"longest {br['longest_task_ms']:.0f} ms", br["longest_task_ms"] <= 50)
    md = br.get("markdown") or {}
    if md.get("token_to_dom_p99_ms") is not None:
        add("Markdown: token-to-DOM p99 <= 50 ms (10 x 100 tok/s)", f"{md['token_to_dom_p99_ms']:.1f} ms",
            md["token_to_dom_p99_ms"] <= 50)
        add("Markdown: no main-thread task > 50 ms (10 streams)",
            f"longest {md['longest_task_ms']:.0f} ms ({md['long_tasks']} > 50)", md["longest_task_ms"] <= 50)
    la = br.get("long_answer") or {}
    if la.get("token_to_dom_p99_ms") is not None:
        what = f"{la['tokens']}-token Markdown answer at {la['rate']:g} tok/s"
        add(f"no main-thread task > 50 ms ({what})",
            f"longest {la['longest_task_ms']:.0f} ms ({la['long_tasks']} > 50)", la["longest_task_ms"] <= 50)
        add(f"token-to-DOM p99 <= 50 ms ({what})", f"{la['token_to_dom_p99_ms']:.1f} ms (p50 "
            f"{la['token_to_dom_p50_ms']:.1f})", la["token_to_dom_p99_ms"] <= 50)
    return rows


def targets_table(rows) -> str:
    w0 = max([len("target")] + [len(r[0]) for r in rows])
    w1 = max([len("measured")] + [len(r[1]) for r in rows])
    out = [f"| {'target'.ljust(w0)} | {'measured'.ljust(w1)} | result |", f"|{'-' * (w0 + 2)}|{'-' * (w1 + 2)}|--------|"]
    out += [f"| {a.ljust(w0)} | {b.ljust(w1)} | {c} |" for a, b, c in rows]
    return "\n".join(out)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short smoke pass (~3 min)")
    p.add_argument("--stacks", default=",".join(ALL_STACKS),
                   help=f"comma list from {ALL_STACKS + EXTRA_STACKS} (default: {','.join(ALL_STACKS)})")
    p.add_argument("--figures", help=f"comma list from {ALL_FIGURES} (default: all; --quick: all but embedded)")
    p.add_argument("--repeats", type=int, help="latency runs per stack (default 3; quick 1)")
    p.add_argument("--streams", type=int, default=100, help="concurrent streams of the latency figure")
    p.add_argument("--rate", type=float, default=30.0, help="tokens/s per stream")
    p.add_argument("--window", type=float, help="steady seconds per latency run (default 6; quick 3)")
    p.add_argument("--long-tokens", type=int,
                   help="browser: tokens of the long Markdown answer (default 8000; quick 2000; 0 = skip it)")
    p.add_argument("--long-rate", type=float, default=400.0,
                   help="browser: tokens/s of the long Markdown answer (default 400: 8000 tokens in 20 s)")
    p.add_argument("--cold-runs", type=int, help="browser: cold loads (new contexts), median (default 3; quick 1)")
    p.add_argument("--out", type=Path, help="JSON output (default bench/results/<time>.json)")
    args = p.parse_args(argv)
    args.stacks = [s for s in args.stacks.split(",") if s]
    default_figures = [f for f in ALL_FIGURES if not (args.quick and f == "embedded")]
    args.figures = [f for f in args.figures.split(",") if f] if args.figures else default_figures
    for s in args.stacks:
        if s not in ALL_STACKS + EXTRA_STACKS:
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
        "browser_cold_runs": args.cold_runs}}
    bench = Bench(args)
    results["skipped"] = bench.skipped
    try:
        if {"latency", "capacity"} & set(args.figures):
            names = bench.start(args.stacks)
            if "latency" in args.figures:
                log(f"latency: {args.streams} streams x {args.rate:g} tok/s, {args.repeats} repeat(s)")
                results["latency"] = bench.latency(names)
            if "capacity" in args.figures:
                results["capacity"] = bench.capacity(names)
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
    for key in ("embedded", "browser", "profile"):
        if key in results and results[key].get("summary"):
            print(f"\n## {key}\n{results[key]['summary']}")
            if key == "browser" and results[key].get("cold_tti_ms") is not None:
                print()
                print(browser_table(results[key]))
    if results["targets"]:
        print("\n## Targets (issues 5 and 12)")
        print(targets_table(results["targets"]))
    print(f"\n{out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}  ({results['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
