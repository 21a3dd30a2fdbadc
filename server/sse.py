"""The SSE wire format: numbered JSON events over aiohttp-sse's EventSourceResponse.

aiohttp-sse owns the protocol details (mandatory headers incl. `X-Accel-Buffering: no`, `: ping` heartbeats from
the moment headers are sent, refusing compression, a send timeout for stalled clients); this module adds our
framing (`id: <message id>.<n>` + one compact JSON `data:` line) and ties a response's life to a generation subscription.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from . import events
from .generation import Generation

NEVER = 10.0**9  # aiohttp-sse requires a positive ping interval; "disabled" is a ping that never comes


async def stream_generation(request: web.Request, generation: Generation, heartbeat: float,
                            after: int = 0) -> EventSourceResponse:
    response = EventSourceResponse(sep="\n", ping_interval=heartbeat if heartbeat > 0 else NEVER,
                                   allow_all_methods=True)
    async with generation.subscribe(after) as batches:
        await response.prepare(request)
        try:
            async for first, batch in batches:
                while batch:
                    transport = request.transport
                    behind = transport is not None and transport.get_write_buffer_size() > 0
                    seq, event, taken = coalesce_tokens(first, batch) if behind else (first, batch[0], 1)
                    await response.send(json.dumps(event, ensure_ascii=False, separators=(",", ":")),
                                        id=generation.event_id(seq))
                    first, batch = first + taken, batch[taken:]
        except (ConnectionResetError, TimeoutError):
            return response  # client gone or stalled: leaving the subscription detaches (see Generation.subscribe)
        finally:
            response.stop_streaming()
    await response.write_eof()
    return response


def coalesce_tokens(first: int, batch: list[dict[str, Any]]) -> tuple[int, dict[str, Any], int]:
    """For a reader whose socket is not drained: the run of pending tokens at the head of `batch` as one token
    event carrying the last one's sequence number (fewer writes as load rises, the same text; the page's parser
    takes any framing, and a resume from that id goes on after the whole run). Returns (seq, event, events used).
    """
    taken = 0
    while taken < len(batch) and batch[taken]["type"] == events.TOKEN:
        taken += 1
    if taken <= 1:
        return first, batch[0], 1
    return first + taken - 1, events.token("".join(e["text"] for e in batch[:taken])), taken
