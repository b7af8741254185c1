"""Live pages: a server-sent `changed` event whenever what a page shows may have changed.

The browser (htmx's SSE extension) then re-fetches the page's live fragment. `changes()` is the
one place that knows how change is detected: today a cheap change mark read from the store once a
second (it sees work done by every replica); the realtime broker's run-progress channels
(`lockgate:runs`, `lockgate:run:<id>`) will replace it without touching the pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import StreamingResponse

from lockgate.store import operations as ops

POLL_S = 0.5
KEEPALIVE_S = 15.0

# Set by the server: True once it is shutting down, so open streams end instead of holding it up.
shutting_down: Callable[[], bool] = lambda: False


async def changes(engine: Any, run_id: str | None) -> AsyncIterator[None]:
    """Yield once at start (what changed between the page's render and this connection is not lost)
    and then whenever the watched run (or any run, with None) changes."""
    if run_id is None:
        mark = lambda tx: ops.runs_change_mark(tx)  # noqa: E731
    else:
        mark = lambda tx: ops.run_change_mark(tx, run_id)  # noqa: E731
    last = None
    while True:
        current = await engine.store.read(mark)
        if current != last:
            yield None
            last = current
        await asyncio.sleep(POLL_S)


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
