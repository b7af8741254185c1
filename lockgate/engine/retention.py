"""Housekeeping: delete finished runs and unneeded events after the retention period, and rows
whose time window has lapsed (idempotency keys, QStash dedup ids, rate-limit buckets).

Deletes go in small batches, each its own short write, with a pause between them (at least twice
the batch's own time) so the hot path's writes never queue long behind housekeeping. Debounce/batch windows and waits need no
sweep: they are deleted when they fire, match or time out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from lockgate.models import now_ms
from lockgate.store import retention_operations as rops
from lockgate.store.base import Store

log = logging.getLogger("lockgate.retention")

BATCH = 100  # rows (runs, events, keys) per write transaction
PAUSE_S = 0.02  # between batches: room for the hot path's writes...
PACE = 2.0  # ...and at least twice as long as the batch took, so a backlog uses at most a third of the writer


@dataclass
class Retention:
    """How long finished work is kept. 0 keeps it forever."""

    seconds: float
    sweep_interval_s: float = 60.0

    @property
    def keeps_forever(self) -> bool:
        return self.seconds <= 0

    def describe(self) -> dict:
        return {
            "retention_seconds": self.seconds,
            "keeps_forever": self.keeps_forever,
            "applies_to": "finished runs with their steps, and events no kept run was triggered by",
            "sweep_interval_seconds": self.sweep_interval_s,
        }


@dataclass
class SweepTotals:
    runs: int = 0
    events: int = 0
    expired: dict[str, int] = field(default_factory=dict)

    @property
    def anything(self) -> bool:
        return bool(self.runs or self.events or any(self.expired.values()))


class Housekeeping:
    def __init__(self, store: Store, retention: Retention, *, batch: int = BATCH, pause_s: float = PAUSE_S) -> None:
        self.store = store
        self.retention = retention
        self.batch = batch
        self.pause_s = pause_s
        self.last = SweepTotals()
        self._pause = pause_s

    async def run_forever(self) -> None:
        while True:
            try:
                self.last = await self.sweep()
                if self.last.anything:
                    log.info("housekeeping deleted %d finished run(s), %d event(s), expired %s",
                             self.last.runs, self.last.events, self.last.expired)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("housekeeping sweep failed; trying again in %.0fs", self.retention.sweep_interval_s)
            await asyncio.sleep(self.retention.sweep_interval_s)

    async def sweep(self) -> SweepTotals:
        totals = SweepTotals()
        now = now_ms()
        if not self.retention.keeps_forever:
            cutoff = now - int(self.retention.seconds * 1000)
            totals.runs = await self._repeat(lambda tx: rops.delete_finished_runs(tx, ended_before=cutoff,
                                                                                  limit=self.batch))
            totals.events = await self._delete_events(cutoff)
        for table in rops.EXPIRING_TABLES:
            totals.expired[table] = await self._repeat(
                lambda tx, table=table: rops.delete_expired(tx, table, now=now, limit=self.batch))
        return totals

    async def _write_paced(self, delete_batch):
        started = time.monotonic()
        result = await self.store.write(delete_batch)
        self._pause = max(self.pause_s, PACE * (time.monotonic() - started)) if self.pause_s else 0.0
        return result

    async def _repeat(self, delete_batch) -> int:
        total = 0
        while True:
            deleted = await self._write_paced(delete_batch)
            total += deleted
            if deleted < self.batch:
                return total
            await asyncio.sleep(self._pause)

    async def _delete_events(self, cutoff: int) -> int:
        total, cursor = 0, 0
        while True:
            deleted, last_seq = await self._write_paced(
                lambda tx: rops.delete_unreferenced_events(tx, received_before=cutoff, after_seq=cursor,
                                                           limit=self.batch))
            total += deleted
            if last_seq is None:
                return total
            cursor = last_seq
            await asyncio.sleep(self._pause)
