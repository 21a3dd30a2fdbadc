"""The embedded default model (real SmolLM2 via llama.cpp) served through a real litellm.Router."""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm is imported

import asyncio
import threading

import litellm
import pytest

from server import embedded

STORY = [{"role": "user", "content": "Tell me a long story about a dragon who learns to bake bread."}]


@pytest.fixture
async def make_router():
    def make(pool_size: int) -> litellm.Router:
        return litellm.Router(model_list=embedded.register(pool_size=pool_size))

    yield make
    await embedded.close()


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "embedded-llm"]


async def stream(router: litellm.Router, **kwargs):
    return await router.acompletion(model="chat", messages=STORY, stream=True, temperature=0, **kwargs)


async def test_streams_text_then_finish_reason_and_usage(make_router):
    router = make_router(2)
    response = await stream(router, max_tokens=8, stream_options={"include_usage": True})
    text, finish_reason, usage = [], None, None
    async for chunk in response:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish_reason = chunk.choices[0].finish_reason or finish_reason
        usage = getattr(chunk, "usage", None) or usage

    assert "".join(text).strip()
    assert finish_reason == "length"
    assert usage.completion_tokens == 8
    # llama.cpp's own count (chat template included), not LiteLLM's estimate for a provider that reports none
    (llm,) = embedded._handler._pool._idle
    assert usage.prompt_tokens == llm.prompt_tokens > litellm.token_counter(model="gpt-4o", messages=STORY)


async def test_two_streams_generate_concurrently(make_router):
    router = make_router(2)
    await asyncio.gather(*(stream(router, max_tokens=1) for _ in range(2)))  # load both instances
    arrivals: list[str] = []

    async def consume(name: str) -> None:
        async for chunk in await stream(router, max_tokens=32):
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(name)

    await asyncio.gather(consume("a"), consume("b"))

    assert arrivals.count("a") == arrivals.count("b") == 32
    switches = sum(x != y for x, y in zip(arrivals, arrivals[1:]))
    assert switches >= 4, "".join(arrivals)  # one after the other, they would switch once


async def test_aclose_stops_generation_and_frees_the_instance(make_router):
    router = make_router(1)
    response = await stream(router, max_tokens=1000)
    async for chunk in response:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    (worker,) = workers()

    await response.aclose()
    worker.join(timeout=30)

    assert not worker.is_alive()
    (llm,) = embedded._handler._pool._idle  # the pool's one instance, back in the pool
    assert llm.n_tokens - llm.prompt_tokens < 20  # tokens in its context: it stopped, not ran on to 1000
    # the pool of one serves the next stream at once
    follow = await asyncio.wait_for(stream(router, max_tokens=4), timeout=30)
    assert [c async for c in follow]


async def test_cancelled_consumer_stops_generation(make_router):
    router = make_router(1)
    first_token = asyncio.Event()

    async def consume() -> None:
        async for chunk in await stream(router, max_tokens=1000):
            if chunk.choices and chunk.choices[0].delta.content:
                first_token.set()

    task = asyncio.create_task(consume())
    await first_token.wait()
    (worker,) = workers()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    worker.join(timeout=30)

    assert not worker.is_alive()
    (llm,) = embedded._handler._pool._idle
    assert llm.n_tokens - llm.prompt_tokens < 20


async def test_background_work_yields_to_chats(make_router):
    router = make_router(2)
    await asyncio.gather(*(stream(router, max_tokens=1) for _ in range(2)))  # load both instances
    events: list[str] = []

    async def chat() -> None:
        async for chunk in await stream(router, max_tokens=24):
            if chunk.choices and chunk.choices[0].delta.content:
                events.append("chat")
        events.append("chat-end")

    async def background() -> None:
        await asyncio.sleep(0.05)  # starts while the chat holds one of the two instances
        await router.acompletion(model="utility", messages=STORY, max_tokens=4, temperature=0)
        events.append("background-end")

    await asyncio.gather(chat(), background())
    # with one instance busy, background work leaves the other free for chats: it ran after the chat
    assert events.index("chat-end") < events.index("background-end")
    assert events.count("chat") >= 2
