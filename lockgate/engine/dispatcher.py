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
from typing import Any, Awaitable, Callable

from lockgate.engine.flow.concurrency import lease_due
from lockgate.models import Job, JobKind, now_ms
from lockgate.store import operations as ops
from lockgate.store.base import Store, Tx

log = logging.getLogger("lockgate.dispatcher")

LEASE_MS = 120_000
SAFETY_POLL_S = 30.0  # only a safety net; due work is dispatched on wake-up


def _lease_batch(tx: Tx, owner: str, now: int, limit: int, lease_ms: int) -> tuple[list[Job], int | None]:
    # Concurrency limits are checked here, in the leasing transaction (engine/flow/concurrency.py).
    jobs = lease_due(tx, owner=owner, now=now, limit=limit, lease_ms=lease_ms) if limit > 0 else []
    starting = [j.run_id for j in jobs if j.kind == JobKind.CALL.value and j.run_id]
    if starting:
        ops.mark_runs_started(tx, starting, now)
    return jobs, ops.next_wakeup(tx)


class Dispatcher:
    def __init__(self, store: Store, handle: Callable[[Job, Any], Awaitable[tuple[Job, Any] | None]], *,
                 workers: int = 100, lease_ms: int = LEASE_MS, owner: str | None = None) -> None:
        self.store = store
        self.lease_ms = lease_ms  # how long a dead replica's jobs wait before another takes them
        self.handle = handle
        self.workers = workers
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._wake = asyncio.Event()
        self._inflight: dict[str, asyncio.Task] = {}
        self._holding: dict[str, str] = {}  # task key (its first job) -> the job it holds now
        self._stopping = False
        self._tasks: list[asyncio.Task] = []

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
        while not self._stopping:
            self._wake.clear()
            free = self.workers - len(self._inflight)
            try:
                jobs, next_at = await self.store.write(_lease_batch, self.owner, now_ms(), free, self.lease_ms)
            except Exception:  # the store may be restarting: back off, keep going
                log.exception("leasing jobs failed")
                await asyncio.sleep(1.0)
                continue
            for job in jobs:
                self.adopt(job)
            if jobs and len(jobs) == free:
                continue  # probably more due right now
            timeout = SAFETY_POLL_S
            if next_at is not None and free > len(jobs):
                timeout = min(timeout, max(0.0, (next_at - now_ms()) / 1000))
            if timeout <= 0 and not jobs:
                timeout = 0.001  # due-but-leased-elsewhere edge: do not spin hot
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            except asyncio.TimeoutError:
                pass

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
