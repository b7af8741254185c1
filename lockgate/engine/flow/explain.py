"""Why a run is not running: computed when read, from the store's own state.

In order: a call parked on a concurrency limit; a reason the engine recorded (throttled start,
retry backoff, a future event `ts`); otherwise what its queue items and waits say (sleeping,
waiting for an event or an invoked run, scheduled, waiting for a worker).

A call parked on a concurrency limit carries its limit key in `lease_owner`; the reason
names the limit, its key value and how many calls hold it. Nothing is written to the run
while it waits, so admission never touches the run's row (no lock-order risk with the
interpreter, which locks the run first).
"""

from __future__ import annotations

from typing import Any, Callable

from lockgate.engine.flow.admission import TIMEOUT_JOB
from lockgate.models import JobKind, Run, RunStatus, now_ms
from lockgate.protocol.timeparse import iso_ms
from lockgate.store import flow_operations as fops
from lockgate.store import operations as ops
from lockgate.store.base import Tx

WAITING_PREFIX = "waiting for a concurrency slot"


def waiting_reason(tx: Tx, run: Run, now: int) -> str | None:
    limit_key = fops.parked_limit_of_run(tx, run.run_id)
    if limit_key is None:
        return None
    found = fops.run_limits(tx, run.run_id)
    label, capacity = limit_key, None
    for key, cap, text in (found[0] if found else []):
        if key == limit_key:
            label, capacity = text, cap
    in_flight = fops.live_slots(tx, limit_key, now)
    return f"{WAITING_PREFIX}: {label} is full ({in_flight} of {capacity} in flight)"


def paused_reason(tx: Tx, run: Run, now: int) -> str | None:
    """What a run without a call in flight waits for: a sleep, an event, a child run, a worker."""
    jobs = ops.jobs_of_run(tx, run.run_id)
    if any(j.kind == JobKind.CALL.value and j.lease_owner and j.lease_expires_at and j.lease_expires_at >= now
           for j in jobs):
        return None  # a call is in flight: it is running
    for job in jobs:
        if job.kind == JobKind.WAKE.value:
            name = (job.payload or {}).get("display_name") or job.step_id
            return f"sleeping: step {name} wakes at {iso_ms(job.due_at)}"
    for wait in fops.waits_of_run(tx, run.run_id):
        name = wait["display_name"] or wait["event_name"]
        if wait["kind"] == "invoke":
            return f"waiting for the function invoked by step {name} to finish (until {iso_ms(wait['expires_at'])})"
        return f"waiting for event {wait['event_name']} (step {name}, until {iso_ms(wait['expires_at'])})"
    calls = [j for j in jobs if j.kind == JobKind.CALL.value]
    if calls and min(j.due_at for j in calls) > now:
        return f"scheduled: next call at {iso_ms(min(j.due_at for j in calls))}"
    if calls:
        return "queued: waiting for a free worker"
    return None


def fill_times(tx: Tx, run: Run, now: int) -> None:
    """The run's timeout deadlines and the next time it moves by itself (a sleep ends, a retry or
    scheduled call comes due, a wait expires)."""
    upcoming = []
    for job in ops.jobs_of_run(tx, run.run_id):
        if job.kind == TIMEOUT_JOB:
            which, ms = (job.payload or {}).get("which"), int((job.payload or {}).get("ms") or 0)
            if which == "start":
                run.deadlines["start"] = job.due_at
            elif run.started_at is not None:  # the finish clock starts with the run
                run.deadlines["finish"] = run.started_at + ms
        elif job.due_at > now and not job.lease_owner:
            upcoming.append(job.due_at)
    upcoming += [w["expires_at"] for w in fops.waits_of_run(tx, run.run_id)]
    run.wakes_at = min(upcoming) if upcoming else None


def annotate(tx: Tx, runs: list[Run]) -> list[Run]:
    """Fill in `reason` and times (in memory only) for runs that are not running right now."""
    now = now_ms()
    for run in runs:
        if not RunStatus(run.status).is_final:
            run.reason = waiting_reason(tx, run, now) or run.reason or paused_reason(tx, run, now)
            fill_times(tx, run, now)
    return runs


def explained(read: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a store read returning a run or runs so each carries its explanation."""

    def wrapper(tx: Tx, *args: Any, **kwargs: Any) -> Any:
        result = read(tx, *args, **kwargs)
        if isinstance(result, Run):
            annotate(tx, [result])
        elif isinstance(result, list):
            annotate(tx, [r for r in result if isinstance(r, Run)])
        return result

    return wrapper
