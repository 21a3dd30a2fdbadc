"""The SSE wire format: numbered JSON events over aiohttp-sse's EventSourceResponse.

aiohttp-sse owns the protocol details (mandatory headers incl. `X-Accel-Buffering: no`, `: ping` heartbeats from
the moment headers are sent, refusing compression, TCP_USER_TIMEOUT for a peer that stops acknowledging); this
module writes our frames (`id: <message id>.<n>` + one compact JSON `data:` line) and ties a response's life to a
generation subscription.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from . import events
from .generation import Generation

NEVER = 10.0**9  # aiohttp-sse requires a positive ping interval; "disabled" is a ping that never comes
SEND_TIMEOUT = EventSourceResponse.DEFAULT_SEND_TIMEOUT  # seconds a stalled reader may hold a write


async def stream_generation(request: web.Request, generation: Generation, heartbeat: float,
                            after: int = 0) -> EventSourceResponse:
    response = EventSourceResponse(sep="\n", ping_interval=heartbeat if heartbeat > 0 else NEVER,
                                   allow_all_methods=True, send_timeout=SEND_TIMEOUT)
    async with generation.subscribe(after) as batches:
        writer = await response.prepare(request)
        try:
            live = False  # the first batch is the backlog found on attaching
            async for seq, batch in batches:
                if not live:
                    # The backlog (a resume may replay thousands of events): framed as the live stream was (two
                    # subscribers see the same events), written REPLAY_GROUP frames at a time with a turn of the
                    # loop between, so that many resumes at once do not hold every other stream up.
                    for start in range(0, len(batch), REPLAY_GROUP):
                        group = batch[start:start + REPLAY_GROUP]
                        if start:
                            await asyncio.sleep(0)
                        await _send(request, writer, "".join(
                            _frame(generation, seq + start + k, event) for k, event in enumerate(group)))
                    live = True
                    continue
                i = 0
                while i < len(batch):
                    if len(batch) - i > 1:
                        # Several events pending: the loop came late to this writer, so a run of tokens goes out as
                        # one frame, however drained the socket is.
                        last, event, taken = coalesce_tokens(seq, batch, i)
                    else:
                        last, event, taken = seq, batch[i], 1
                    await _send(request, writer, _frame(generation, last, event))
                    seq, i = last + 1, i + taken
        except TimeoutError:
            if request.transport is not None:
                request.transport.abort()  # a stalled peer never drains: a graceful close would wait for ever
            return response
        except ConnectionResetError:
            return response  # client gone: leaving the subscription detaches (see Generation.subscribe)
        finally:
            response.stop_streaming()
    await response.write_eof()
    return response


REPLAY_GROUP = 256


def _frame(generation: Generation, seq: int, event: events.Event) -> str:
    return f"id: {generation.event_id(seq)}\ndata: {events.encode(event)}\n\n"


async def _send(request: web.Request, writer, frames: str) -> None:
    transport = request.transport
    if transport is None:
        raise ConnectionResetError
    if transport.get_write_buffer_size() > 0:
        # Behind: wait while the transport is paused, bounded like aiohttp-sse's send.
        async with asyncio.timeout(SEND_TIMEOUT):
            await writer.drain()
    # Our own frames: aiohttp-sse's send would arm and cancel a timeout timer and build the frame through a
    # StringIO; drained, the write goes straight to the socket.
    await writer.write(frames.encode(), drain=False)


def coalesce_tokens(first: int, batch: list[events.Event], start: int = 0) -> tuple[int, events.Event, int]:
    """For a writer that is behind: the run of pending tokens at `batch[start:]`'s head as one token event carrying
    the last one's sequence number (`first` numbers `batch[start]`; fewer writes as load rises, the same text; the
    page's parser takes any framing, and a resume from that id goes on after the whole run).
    Returns (seq, event, events used)."""
    end = start
    while end < len(batch) and events.is_token(batch[end]):
        end += 1
    if end - start <= 1:
        return first, batch[start], 1
    return first + end - start - 1, events.token("".join(batch[start:end])), end - start
