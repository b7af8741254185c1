"""Cron triggers: one job per (function, cron trigger), re-armed at every tick.

The job id is fixed per trigger, so however many processes share the store only one
holds the lease for a tick; the tick's event id is its scheduled time, so even a
replayed tick cannot start a second run.
"""

from __future__ import annotations

from lockgate.engine.ingest import create_run_in_tx
from lockgate.engine.registry import Registry
from lockgate.models import Event, Function, Job, JobKind
from lockgate.protocol.cron import parse_cron
from lockgate.protocol.event_ids import new_ulid
from lockgate.protocol.timeparse import iso_ms
from lockgate.store import operations as ops
from lockgate.store.base import Tx


def cron_job_prefix(function_id: str) -> str:
    return f"cron:{function_id}:"


def cron_jobs_for(fn: Function, now: int) -> list[Job]:
    jobs = []
    for index, trig in enumerate(fn.triggers):
        spec = trig.get("cron")
        if not spec:
            continue
        due = parse_cron(spec).next_after(now)
        jobs.append(
            Job(
                id=f"{cron_job_prefix(fn.id)}{index}",
                kind=JobKind.CRON.value,
                due_at=due,
                created_at=now,
                payload={"function_id": fn.id, "cron": spec, "version": fn.version},
            )
        )
    return jobs


def rearm_crons(tx: Tx, fn: Function, now: int) -> None:
    """(Re)create the cron jobs of a function after a sync changed it."""
    ops.delete_jobs_by_prefix(tx, cron_job_prefix(fn.id))
    ops.enqueue(tx, cron_jobs_for(fn, now))


def fire_cron(tx: Tx, registry: Registry, job: Job, *, now: int) -> str | None:
    """Create this tick's scheduled.timer event and run, and re-arm the job for the next tick."""
    payload = job.payload or {}
    fn = registry.by_id.get(payload.get("function_id", ""))
    if fn is None:
        ops.release_job(tx, job)  # function removed: the schedule ends
        return None
    spec = payload["cron"]
    scheduled = job.due_at
    stamp = iso_ms(scheduled)
    event = Event(
        internal_id=new_ulid(),
        id=stamp,
        name="inngest/scheduled.timer",
        data={"cron": spec, "scheduledAt": stamp, "fireAt": stamp},
        ts=scheduled,
        received_at=now,
    )
    ops.insert_events(tx, [event])
    run = create_run_in_tx(tx, fn, [event], now=now, cron=spec)
    next_due = parse_cron(spec).next_after(max(now, scheduled))
    ops.retry_job(tx, job, due_at=next_due, attempt=0)
    return run.run_id if run else None


def next_fire_times(fn: Function, now: int, count: int = 5) -> list[int]:
    """The next `count` ticks of all of a function's cron triggers, merged and in order."""
    ticks: set[int] = set()
    for trig in fn.triggers:
        spec = trig.get("cron")
        if not spec:
            continue
        schedule, at = parse_cron(spec), now
        for _ in range(count):
            at = schedule.next_after(at)
            ticks.add(at)
    return sorted(ticks)[:count]
