"""Live run progress: the engine's one publisher of `lockgate:run:<id>` / `lockgate:runs` messages.

Transaction code calls `note(...)` where a run changes (queued, step finished, sleeping, ended…).
Notes are collected per store write (`collecting`) and published only once that write
committed, so a rolled-back write never announces anything. Outside a collecting write,
`note` is a no-op costing one context-variable read. Publishing is batched in the background
(one broker round trip for everything noted meanwhile), so the hot path never waits for it.
While nobody follows a run's progress (no subscriber on this replica, no other replica
listening: `Broker.followed`), notes gather for up to LINGER_S per write instead: far fewer,
larger writes of what is stored only for later resumes; a note for a followed channel ends the
wait at once.
The message schema is in docs/realtime.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar
from typing import Any, Callable

import orjson

from lockgate.models import Run
from lockgate.protocol.timeparse import iso_ms
from lockgate.realtime import PROGRESS_TOPIC, RUNS_CHANNEL, Broker, Draft, run_channel

log = logging.getLogger("lockgate.progress")

OUTPUT_LIMIT_BYTES = 16 * 1024
PREVIEW_BYTES = 1024
LINGER_S = 0.05  # how long unfollowed notes may wait to share a write
MAX_BACKLOG = 100_000  # notes held while the broker is down; older ones are dropped beyond it

_collector: ContextVar[list | None] = ContextVar("lockgate_progress_notes", default=None)


def note(kind: str, run: Run | None = None, *, run_id: str | None = None, function: str | None = None,
         status: str | None = None, **fields: Any) -> None:
    """Record a progress message for the write in progress (if anyone collects)."""
    notes = _collector.get()
    if notes is None:
        return
    if run is not None:
        run_id = run_id or run.run_id
        function = function or run.function_slug
        status = status or run.status
    notes.append((kind, run_id, function, status, fields))


def step_info(step_id: str, name: str | None, op: str, attempt: int = 0) -> dict[str, Any]:
    return {"id": step_id, "name": name or step_id, "op": op, "attempt": attempt}


def collecting(fn: Callable[..., Any]) -> tuple[Callable[..., Any], list]:
    """Wrap a transaction function so the notes it makes land in the returned list."""
    notes: list = []

    def run(tx: Any, *args: Any) -> Any:
        notes.clear()  # a write retried after a lost connection starts over
        token = _collector.set(notes)
        try:
            return fn(tx, *args)
        finally:
            _collector.reset(token)

    return run, notes


def bounded_output(value: Any) -> Any:
    """The value itself, or past OUTPUT_LIMIT_BYTES a preview saying how large it was."""
    try:
        raw = orjson.dumps(value)
    except TypeError:
        raw = orjson.dumps(str(value))
    if len(raw) <= OUTPUT_LIMIT_BYTES:
        return value
    return {"truncated": True, "bytes": len(raw), "preview": raw[:PREVIEW_BYTES].decode(errors="ignore")}


def until(ms: int | None) -> str | None:
    return iso_ms(ms) if ms else None


class ProgressPublisher:
    """Turns committed notes into broker messages, in batches, off the hot path."""

    def __init__(self, broker: Broker, app_of: Callable[[str], str | None]) -> None:
        self.broker = broker
        self._app_of = app_of
        self._pending: list[Draft] = []
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()  # a note someone follows is pending: no lingering
        self._task: asyncio.Task | None = None
        self._last_warning = 0.0
        self.published = 0
        self.dropped = 0
        self.enabled = True  # LOCKGATE_REALTIME_PROGRESS=0 turns the stream off

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever(), name="lockgate-progress")

    async def stop(self) -> None:
        if self._task is None:
            return
        await self._flush()  # what committed before shutdown still goes out
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def publish(self, notes: list) -> None:
        if not notes or not self.enabled:
            return
        now = int(time.time() * 1000)
        for kind, run_id, function, status, fields in notes:
            data: dict[str, Any] = {"type": kind, "run_id": run_id, "function": function}
            app = self._app_of(function) if function else None
            if app:
                data["app"] = app
            if status:
                data["status"] = status
            for key, value in fields.items():
                if value is None:
                    continue
                data[key] = bounded_output(value) if key == "output" else value
            for channel in (run_channel(run_id), RUNS_CHANNEL):
                self._pending.append(Draft(channel, PROGRESS_TOPIC, data, run_id=run_id, fn_id=function,
                                           created_at_ms=now))
                if not self._urgent.is_set() and self.broker.followed(channel):
                    self._urgent.set()
        if len(self._pending) > MAX_BACKLOG:
            self.dropped += len(self._pending) - MAX_BACKLOG
            del self._pending[:-MAX_BACKLOG]
        self._wake.set()

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            if not self._urgent.is_set():
                try:
                    await asyncio.wait_for(self._urgent.wait(), LINGER_S)
                except asyncio.TimeoutError:
                    pass
            self._wake.clear()
            self._urgent.clear()
            if not await self._flush(everything=False):
                await asyncio.sleep(1.0)  # the broker is down: keep the backlog, try again shortly
                self._wake.set()

    async def _flush(self, everything: bool = True) -> bool:
        """Publish what is pending (`everything=False`: only what was pending when called; what
        arrives meanwhile waits for the next round, and its linger)."""
        left = len(self._pending)
        while self._pending and (everything or left > 0):
            batch, self._pending = self._pending[:500], self._pending[500:]
            left -= len(batch)
            try:
                await self.broker.publish_many(batch)
            except Exception as exc:
                self._pending[:0] = batch
                if time.monotonic() - self._last_warning > 30:
                    self._last_warning = time.monotonic()
                    log.warning("run progress could not be published (%s: %s); %d message(s) held, retrying",
                                exc.__class__.__name__, exc, len(self._pending))
                return False
            self.published += len(batch)
        return True
