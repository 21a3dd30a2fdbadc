"""The `openai_compatible/` route: LiteLLM's Router chooses the deployment, retries and falls back as for any
provider, and this reads the OpenAI-compatible stream itself (vLLM, llama.cpp's server, Ollama, LM Studio,
OpenRouter, OpenAI).

Why a reader of our own behind a documented LiteLLM extension (a `CustomLLM` in `litellm.custom_provider_map`,
like the embedded model): LiteLLM's own routes build an OpenAI SDK or LiteLLM chunk object per token from the
parsed JSON before its stream wrapper builds another, ~300-600 us per token on this machine, the bulk of a chat
server's CPU (bench/README.md, "Which LiteLLM route"). Here a token is one `json.loads` and one small dict, so the
wrapper's own work is all that is left. Only text chat is read: the app sends no tools or images.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import litellm
from litellm.litellm_core_utils.exception_mapping_utils import ExceptionCheckers
from litellm.types.utils import GenericStreamingChunk

from .custom_chunk import chunk

PROVIDER = "openai_compatible"
# Set by the Router and LiteLLM for their own use, or by us on the request body: not forwarded.
_NOT_FORWARDED = frozenset({"stream", "stream_options", "max_retries", "extra_body", "extra_headers"})
_FIELDS = (b"data:", b"error:")  # llama.cpp's server has sent failures as `error:` lines
_DONE = b"[DONE]"
_CONTEXT_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})

# One connection pool per event loop (a ClientSession belongs to the loop it was made on); closed by close().
_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = weakref.WeakKeyDictionary()


class UpstreamError(Exception):
    """An error answer from the upstream. LiteLLM maps it by `status_code` to its own exception types (429 to
    RateLimitError, 5xx to InternalServerError / ServiceUnavailableError...), which the Router retries or falls
    back on like its built-in routes' errors."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message


class OpenAICompatible(litellm.CustomLLM):
    async def astreaming(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,
                         model_response: Any, print_verbose: Any, encoding: Any, api_key: str | None,
                         logging_obj: Any, optional_params: dict, acompletion: Any = None, litellm_params: Any = None,
                         logger_fn: Any = None, headers: dict | None = None, timeout: Any = None, client: Any = None
                         ) -> AsyncIterator[GenericStreamingChunk]:
        body = _body(model, messages, optional_params, stream=True)
        finish_reason, usage = "", None
        try:
            async with _post(api_base, api_key, body, headers, timeout, model) as response:
                if response.content_type == "application/json":  # a JSON error in place of the stream, status 200
                    raise _error_from_body(await response.read(), 200, model)
                async for events in _event_batches(response):
                    texts = []
                    for event in events:
                        usage = event.get("usage") or usage  # OpenAI's include_usage chunk follows the finish reason
                        if choices := event.get("choices"):
                            choice = choices[0]
                            finish_reason = choice.get("finish_reason") or finish_reason
                            if text := (choice.get("delta") or {}).get("content"):
                                texts.append(text)
                    if texts:  # the tokens of one read as one chunk: LiteLLM's wrapper costs per chunk, not per byte
                        yield chunk(texts[0] if len(texts) == 1 else "".join(texts))
                    if finish_reason == "error":  # OpenRouter's way when the error object is missing
                        raise _upstream_error(502, "the server ended the answer with an error", model)
        except litellm.APIConnectionError:
            if not finish_reason:
                raise  # else the answer was whole and only the connection's end was lost
        if not finish_reason:
            raise litellm.APIConnectionError(f"{PROVIDER}: the stream ended before its finish reason",
                                             llm_provider=PROVIDER, model=model)
        yield chunk("", finish_reason, usage)

    async def acompletion(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,
                          model_response: Any, print_verbose: Any, encoding: Any, api_key: str | None,
                          logging_obj: Any, optional_params: dict, acompletion: Any = None, litellm_params: Any = None,
                          logger_fn: Any = None, headers: dict | None = None, timeout: Any = None, client: Any = None
                          ) -> Any:
        body = _body(model, messages, optional_params, stream=False)
        async with _post(api_base, api_key, body, headers, timeout, model) as response:
            try:
                answer = await response.json(content_type=None)
                if answer.get("error"):  # OpenRouter reports a failure during generation with status 200
                    raise _stream_error(answer["error"], model)
                choice = answer["choices"][0]
            except (ValueError, LookupError, TypeError, AttributeError, aiohttp.ClientError) as exc:
                raise litellm.APIConnectionError(f"{PROVIDER}: unreadable answer ({exc})",
                                                 llm_provider=PROVIDER, model=model) from exc
        model_response.choices[0].message.content = (choice.get("message") or {}).get("content") or ""
        model_response.choices[0].finish_reason = choice.get("finish_reason") or "stop"
        model_response.model = answer.get("model") or model
        if usage := answer.get("usage"):
            model_response.usage = litellm.Usage(**usage)
        return model_response


def _body(model: str, messages: list, optional_params: dict, stream: bool) -> dict:
    body = {key: value for key, value in optional_params.items() if key not in _NOT_FORWARDED}
    body.update(optional_params.get("extra_body") or {})
    body.update(model=model, messages=messages, stream=stream)
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


@asynccontextmanager
async def _post(api_base: str | None, api_key: str | None, body: dict, headers: dict | None, timeout: Any,
                model: str) -> AsyncIterator[aiohttp.ClientResponse]:
    if not api_base:
        raise litellm.BadRequestError(f"{PROVIDER}/ needs an api_base (the server's /v1 address)",
                                      model=model, llm_provider=PROVIDER)
    request_headers = dict(headers or {})  # LiteLLM has merged a deployment's extra_headers into these
    if api_key:
        request_headers["Authorization"] = f"Bearer {api_key}"
    seconds = _seconds(timeout)
    try:
        async with _session().post(
            api_base.rstrip("/") + "/chat/completions", json=body, headers=request_headers,
            timeout=aiohttp.ClientTimeout(total=None, connect=seconds, sock_read=seconds),
        ) as response:
            if response.status >= 400:
                error = _error_from_body(await response.read(), response.status, model)
                # LiteLLM reads `headers` off the exception: a Retry-After sets how long the Router cools it down.
                error.headers = {name.lower(): value for name, value in response.headers.items()}
                raise error
            try:
                yield response
            finally:
                if not response.content.at_eof():
                    response.close()  # left early (a cancel): drop the connection so the upstream stops at once
    except asyncio.TimeoutError as exc:
        raise litellm.Timeout(f"{PROVIDER}: no answer within {seconds} s", model=model,
                              llm_provider=PROVIDER) from exc
    except aiohttp.ClientError as exc:
        raise litellm.APIConnectionError(f"{PROVIDER}: {type(exc).__name__}: {exc}", llm_provider=PROVIDER,
                                         model=model) from exc


async def _event_batches(response: aiohttp.ClientResponse) -> AsyncIterator[list[dict]]:
    """The JSON of the `data:` lines each read of the body brings, until `[DONE]` or the end of the body. When the
    loop comes late (the process is busy), one read brings several tokens, and they go on as one chunk: the work
    per token falls as the load rises. Written here rather than with an SSE client library: the upstream's framing
    is one `data:` line per event, and a general parser would build an event object per token."""
    rest = b""
    async for received in response.content.iter_any():
        lines = (rest + received).split(b"\n")
        rest = lines.pop()
        events = []
        for line in lines:
            if not line.startswith(_FIELDS):
                continue  # blank separators, comments (": keep-alive"), `event:` / `id:` fields
            data = line.partition(b":")[2].strip()
            if data == _DONE:
                yield events
                await _read_to_the_end(response)
                return
            if not data:
                continue
            try:
                event = json.loads(data)
            except ValueError:
                event = {"error": {"message": data[:200].decode(errors="replace"), "code": 502}}
            if not isinstance(event, dict) or line.startswith(b"error:"):
                event = {"error": event}
            if error := event.get("error"):  # some servers report a failure inside the stream
                if events:
                    yield events  # the tokens before it are the answer's
                raise _stream_error(error)
            events.append(event)
        if events:
            yield events


async def _read_to_the_end(response: aiohttp.ClientResponse) -> None:
    """The body's end follows `[DONE]` at once: read it, so that the connection goes back to the pool (a new TLS
    handshake per answer otherwise). A server that keeps the body open after `[DONE]` loses its connection."""
    try:
        await asyncio.wait_for(response.content.read(), 1.0)
    except (TimeoutError, aiohttp.ClientError):
        pass


def _error_from_body(body: bytes, status: int, model: str) -> Exception:
    try:
        error = json.loads(body)["error"]
    except (ValueError, LookupError, TypeError):
        return _upstream_error(502 if status < 400 else status,
                               body[:500].decode(errors="replace") or f"HTTP {status}", model)
    return _stream_error(error, model, status)


def _stream_error(error: Any, model: str = "", status: int | None = None) -> Exception:
    """An OpenAI-style error object (`{"message", "type", "code"}`) as the exception LiteLLM's Router acts on."""
    error = error if isinstance(error, dict) else {"message": str(error)}
    code = error.get("code")
    if status is None or status < 400:
        status = code if isinstance(code, int) and 400 <= code < 600 else 500
    context = code in _CONTEXT_CODES or error.get("type") in _CONTEXT_CODES
    return _upstream_error(status, str(error.get("message") or "an error in the stream"), model, context)


def _upstream_error(status: int, message: str, model: str, context: bool = False) -> Exception:
    """A conversation too long for the model is LiteLLM's ContextWindowExceededError, as on its own routes (whose
    message check LiteLLM does not apply to a custom provider's errors); anything else goes by its status."""
    if context or ExceptionCheckers.is_error_str_context_window_exceeded(message):
        return litellm.ContextWindowExceededError(message, model=model, llm_provider=PROVIDER)
    return UpstreamError(status, message)


def _seconds(timeout: Any) -> float | None:
    if timeout is None or isinstance(timeout, (int, float)):
        return timeout
    return getattr(timeout, "read", None)  # an httpx.Timeout from a Router setting


def _session() -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        # No overall cap on connections: each open stream holds one, and the Router's limits apply before.
        # trust_env: HTTPS_PROXY / NO_PROXY apply, as on LiteLLM's own routes.
        session = _sessions[loop] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), trust_env=True)
    return session


def known_model(model: str) -> str:
    """The name LiteLLM's model map may know a deployment's model by, for its tokenizer and context window: an
    `openai_compatible/` deployment's served model name (`openai_compatible/gpt-4o-mini` is `gpt-4o-mini`)."""
    return model.removeprefix(PROVIDER + "/")


def register() -> None:
    """Make `openai_compatible/<model>` a LiteLLM route in this process (idempotent)."""
    if not any(entry["provider"] == PROVIDER for entry in litellm.custom_provider_map):
        litellm.custom_provider_map = [*litellm.custom_provider_map,
                                       {"provider": PROVIDER, "custom_handler": OpenAICompatible()}]


async def close() -> None:
    """Close this loop's connection pool (app shutdown)."""
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.close()
