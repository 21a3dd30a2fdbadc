"""Which LiteLLM route to an OpenAI-compatible server costs least per streamed chunk, with identical output.

`python -m bench.routes [--tokens 3000] [--repeats 3]`: starts bench/upstream.py, then for each documented route
(`openai/`, `hosted_vllm/`, `openai_like/`, `groq/`, `custom_openai/`, ...) streams the same answer through a
LiteLLM Router configured as the app does (`provider.configure_litellm()`, `provider.chat_stream`) and measures
this process's CPU time per token (time.process_time: CPU, not wall time, so other load on the machine moves it
little). Each route's output is checked against the first: the same text, finish reason and usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROUTES = ["openai_compatible", "openai", "hosted_vllm", "openai_like", "custom_openai", "groq", "lm_studio", "deepseek"]


def start_upstream() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.upstream", "--port", "0"], stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline().split()[1])
    return proc, f"http://127.0.0.1:{port}/v1"


async def stream_once(route: str, base: str, tokens: int) -> tuple[float, tuple]:
    from litellm import Router

    from server import provider

    router = Router(model_list=[{"model_name": "chat", "litellm_params": {
        "model": f"{route}/bench", "api_base": base, "api_key": "sk-bench"}}], num_retries=0)
    messages = [{"role": "user", "content": f"[[bench tokens={tokens} rate=100000]]"}]
    parts, finish, usage = [], None, None
    cpu = time.process_time()
    async with provider.chat_stream(router, messages) as deltas:
        async for delta in deltas:
            if delta.__class__ is not str:  # a str is only text (provider._deltas)
                finish = delta.finish_reason or finish
                usage = delta.usage or usage
                delta = delta.text
            parts.append(delta)
    cpu = time.process_time() - cpu
    # the upstream stamps times into its tokens: compare their shape (count, separators), not their digits
    text = "".join(parts)
    shape = (text.count("~"), finish, (usage or {}).get("completion_tokens"))
    return cpu / tokens * 1e6, shape


async def main(tokens: int, repeats: int) -> None:
    from server import provider

    provider.configure_litellm()
    proc, base = start_upstream()
    try:
        reference = None
        for route in ROUTES:
            try:
                await stream_once(route, base, 50)  # warm-up: imports and lazy set-up
                runs = [await stream_once(route, base, tokens) for _ in range(repeats)]
            except Exception as exc:  # a route this LiteLLM does not have, or that refuses the config
                print(f"{route:>14}: not usable here ({type(exc).__name__}: {str(exc)[:80]})")
                continue
            per_token = [r[0] for r in runs]
            shape = runs[0][1]
            reference = reference or shape
            same = "same output" if shape == reference else f"DIFFERENT output {shape} vs {reference}"
            print(f"{route:>14}: {statistics.median(per_token):7.1f} us CPU/token "
                  f"(min {min(per_token):.1f}, max {max(per_token):.1f}; {repeats} x {tokens} tokens), {same}")
    finally:
        proc.terminate()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.tokens, args.repeats))
