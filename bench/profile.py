"""The `profile` figure: where LiteLLM's time per chunk goes, and what its settings (and Python's GC) change.

1. cProfile of the litellm-only stack (app settings, `openai/` route) over the steady window, own time grouped by
   layer (OpenAI SDK model construction, LiteLLM's CustomStreamWrapper, pydantic, aiohttp, asyncio, ...), plus the
   top functions; cProfile inflates absolute times ~2x, so read the shares, not the microseconds.
2. CPU per token (no profiler) and p99 for: LiteLLM stock, the app's settings (server/provider.py), the app's
   settings + gc.freeze() after start-up (bench/lean.py), for the `openai/` route (OpenAI SDK) and the `groq/`
   route (LiteLLM's own OpenAI-compatible handler; the seed's provider), with full-GC pause counts and lengths.
"""

from __future__ import annotations

import json
import pstats
import subprocess
from pathlib import Path

from .stacks import ENV, PY, ROOT, Upstream, cores, pinned

LAYERS = [
    ("openai SDK (chunk model construction, SSE decode)", ("/openai/",)),
    ("litellm streaming_handler (CustomStreamWrapper)", ("litellm_core_utils/streaming_handler",)),
    ("litellm other (router, hidden params, types, logging)", ("/litellm/",)),
    ("pydantic", ("/pydantic", "pydantic_core")),
    ("typing / inspect (generic introspection)", ("typing.py", "typing_extensions", "inspect.py")),
    ("aiohttp / httpx (socket reads, HTTP parsing)", ("/aiohttp/", "/httpx", "/httpcore/", "/anyio/")),
    ("asyncio event loop", ("asyncio/", "select.epoll", "_socket")),
]


def layer_of(filename: str, func: str) -> str:
    key = f"{filename}:{func}"
    for name, needles in LAYERS:
        if any(n in key for n in needles):
            return name
    return "other (builtins, json, bench client)"


def summarize(prof: Path, tokens: int) -> dict:
    stats = pstats.Stats(str(prof))
    total = 0.0
    layers: dict[str, float] = {}
    top = []
    for (filename, line, func), (cc, nc, tt, ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if "select.epoll" in func:  # time blocked waiting for sockets: wall time, not CPU
            continue
        total += tt
        layer = layer_of(filename, func)
        layers[layer] = layers.get(layer, 0.0) + tt
        top.append((tt, ct, nc, f"{filename.split('site-packages/')[-1]}:{line}({func})"))
    top.sort(reverse=True)
    return {
        "profiled_us_per_token": total / tokens * 1e6 if tokens else None,
        "layers": {k: round(v / total, 3) for k, v in sorted(layers.items(), key=lambda kv: -kv[1])},
        "top_tottime": [{"func": f, "tottime_s": round(tt, 4), "cumtime_s": round(ct, 4), "calls": nc,
                         "calls_per_token": round(nc / tokens, 2) if tokens else None}
                        for tt, ct, nc, f in top[:25]],
    }


def load(upstream: Upstream, tmp: Path, model: str, settings: str, streams: int, window: float,
         prof: Path | None = None) -> dict:
    subject, _ = cores()
    argv = [PY, "-m", "bench.load", "--mode", "litellm", "--url", upstream.url, "--model", model,
            "--litellm-settings", settings, "--streams", str(streams), "--window", str(window), "--gc-stats"]
    if prof:
        argv += ["--cprofile", str(prof)]
    done = subprocess.run(argv, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=window + 120,
                          preexec_fn=pinned(subject))
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-1500:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_profile(args, tmp: Path) -> dict:
    _, load_cpus = cores()
    upstream = Upstream(load_cpus).start()
    streams, window = 40, (2.0 if args.quick else 4.0)
    out: dict = {"streams": streams, "rate": args.rate}
    try:
        prof = tmp / "litellm-only.prof"
        res = load(upstream, tmp, "openai/bench", "app", streams, window, prof)
        out["cprofile"] = summarize(prof, res["steady_tokens"])
        variants = []
        for model in ("openai/bench", "groq/bench"):
            for settings in ("stock", "app", "lean"):
                r = load(upstream, tmp, model, settings, streams, window)
                variants.append({"route": model.split("/")[0], "settings": settings,
                                 "cpu_us_per_token": r["cpu_us_per_token"], "p50_ms": r["latency_ms"]["p50"],
                                 "p99_ms": r["latency_ms"]["p99"], "gc2_count": r["gc2_count"],
                                 "gc2_pauses_ms": r["gc2_pauses_ms"]})
        out["variants"] = variants
    finally:
        upstream.stop()
    lines = [f"cProfile of litellm-only ({streams} x {args.rate:g} tok/s, openai/ route), share of own time by layer:"]
    lines += [f"  {share:6.1%}  {name}" for name, share in out["cprofile"]["layers"].items()]
    lines.append("  top: " + "; ".join(f"{t['func'].split('/')[-1]} {t['calls_per_token']}/tok"
                                       for t in out["cprofile"]["top_tottime"][:6]))
    lines.append("| route | LiteLLM settings | CPU us/token | p50 ms | p99 ms | full GCs (longest ms) |")
    lines.append("|---|---|---|---|---|---|")
    for v in out["variants"]:
        longest = max(v["gc2_pauses_ms"]) if v["gc2_pauses_ms"] else 0
        lines.append(f"| {v['route']}/ | {v['settings']} | {v['cpu_us_per_token']:.0f} | {v['p50_ms']:.1f} | "
                     f"{v['p99_ms']:.1f} | {v['gc2_count']} ({longest:.0f}) |")
    out["summary"] = "\n".join(lines)
    return out
