"""The reference stack (bench-only): the seed article's code path, FastAPI + uvicorn + StreamingResponse over an
async generator iterating LiteLLM's Router. Used only to be measured beside our server on the same workload.

As in the article: `router.acompletion(model="chat", stream=True)`, skip empty deltas, yield
`data: {"type":"token","text":...}\\n\\n` per token, save the answer at the end (here: in memory, the article's
`save_assistant_message`), `X-Accel-Buffering: no`, LiteLLM left at its defaults. Same API shape as ours for the
two calls the benchmark makes: `POST /api/threads` and `POST /api/threads/{id}/chat`.

Run: `python -m bench.reference_app --port 8300 --models models.yaml`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import uvicorn  # noqa: E402
import yaml  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import StreamingResponse  # noqa: E402
from litellm import Router  # noqa: E402


def create_app(models: str) -> FastAPI:
    config = yaml.safe_load(open(models))
    router = Router(model_list=config["model_list"], **(config.get("router_settings") or {}))
    app = FastAPI()
    ids = itertools.count(1)
    threads: dict[int, list[dict[str, str]]] = {}

    async def llm_stream(context: list[dict[str, str]]):
        async for chunk in await router.acompletion(model="chat", messages=context, stream=True, max_tokens=2048):
            token = chunk.choices[0].delta.content if chunk.choices else None
            if token:  # skip empty deltas (e.g. role delta)
                yield token

    async def stream_response(thread_id: int, message: str):
        context = threads[thread_id] + [{"role": "user", "content": message}]
        tokens: list[str] = []
        try:
            async for token in llm_stream(context):
                tokens.append(token)
                payload = json.dumps({"type": "token", "text": token})
                yield f"data: {payload}\n\n"
            threads[thread_id] = context + [{"role": "assistant", "content": "".join(tokens)}]
            yield f"data: {json.dumps({'type': 'done'})}\n\n"
        except asyncio.CancelledError:  # user closed the tab or cancelled
            threads[thread_id] = context + [{"role": "assistant", "content": "".join(tokens) + " [interrupted]"}]
            return

    @app.get("/api/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.post("/api/threads", status_code=201)
    async def create_thread() -> dict:
        thread_id = next(ids)
        threads[thread_id] = []
        return {"id": thread_id}

    @app.post("/api/threads/{thread_id}/chat")
    async def chat(thread_id: int, request: Request) -> StreamingResponse:
        body = await request.json()
        return StreamingResponse(stream_response(thread_id, body["message"]), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument("--models", required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(args.models), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
