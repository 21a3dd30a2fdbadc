"""The tables `python -m bench` prints from a run's results: stacks, browser, and the targets of the issues."""

from __future__ import annotations

from .stacks import STACKS

# The page before Markdown rendering (the commit before it, 30c411e, checked out and benchmarked with its own bench
# on this machine on 2026-11-29: `python -m bench --figures browser`, cold median of 3, and `--quick` for the streams;
# the same code measured 2.37 s cold on 2026-11-24, when this machine's Chromium started Pyodide ~2.5x faster).
# Issue 12 allows the cold load to grow by at most 10%.
BROWSER_BEFORE_MS = {"cold": 6110.0, "warm": 3410.0, "p50": 31.8, "p99": 101.4, "longest": 0.0}
# CPU per token of an app stack over LiteLLM alone on the same route: (ratio key in results, app stack, LiteLLM stack)
APP_OVER_LITELLM = [("app_cpu_over_litellm", "app", "litellm-only"),
                    ("app_asyncio_cpu_over_litellm", "app-asyncio", "litellm-only"),
                    ("app_vllm_cpu_over_litellm_vllm", "app-vllm", "litellm-only-vllm"),
                    ("app_asyncio_vllm_cpu_over_litellm_vllm", "app-asyncio-vllm", "litellm-only-vllm"),
                    # our openai_compatible/ route against LiteLLM alone on openai/: the figure
                    ("app_compat_cpu_over_litellm", "app-compat", "litellm-only"),
                    ("app_asyncio_compat_cpu_over_litellm", "app-asyncio-compat", "litellm-only")]
# The app stacks whose latency and capacity are held to the targets: the app as before, and on our own route.
TARGET_APPS = ["app", "app-compat"]
OVERLOAD_P50_LIMIT_MS = 100.0


def fmt(v, digits=1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def table(results: dict) -> str:
    lat = results.get("latency", {}).get("stacks", {})
    cap = results.get("capacity", {})
    names = [n for n in STACKS if n in lat or n in cap or n in results.get("skipped", {})]
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
    """(target, measured, PASS/FAIL/n.a.) for each target of issues 5, 12 and "cheaper per token" that the run
    measured."""
    lat = results.get("latency", {}).get("stacks", {})
    ratios = results.get("latency", {}).get("ratios", {})
    cap = results.get("capacity", {})
    emb = results.get("embedded", {})
    br = results.get("browser", {})
    rows = []

    def add(name, value, ok):
        rows.append((name, value, "n/a" if ok is None else ("PASS" if ok else "FAIL")))

    for name in TARGET_APPS:
        if app := lat.get(name):
            add(f"{name} added latency p50 <= 2 ms", f"{fmt(app['p50_ms'], 2)} ms", app["p50_ms"] <= 2)
            add(f"{name} added latency p99 <= 10 ms", f"{fmt(app['p99_ms'], 1)} ms", app["p99_ms"] <= 10)
    if "nginx_p50_delta_ms" in ratios:
        d = ratios["nginx_p50_delta_ms"]
        add("app+nginx p50 within +1 ms of app", f"{d:+.2f} ms", d <= 1)
    for name in TARGET_APPS:
        if cap.get(name) and cap.get("reference"):
            a, r = cap[name]["max_streams"], cap["reference"]["max_streams"]
            add(f"{name} streams >= 2x reference", f"{a} vs {r} ({a / r:.2f}x)" if r else f"{a} vs {r}",
                a >= 2 * r and a > 0)
    if ratios.get("app_cpu_over_litellm") is not None:
        x = ratios["app_cpu_over_litellm"]
        add("app CPU/token <= 1.5x litellm-only", f"{x:.2f}x", x <= 1.5)
    for key, app_stack, litellm_stack in APP_OVER_LITELLM:
        if ratios.get(key) is not None:
            routes = [STACKS[stack].route.split("/")[0] + "/" for stack in (app_stack, litellm_stack)]
            add(f"{app_stack} CPU/token <= 0.8x {litellm_stack} ({' vs '.join(dict.fromkeys(routes))} route)",
                f"{ratios[key]:.2f}x",
                ratios[key] <= 0.8)
    ov = results.get("overload", {})
    if "failed_streams" in ov:
        what = f"overload, {ov['stack']} at {ov['streams']} x {ov['rate']:g} tok/s"
        add(f"{what}: median added latency <= {OVERLOAD_P50_LIMIT_MS:g} ms", f"{fmt(ov['p50_ms'], 1)} ms",
            ov["p50_ms"] is not None and ov["p50_ms"] <= OVERLOAD_P50_LIMIT_MS)
        add(f"{what}: no stream fails", f"{ov['failed_streams']} failed ({ov['busy_rejections']} refused with 503)",
            ov["failed_streams"] == 0)
        frames = ov["frames_per_token"]
        add(f"{what}: frames per token < 1", fmt(frames, 3), None if frames is None else frames < 1)
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


