"""Live pages: a server-sent `changed` event whenever what a page shows may have changed.

The browser (htmx's SSE extension) then re-fetches the page's live fragment. `changes()` is the
one place that knows how change is detected: the engine's run-progress messages on the realtime
broker (`lockgate:run:<id>` for a run page, `lockgate:runs` for the lists; every replica's runs,
through the PostgreSQL or Redis broker), coalesced so a burst of steps costs one refresh, plus a
cheap change mark read from the store every few seconds as a safety net (events that start no
run, a broker outage, a subscriber that fell behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import StreamingResponse

from lockgate.realtime import CLOSING, PROGRESS_TOPIC, RUNS_CHANNEL, run_channel
from lockgate.store import operations as ops

log = logging.getLogger("lockgate.dashboard")

COALESCE_S = 0.2  # progress messages this close together make one refresh
SAFETY_POLL_S = 3.0
KEEPALIVE_S = 15.0

# Set by the server: True once it is shutting down, so open streams end instead of holding it up.
shutting_down: Callable[[], bool] = lambda: False


async def changes(engine: Any, run_id: str | None) -> AsyncIterator[None]:
    """Yield once at start (what changed between the page's render and this connection is not lost)
    and then whenever the watched run (or any run, with None) changes."""
    wake = asyncio.Event()
    tasks = [asyncio.create_task(_progress(engine, run_id, wake)), asyncio.create_task(_marks(engine, run_id, wake))]
    try:
        yield None
        while True:
            await wake.wait()
            await asyncio.sleep(COALESCE_S)
            wake.clear()
            yield None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _progress(engine: Any, run_id: str | None, wake: asyncio.Event) -> None:
    channel = run_channel(run_id) if run_id else RUNS_CHANNEL
    try:
        async with engine.realtime.subscribe(channel, topics={PROGRESS_TOPIC}) as subscription:
            async for message in subscription:
                if message.kind == CLOSING:
                    return  # the store poll carries on alone
                wake.set()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the broker is down: the store poll still refreshes the page
        log.warning("dashboard live updates fall back to polling the store: %s", exc)


async def _marks(engine: Any, run_id: str | None, wake: asyncio.Event) -> None:
    mark = (lambda tx: ops.run_change_mark(tx, run_id)) if run_id else ops.runs_change_mark
    last = await engine.store.read(mark)
    while True:
        await asyncio.sleep(SAFETY_POLL_S)
        current = await engine.store.read(mark)
        if current != last:
            last = current
            wake.set()


def stream(engine: Any, request: Request, run_id: str | None) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        updates = changes(engine, run_id).__aiter__()
        quiet_since = time.monotonic()
        next_update = asyncio.ensure_future(updates.__anext__())
        try:
            while not shutting_down() and not await request.is_disconnected():
                done, _ = await asyncio.wait({next_update}, timeout=1.0)
                if done:
                    next_update.result()
                    yield b"event: changed\ndata: {}\n\n"
                    quiet_since = time.monotonic()
                    next_update = asyncio.ensure_future(updates.__anext__())
                elif time.monotonic() - quiet_since > KEEPALIVE_S:
                    yield b": keep-alive\n\n"
                    quiet_since = time.monotonic()
        finally:
            next_update.cancel()
            with contextlib.suppress(BaseException):
                await next_update
            await updates.aclose()

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
