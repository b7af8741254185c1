"""The dispatcher: lease due jobs and hand them to workers, without tick polling.

It sleeps until the earliest job is due (or until someone calls `wake()` because
work was just enqueued), leases as many due jobs as it has free worker slots, and
starts one task per job. A task may go on with a follow-up job of the same run (the
handler returns it). `holding()` lists the jobs the tasks hold right now: their leases
are extended by the heartbeat (engine/replicas.py), so a long call is not taken over by
another replica; a crashed process stops extending and its jobs come due again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from lockgate.engine.flow.concurrency import lease_due
from lockgate.models import Job, JobKind, now_ms
from lockgate.store import operations as ops
from lockgate.store.base import Store, Tx

log = logging.getLogger("lockgate.dispatcher")

LEASE_MS = 120_000
SAFETY_POLL_S = 30.0  # only a safety net; due work is dispatched on wake-up


# Due timers applied per dispatcher round, in the leasing transaction. A burst of timers due at
# the same moment goes in one round when it fits: the wake-ups of a second round are taken only
# once the first committed (on SQLite 500 sleeps took 100-140 ms on a loaded machine), and that
# was the whole lateness of half of them. A round holds the writer for its duration, hence a cap.
TIMER_BATCH = 1000


@dataclass(frozen=True)
class Timers:
    """Jobs that need no call to an app (a sleep is over, a timeout, a flow window, a cron tick):
    applied in bulk in the leasing transaction, without taking a worker slot."""

    kinds: tuple[str, ...]
    apply: Callable[[Tx, list[Job], int], None]  # (tx, due timer jobs selected FOR UPDATE, now)


def _lease_batch(tx: Tx, owner: str, now: int, limit: int, lease_ms: int,
                 timers: Timers | None) -> tuple[list[Job], int, int | None]:
    """Apply due timers in bulk (they need no app call, so no worker slot), then lease calls."""
    applied = 0
    due = ops.select_due_jobs(tx, now=now, limit=TIMER_BATCH, kinds=timers.kinds) if timers is not None else []
    if due:
        # A timer that fails to apply must not stop the leasing: it is then leased below like
        # any job and handled (and its failure logged) on its own. (The savepoint costs two
        # round trips: only rounds with due timers pay them.)
        tx.execute("SAVEPOINT due_timers")
        try:
            timers.apply(tx, due, now)
            applied = len(due)
        except Exception:
            log.exception("applying due timers in bulk failed; handling them one by one")
            tx.execute("ROLLBACK TO SAVEPOINT due_timers")
            applied = -1
        tx.execute("RELEASE SAVEPOINT due_timers")
    # Timers left over wait for the next round, unless they could not be applied in bulk.
    leave = timers.kinds if timers is not None and applied >= 0 else ()
    # Concurrency limits are checked here, in the leasing transaction (engine/flow/concurrency.py).
    jobs = lease_due(tx, owner=owner, now=now, limit=limit, lease_ms=lease_ms, other_than=leave) if limit > 0 else []
    starting = [j.run_id for j in jobs if j.kind == JobKind.CALL.value and j.run_id]
    if starting:
        ops.mark_runs_started(tx, starting, now)
    if limit > 0 or timers is None:
        return jobs, applied, ops.next_wakeup(tx)
    # Every worker is busy: only timers can be done before one frees (which wakes the loop).
    return jobs, applied, ops.next_due_of_kinds(tx, timers.kinds)


class Dispatcher:
    def __init__(self, store: Store, handle: Callable[[Job, Any], Awaitable[tuple[Job, Any] | None]], *,
                 workers: int = 100, lease_ms: int = LEASE_MS, owner: str | None = None,
                 timers: Timers | None = None, write: Callable[..., Awaitable[Any]] | None = None) -> None:
        self.store = store
        # The leasing write; the engine passes one that publishes the run progress it notes.
        self._write = write or store.write
        self.lease_ms = lease_ms  # how long a dead replica's jobs wait before another takes them
        self.handle = handle
        self.timers = timers
        self.workers = workers
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._wake = asyncio.Event()
        self._inflight: dict[str, asyncio.Task] = {}
        self._holding: dict[str, str] = {}  # task key (its first job) -> the job it holds now
        self._stopping = False
        self._tasks: list[asyncio.Task] = []
        self.rounds = 0  # leasing transactions
        self.rounds_skipped = 0  # wake-ups a read showed had nothing to lease

    def wake(self) -> None:
        self._wake.set()

    @property
    def free_slots(self) -> int:
        return max(0, self.workers - len(self._inflight))

    def adopt(self, job: Job, state: object = None) -> None:
        """Run a job that was leased elsewhere (in the transaction that created it)."""
        task = asyncio.create_task(self._run_job(job, state), name=f"job {job.id}")
        self._inflight[job.id] = task

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def holding(self) -> list[str]:
        """Ids of the jobs whose leases this process's tasks hold right now."""
        return list(self._holding.values())

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(), name="lockgate-dispatch")]

    async def stop(self, *, grace_s: float = 10.0) -> None:
        """Stop leasing, let in-flight jobs finish for a while, then abandon them to lease expiry."""
        self._stopping = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._inflight:
            _, pending = await asyncio.wait(list(self._inflight.values()), timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _loop(self) -> None:
        idle = False  # the last round found nothing to do
        while not self._stopping:
            self._wake.clear()
            free = self.workers - len(self._inflight)
            if idle and free > 0:
                # Most wake-ups of an idle dispatcher (a run ended, a slot freed) find nothing due:
                # a one-statement read says so without the leasing transaction (a commit, and a
                # trip through the writer queue, per run at light load). A write that queues work
                # wakes us again, and one that committed before this read is seen by it.
                try:
                    due, next_at = await self.store.read(ops.dispatch_outlook, now_ms())
                except Exception:  # the store may be restarting: the leasing round reports it
                    due, next_at = True, None
                if not due:
                    self.rounds_skipped += 1
                    # Woken by the clock at `next_at`, something is due: lease without looking first.
                    idle = not await self._sleep(next_at, at_least=0.001)
                    continue
            try:
                jobs, applied, next_at = await self._write(_lease_batch, self.owner, now_ms(), free,
                                                               self.lease_ms, self.timers)
            except Exception:  # the store may be restarting: back off, keep going
                log.exception("leasing jobs failed")
                idle = False
                await asyncio.sleep(1.0)
                continue
            self.rounds += 1
            idle = not jobs and applied == 0
            held = set(self._inflight) | set(self._holding.values())
            for job in jobs:
                if job.id in held:
                    # Our own call, still running here: its lease lapsed while the store was away
                    # (heartbeats failed) and was just taken again. A second task would call twice.
                    log.warning("job %s: lease lapsed while its call was in flight here; keeping the one call",
                                job.id, extra={"run_id": job.run_id})
                    continue
                self.adopt(job)
            if (jobs and len(jobs) == free) or applied >= TIMER_BATCH:
                continue  # probably more due right now
            if next_at is not None and not (free > len(jobs) or free == 0):
                next_at = None
            # due-but-leased-elsewhere edge (or a timer that fails to apply): do not spin hot
            if await self._sleep(next_at, at_least=0.0 if jobs else (0.5 if applied < 0 else 0.001)):
                idle = False

    async def _sleep(self, next_at: int | None, *, at_least: float) -> bool:
        """Until `next_at` (ms), the safety poll, or a wake-up, whichever comes first. True when
        `next_at` came (something is due now)."""
        timeout = SAFETY_POLL_S
        if next_at is not None:
            timeout = min(timeout, max(0.0, (next_at - now_ms()) / 1000))
        if timeout <= 0:
            timeout = at_least
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            return False
        except asyncio.TimeoutError:
            return next_at is not None and timeout < SAFETY_POLL_S

    async def _run_job(self, job: Job, state: object = None) -> None:
        key = job.id
        current: Job | None = job
        try:
            while current is not None:
                self._holding[key] = current.id
                follow_up = await self.handle(current, state)
                current, state = follow_up if follow_up else (None, None)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The lease lapses and the job is retried; log loudly, it is a bug or an outage.
            log.exception("job %s failed inside the engine", current.id if current else key)
        finally:
            self._inflight.pop(key, None)
            self._holding.pop(key, None)
            self._wake.set()
