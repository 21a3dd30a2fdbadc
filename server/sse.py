"""The SSE wire format: numbered JSON events over aiohttp-sse's EventSourceResponse.

aiohttp-sse owns the protocol details (mandatory headers incl. `X-Accel-Buffering: no`, `: ping` heartbeats from
the moment headers are sent, refusing compression, a send timeout for stalled clients); this module adds our
framing (`id: <message id>.<n>` + one compact JSON `data:` line) and ties a response's life to a generation subscription.
"""

from __future__ import annotations

import json

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from .generation import Generation

NEVER = 10.0**9  # aiohttp-sse requires a positive ping interval; "disabled" is a ping that never comes


async def stream_generation(request: web.Request, generation: Generation, heartbeat: float,
                            after: int = 0) -> EventSourceResponse:
    response = EventSourceResponse(sep="\n", ping_interval=heartbeat if heartbeat > 0 else NEVER,
                                   allow_all_methods=True)
    async with generation.subscribe(after) as events:
        await response.prepare(request)
        try:
            async for seq, event in events:
                await response.send(json.dumps(event, ensure_ascii=False, separators=(",", ":")),
                                    id=generation.event_id(seq))
        except (ConnectionResetError, TimeoutError):
            return response  # client gone or stalled: leaving the subscription detaches (see Generation.subscribe)
        finally:
            response.stop_streaming()
    await response.write_eof()
    return response
