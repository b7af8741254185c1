"""Concurrency limits, enforced in the store at the moment a call is leased.

A call job of a run with limits may only keep its lease if every limit has a free slot;
otherwise it is parked (lease_owner = 'flow:<key>') and the run's explanation says which
limit and key it waits for. Slots are rows tied to the job's lease, so whatever ends the lease (the call
settles, is retried, the worker crashes and the lease lapses) frees the slot; the next
lease round notices freed keys and unparks the oldest waiting calls (by rank_at, so
priority applies).
"""

from __future__ import annotations

from lockgate.models import Job, JobKind
from lockgate.store import flow_operations as fops
from lockgate.store import operations as ops
from lockgate.store.base import Tx

PARK_MS = 60_000  # safety net: a parked call is re-checked at least this often


_UNREAD = object()


def admit(tx: Tx, job: Job, now: int, found: object = _UNREAD) -> bool:
    """Called with `job` freshly leased: take its slots, or park it and explain why. `found`: the
    run's limits if the caller read them already (`fops.runs_limits`), None for none."""
    if job.kind != JobKind.CALL.value or not job.run_id:
        return True
    if found is _UNREAD:
        found = fops.run_limits(tx, job.run_id)
    if not found or not found[0]:
        return True
    limits, priority_ms = found
    # Lock keys in a fixed order so two admissions never wait on each other crosswise.
    ordered = sorted(limits, key=lambda entry: entry[0])
    for limit_key, capacity, _label in ordered:
        fops.lock_limit(tx, limit_key, capacity)
        in_flight = fops.live_slots(tx, limit_key, now, excluding_job=job.id)
        if in_flight >= capacity:  # the run's explanation is derived from the park (flow/explain.py)
            fops.park_job(tx, job.id, limit_key, now + PARK_MS, priority_ms)
            job.lease_owner = job.lease_expires_at = None
            return False
    for limit_key, _, _ in ordered:
        fops.take_slot(tx, limit_key, job.id, job.lease_owner)
    return True


def lease_call(tx: Tx, job: Job, *, owner: str, now: int, lease_ms: int) -> bool:
    """Hand-off leasing of one known call, obeying its run's limits."""
    if not ops.lease_job(tx, job, owner=owner, now=now, lease_ms=lease_ms):
        return False
    return admit(tx, job, now)


def release_freed(tx: Tx, now: int) -> None:
    """Unpark as many waiting calls as slots were freed since the last round."""
    for limit_key in fops.freed_limit_keys(tx, now):
        capacity = fops.limit_capacity(tx, limit_key)
        if capacity is None:
            continue
        free = capacity - fops.live_slots(tx, limit_key, now)
        fops.unpark(tx, limit_key, free)


def lease_due(tx: Tx, *, owner: str, now: int, limit: int, lease_ms: int,
              other_than: tuple[str, ...] = ()) -> list[Job]:
    """Lease up to `limit` due jobs (not of the kinds in `other_than`) whose limits admit them;
    parked ones make room for others."""
    release_freed(tx, now)
    admitted: list[Job] = []
    for _ in range(8):  # parked jobs leave the window; look again a few times
        wanted = limit - len(admitted)
        if wanted <= 0:
            break
        jobs = ops.lease_due_jobs(tx, owner=owner, now=now, limit=wanted, lease_ms=lease_ms, other_than=other_than)
        # The runs' limits in one statement for the whole round, not one per job.
        limits = fops.runs_limits(tx, [j.run_id for j in jobs if j.kind == JobKind.CALL.value and j.run_id])
        parked = 0
        for job in jobs:
            if admit(tx, job, now, limits.get(job.run_id)):
                admitted.append(job)
            else:
                parked += 1
        if len(jobs) < wanted or parked == 0:
            break
    return admitted
