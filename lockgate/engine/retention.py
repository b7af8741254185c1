"""Housekeeping: delete finished runs and unneeded events after the retention period, rows
whose time window has lapsed (idempotency keys, QStash dedup ids, rate-limit buckets, finished
QStash messages and their logs), and rows
kept for a key nobody uses any more (wait keys, concurrency keys, singleton keys, silent Connect
replicas and workers).

Deletes go in small batches, each its own short transaction, off the hot path's write queue
where the store has more than one writer (PostgreSQL: `Store.write_background`). Between batches
housekeeping yields (`may_go_on`): it pauses at least twice as long as the batch took, which is all
while the hot path is idle (nothing written for a quarter second), so an idle store's backlog goes
fast. While the hot path writes, it waits until the hot path has used twenty-five times the
batch's time in CPU (this process's CPU, housekeeping's own left out), so its statements take at
most 4% of the hot path's CPU at any load; and it never waits more than two hundred times
the batch, so it keeps deleting for at least about 0.5% of the time however busy the store is.
Debounce/batch windows and waits need no sweep: they are deleted when they fire, match or time out.

Each sweep first brings `run_counts` (0014) up to date: it adds the runs that finished since its
last count, up to LATE_COMMIT_MS ago (a run ended a moment ago may commit later than a run ended
after it: counting stops short of the newest so that none is missed), and with retention on it
takes away the runs a lead of OLD_RELEASE_LEAD_MS ahead of the cutoff, which readers then count
live until they are deleted: a replica of the previous release, whose sweep deletes without
touching run_counts, so never deletes a counted run. One replica at a time moves the counted range
(a row lock); in batches of COUNT_BATCH runs, paced like the deletes.

Each sweep also keeps the planner's statistics fresh: SQLite never gathers them on its own, so
housekeeping runs a sampled `ANALYZE` once the store holds SQLITE_ANALYZE_FROM_RUNS runs (statistics
of a nearly empty store would tell the planner its tables are tiny, worse than none), again
whenever the store's commits have doubled since, and hourly; on PostgreSQL, tables that
autovacuum does not look after (it is off on the server, or for the table) are vacuumed and
analyzed by housekeeping when their dead or changed rows pass autovacuum's default thresholds,
since the queue's tables turn over their rows with every run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from lockgate.models import now_ms
from lockgate.qstash.models import FINISHED_KEPT_MS, LOGS_KEPT_MS
from lockgate.store import health_operations as hops
from lockgate.store import retention_operations as rops
from lockgate.store.base import Store

log = logging.getLogger("lockgate.retention")

BATCH = 100  # rows (runs, events, keys) per write transaction
PAUSE_S = 0.02  # between batches, at least
PACE = 2.0  # ...and at least twice as long as the batch took: an idle store's backlog uses a third
IDLE_AFTER_S = 0.25  # the hot path is idle once it has written nothing for this long
BUSY_SHARE = 0.04  # while the hot path writes: a batch's time at most this share of the hot path's CPU
MAX_BUSY_PACE = 200.0  # ...but never a pause longer than this many times the batch: always some progress
COUNT_BATCH = 10_000  # finished runs counted (or uncounted) per write transaction
LATE_COMMIT_MS = 60_000  # runs are counted once they ended this long ago
OLD_RELEASE_LEAD_MS = 10 * 60_000  # uncounted this long before retention's cutoff reaches them
SQLITE_ANALYZE_EVERY_S = 3600.0
SQLITE_ANALYZE_FROM_RUNS = 10_000


def may_go_on(*, batch_s: float, waited_s: float, hot_path_wrote: bool, hot_cpu_s: float) -> str | None:
    """Whether housekeeping may run its next batch, `waited_s` after one that took `batch_s`, given
    whether the hot path wrote in the last IDLE_AFTER_S and how much CPU it has used
    since the batch ended; the reason, or None to wait on. Called after pauses of at least PACE
    times the batch."""
    if not hot_path_wrote:
        return "idle"  # catch up, at up to a third of the time
    if hot_cpu_s * BUSY_SHARE >= batch_s:
        return "earned"  # by the hot path's own work: the batch stays a small share of its cost
    if waited_s >= MAX_BUSY_PACE * batch_s:
        return "waited longest"
    return None


@dataclass
class HousekeepingActivity:
    """What housekeeping has done since the server started, for operators and benchmarks."""

    batches: int = 0
    busy_s: float = 0.0  # time its delete statements took
    cpu_s: float = 0.0  # CPU time this process spent in them (the database's own included on SQLite)
    runs_deleted: int = 0
    events_deleted: int = 0
    tables_vacuumed: int = 0  # PostgreSQL tables autovacuum leaves to us
    tables_analyzed: int = 0
    went_on: dict[str, int] = field(default_factory=dict)  # why each pause ended (`may_go_on`)

    def describe(self) -> dict:
        return {"batches": self.batches, "busy_seconds": round(self.busy_s, 3),
                "cpu_seconds": round(self.cpu_s, 3),
                "runs_deleted": self.runs_deleted, "events_deleted": self.events_deleted,
                "tables_vacuumed": self.tables_vacuumed, "tables_analyzed": self.tables_analyzed,
                "pauses_ended": dict(self.went_on)}


@dataclass
class Retention:
    """How long finished work is kept. 0 keeps it forever."""

    seconds: float
    sweep_interval_s: float = 60.0
    activity: HousekeepingActivity = field(default_factory=HousekeepingActivity, compare=False, repr=False)

    @property
    def keeps_forever(self) -> bool:
        return self.seconds <= 0

    def describe(self) -> dict:
        return {
            "retention_seconds": self.seconds,
            "keeps_forever": self.keeps_forever,
            "applies_to": "finished runs with their steps, and events no kept run was triggered by",
            "sweep_interval_seconds": self.sweep_interval_s,
            "housekeeping": self.activity.describe(),
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
        self.activity = retention.activity
        self._batch_s = 0.0  # how long the last batch's statements took
        self._writes_seen = self._hot_writes()
        self._last_write_at = float("-inf")  # when the hot path was last seen writing (monotonic)
        self._analyzed_at = float("-inf")  # SQLite: when statistics were last gathered (monotonic)
        self._writes_at_analyze = 0  # ...and the store's commits then
        self.analyze_from_runs = SQLITE_ANALYZE_FROM_RUNS
        self._told_autovacuum_off = False
        self._dialect: str | None = None
        self.count_batch = COUNT_BATCH

    async def run_forever(self) -> None:
        while True:
            try:
                self.last = await self.sweep()
                if self.last.anything:
                    expired = ", ".join(f"{n:,} {what}" for what, n in self.last.expired.items() if n)
                    log.info("housekeeping deleted %d finished run(s) and %d event(s)%s",
                             self.last.runs, self.last.events, f"; expired {expired}" if expired else "")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("housekeeping sweep failed; trying again in %.0fs", self.retention.sweep_interval_s)
            await asyncio.sleep(self.retention.sweep_interval_s)

    async def sweep(self) -> SweepTotals:
        totals = SweepTotals()
        now = now_ms()
        await self.keep_run_counts(now)
        if not self.retention.keeps_forever:
            cutoff = now - int(self.retention.seconds * 1000)
            totals.runs = await self._delete_runs(cutoff)
            totals.events = await self._delete_events(cutoff)
        totals.expired["qstash_messages"] = await self._repeat(
            lambda tx: rops.delete_finished_messages(tx, finished_before=now - FINISHED_KEPT_MS, limit=self.batch))
        totals.expired["qstash_events"] = await self._walk(
            lambda tx, after: rops.delete_old_message_logs(tx, logged_before=now - LOGS_KEPT_MS, after_seq=after,
                                                           limit=self.batch))
        for table in rops.EXPIRING_TABLES:
            totals.expired[table] = await self._repeat(
                lambda tx, table=table: rops.delete_expired(tx, table, now=now, limit=self.batch))
        for table in rops.IN_USE_TABLES:
            totals.expired[table] = await self._repeat(
                lambda tx, table=table: rops.delete_unused(tx, table, limit=self.batch))
        totals.expired["connect"] = await self._write_paced(lambda tx: rops.delete_silent_connect_rows(tx, now=now))
        await self.keep_statistics()
        return totals

    async def keep_run_counts(self, now: int) -> None:
        """Move run_counts' counted range: its end to LATE_COMMIT_MS ago, its start (retention on)
        to OLD_RELEASE_LEAD_MS past the cutoff (module docstring)."""
        await self._move_counted_range(
            lambda tx, limit: hops.count_finished_runs(tx, ended_before=now - LATE_COMMIT_MS, limit=limit))
        if not self.retention.keeps_forever:
            ended_from = now - int(self.retention.seconds * 1000) + OLD_RELEASE_LEAD_MS
            await self._move_counted_range(
                lambda tx, limit: hops.uncount_finished_runs(tx, ended_from=ended_from, limit=limit))

    async def _move_counted_range(self, step) -> None:
        while await self._write_paced(lambda tx: step(tx, self.count_batch)) is not None:
            await self._yield()

    async def keep_statistics(self) -> None:
        """Planner statistics, and on PostgreSQL dead rows autovacuum leaves to us (module docstring)."""
        if self._dialect is None:  # the store's, read once
            self._dialect = await self.store.read(lambda tx: tx.dialect)
        dialect = self._dialect
        if dialect == "sqlite":
            due = (time.monotonic() - self._analyzed_at >= SQLITE_ANALYZE_EVERY_S
                   or self._hot_writes() >= 2 * self._writes_at_analyze)
            if due and await self.store.read(rops.holds_runs, self.analyze_from_runs):
                self._writes_at_analyze = self._hot_writes()
                await self._write_paced(rops.analyze_sqlite)
                self._analyzed_at = time.monotonic()
                self.activity.tables_analyzed += 1
            return
        if dialect != "postgres":
            return
        if not self._told_autovacuum_off and await self.store.read(rops.autovacuum_is_off):
            self._told_autovacuum_off = True
            # Information, not a warning: lockgate's own tables are looked after either way.
            log.info("PostgreSQL's autovacuum is off on this server: lockgate vacuums and analyzes its own "
                     "tables as their rows turn over; turn autovacuum on for everything else in the database")
        for table, need in await self.store.read(rops.tables_left_to_us):
            started = time.perf_counter()
            await self.store.read(rops.vacuum_table, table, need)  # reads run in autocommit, as VACUUM must
            if need == "vacuum":
                self.activity.tables_vacuumed += 1
            else:
                self.activity.tables_analyzed += 1
            log.info("housekeeping: %s %s in %.2fs (autovacuum leaves it to us)",
                     "vacuumed" if need == "vacuum" else "analyzed", table, time.perf_counter() - started)

    def _hot_writes(self) -> int:
        """Writes the hot path has committed so far (stores that count them), to see whether it is busy."""
        return getattr(self.store, "writes", 0)

    def _observe_hot_path(self) -> None:
        writes = self._hot_writes()
        if writes != self._writes_seen:
            self._writes_seen, self._last_write_at = writes, time.monotonic()

    def _hot_cpu(self) -> float:
        """CPU this process has used, all threads, less housekeeping's own deletes. The database
        server's CPU is not in it on PostgreSQL, which only makes the budget smaller."""
        return time.process_time() - self.activity.cpu_s

    async def _write_paced(self, delete_batch):
        def timed(tx):
            # Timed where it runs: on SQLite a batch first waits its turn behind the hot path's
            # writes, and that wait is no cost to them.
            cpu, started = time.thread_time(), time.perf_counter()
            try:
                return delete_batch(tx)
            finally:
                self._batch_s = time.perf_counter() - started
                self.activity.cpu_s += time.thread_time() - cpu

        self._observe_hot_path()
        result = await self.store.write_background(timed)
        self._writes_seen = self._hot_writes()  # where housekeeping's own write is counted (SQLite), skip it
        self.activity.batches += 1
        self.activity.busy_s += self._batch_s
        return result

    async def _yield(self) -> None:
        """Pause after a batch, in steps of at least PACE times its duration, until `may_go_on`."""
        if not self.pause_s:
            return
        step = max(self.pause_s, PACE * self._batch_s)
        cpu_at_start = self._hot_cpu()
        waited = 0.0
        while True:
            await asyncio.sleep(step)
            waited += step
            self._observe_hot_path()
            reason = may_go_on(batch_s=self._batch_s, waited_s=waited,
                               hot_path_wrote=time.monotonic() - self._last_write_at < IDLE_AFTER_S,
                               hot_cpu_s=self._hot_cpu() - cpu_at_start)
            if reason:
                self.activity.went_on[reason] = self.activity.went_on.get(reason, 0) + 1
                return

    async def _repeat(self, delete_batch) -> int:
        total = 0
        while True:
            deleted = await self._write_paced(delete_batch)
            total += deleted
            if deleted < self.batch:
                return total
            await self._yield()

    async def _delete_runs(self, cutoff: int) -> int:
        total, cursor = 0, 0
        while True:
            deleted, last_ended = await self._write_paced(
                lambda tx: rops.delete_finished_runs(tx, ended_before=cutoff, ended_from=cursor, limit=self.batch))
            total += deleted
            self.activity.runs_deleted += deleted
            if last_ended is None or deleted < self.batch:
                return total
            cursor = last_ended
            await self._yield()

    async def _delete_events(self, cutoff: int) -> int:
        def counted(deleted: int) -> None:
            self.activity.events_deleted += deleted

        return await self._walk(lambda tx, after: rops.delete_unreferenced_events(
            tx, received_before=cutoff, after_seq=after, limit=self.batch), on_deleted=counted)

    async def _walk(self, delete_after, on_deleted=None) -> int:
        """Repeat `delete_after(tx, cursor)` -> (deleted, last seq looked at or None when done),
        each batch starting after the last one's cursor."""
        total, cursor = 0, 0
        while True:
            deleted, last_seq = await self._write_paced(lambda tx: delete_after(tx, cursor))
            total += deleted
            if on_deleted:
                on_deleted(deleted)
            if last_seq is None:
                return total
            cursor = last_seq
            await self._yield()
