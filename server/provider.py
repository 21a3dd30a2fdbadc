"""The provider hop: one LiteLLM Router, model group `chat`, streamed as plain text deltas."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


import litellm
import yaml
from litellm import Router

from . import openai_compatible

log = logging.getLogger(__name__)

CHAT = "chat"
UTILITY = "utility"  # background work (titles, summaries, suggestions); falls back to `chat`
DEFAULT_CONTEXT_WINDOW = 8192  # tokens, when neither models.yaml nor LiteLLM's model info knows


def configure_litellm() -> None:
    """LiteLLM's process-wide switches, set once by the app factory (and the benchmarks): skip per-chunk work a
    chat server does not need (documented module settings). Its price map must be local before LiteLLM is
    imported at all: server/__init__.py sets LITELLM_LOCAL_MODEL_COST_MAP."""
    litellm.disable_streaming_logging = True
    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.turn_off_message_logging = True
    openai_compatible.register()


class ModelConfigError(ValueError):
    """models.yaml is missing, malformed or has no `chat` deployment."""


@dataclass(frozen=True)
class Delta:
    """What a chunk adds beyond text. A stream of them may give a chunk that only adds text as that `str`."""

    text: str = ""
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    model: str | None = None


def load_model_config(path: Path) -> dict[str, Any]:
    """Read a LiteLLM proxy-style config: `model_list` plus optional `router_settings` (e.g. fallbacks)."""
    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ModelConfigError(f"cannot read {path}: {exc}") from exc
    except yaml.YAMLError as exc:  # one line with the place, not PyYAML's several naming "<unicode string>"
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ModelConfigError(f"{path} is not valid YAML: {getattr(exc, 'problem', None) or exc}{where}") from exc
    model_list = config.get("model_list") if isinstance(config, dict) else None
    if not isinstance(model_list, list) or not any(
        isinstance(m, dict) and m.get("model_name") == CHAT for m in model_list
    ):
        raise ModelConfigError(f"{path}: `model_list` needs at least one deployment with model_name: {CHAT}")
    router_settings = config.get("router_settings") or {}
    if "fallbacks" in config:  # also accepted at top level, for short files
        router_settings.setdefault("fallbacks", config["fallbacks"])
    return {"model_list": model_list, "router_settings": router_settings}


def build_router(models: Path | None, pool_size: int) -> Router:
    if models is None:
        from . import embedded

        return Router(model_list=embedded.register(pool_size=pool_size))
    config = load_model_config(models)
    if any(str((d.get("litellm_params") or {}).get("model", "")).startswith("embedded/") for d in config["model_list"]):
        from . import embedded  # models.yaml may use the embedded model too, e.g. as an offline fallback

        embedded.register(pool_size=pool_size)
    return Router(model_list=config["model_list"], **config["router_settings"])


@asynccontextmanager
async def chat_stream(router: Router, messages: list[dict[str, str]], **kwargs: Any
                      ) -> AsyncIterator[AsyncIterator[str | Delta]]:
    """Open a streamed completion; the upstream stream is closed however the caller leaves the block.

    The Router's retries and fallbacks happen inside `acompletion`, i.e. before the first token.
    """
    stream = await router.acompletion(
        model=CHAT, messages=messages, stream=True, stream_options={"include_usage": True}, **kwargs
    )
    deltas = _deltas(stream)
    try:
        yield deltas
    finally:
        # Shielded: a second cancellation must not leave the provider generating for nobody.
        await asyncio.shield(_close(deltas, stream))


async def warm_up(router: Router) -> None:
    """LiteLLM sets up its streaming path lazily on the first call (100-400 ms on the event loop): pay that at
    startup with a mocked call (no provider request), not inside the first user's stream."""
    try:
        async with chat_stream(router, [{"role": "user", "content": "warm-up"}], mock_response="ok") as deltas:
            async for _ in deltas:
                pass
    except Exception as exc:  # only an optimisation
        log.info("LiteLLM warm-up skipped: %s", exc)


async def _close(deltas: Any, stream: Any) -> None:
    await deltas.aclose()
    await stream.aclose()


async def _deltas(stream: Any) -> AsyncIterator[str | Delta]:
    """A chunk that only adds text comes as the text itself (the common case, no object built); the first chunk and
    any with a finish reason or usage come as a Delta."""
    first = True
    async for chunk in stream:
        choices = chunk.choices
        choice = choices[0] if choices else None
        delta = _field(choice, "delta") if choice is not None else None
        text = (_field(delta, "content") if delta is not None else None) or ""
        finish_reason = _field(choice, "finish_reason") if choice is not None else None
        usage = _field(chunk, "usage")
        if finish_reason or usage or (first and text):
            first = False
            yield Delta(text, finish_reason, usage.model_dump() if usage else None, _field(chunk, "model"))
        elif text:  # role-only and empty deltas carry nothing
            yield text


def _field(model: Any, name: str) -> Any:
    """`getattr(model, name, None)` on one of LiteLLM's pydantic chunk objects, read from its field or extra values:
    LiteLLM keeps most chunk attributes as pydantic extras, which getattr reaches through pydantic's `__getattr__`
    (~2 us each, ~7 us for an absent one, several per chunk). Text, finish reason and usage read this way are
    checked on both routes by tests/test_routes.py and tests/test_sse_coalescing.py."""
    value = model.__dict__.get(name)
    if value is None and (extra := model.__pydantic_extra__):
        value = extra.get(name)
    return value


def deployments(router: Router) -> list[dict[str, Any]]:
    return list(router.registry().all())


def group_names(router: Router) -> set[str]:
    return {deployment["model_name"] for deployment in deployments(router)}


def utility_group(router: Router) -> str:
    return UTILITY if UTILITY in group_names(router) else CHAT


def counting_model(router: Router, group: str = CHAT) -> str:
    """The LiteLLM model name whose tokenizer counts a group's context (its first deployment's)."""
    return openai_compatible.known_model(
        next(d["litellm_params"]["model"] for d in deployments(router) if d["model_name"] == group))


def context_window(router: Router, group: str = CHAT) -> int:
    """The smallest input window among a group's deployments: `model_info: {max_context_tokens: N}` in
    models.yaml, else LiteLLM's model info for the model, else DEFAULT_CONTEXT_WINDOW."""
    windows = []
    for deployment in deployments(router):
        if deployment["model_name"] != group:
            continue
        params, info = deployment.get("litellm_params", {}), deployment.get("model_info") or {}
        window = info.get("max_context_tokens")
        if window is None:
            try:
                known = litellm.get_model_info(openai_compatible.known_model(params["model"]))
                window = known.get("max_input_tokens") or known.get("max_tokens")
            except Exception:  # unknown to LiteLLM's map: fine, use the default
                window = None
        windows.append(int(window or DEFAULT_CONTEXT_WINDOW))
    return min(windows, default=DEFAULT_CONTEXT_WINDOW)


def count_tokens(model: str, messages: list[dict[str, str]]) -> int:
    return litellm.token_counter(model=model, messages=messages)


async def complete(router: Router, group: str, messages: list[dict[str, str]], max_tokens: int) -> str:
    """A short non-streamed completion (background work)."""
    response = await router.acompletion(model=group, messages=messages, max_tokens=max_tokens, stream=False)
    return response.choices[0].message.content or ""
