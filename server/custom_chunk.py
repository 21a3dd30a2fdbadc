"""The chunk a LiteLLM `CustomLLM` provider streams (the embedded model, the `openai_compatible/` route)."""

from __future__ import annotations

from litellm.types.utils import GenericStreamingChunk


def chunk(text: str, finish_reason: str = "", usage: dict | None = None) -> GenericStreamingChunk:
    """LiteLLM's stream wrapper ends the stream at the first text-less chunk after a finish reason: the finish reason
    must come with the usage, in one last chunk."""
    return {
        "text": text,
        "tool_use": None,
        "is_finished": bool(finish_reason),
        "finish_reason": finish_reason,
        "usage": usage,
        "index": 0,
    }
