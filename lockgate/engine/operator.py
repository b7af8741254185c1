"""What an operator does by hand (dashboard buttons and their REST twins), inside one transaction each.

Rerun starts a new run of the same function with the same triggering events, from the start: it
passes concurrency, throttle and priority like any run, but not rate limits, idempotency or
debounce (those decide whether an *event* starts work; a rerun is a deliberate decision).
Replay sends a stored event again as a new event (new id), so it matches today's functions.
"""

from __future__ import annotations

from lockgate.engine import cron
from lockgate.engine.ingest import Handoff, IngestResult, create_run_in_tx
from lockgate.engine.registry import Registry
from lockgate.models import Event, Run
from lockgate.store import operations as ops
from lockgate.store.base import Tx


class OperatorError(ValueError):
    """An action that cannot be done, with the reason (shown as a 4xx and on the page)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def rerun_in_tx(tx: Tx, registry: Registry, run_id: str, *, now: int, handoff: Handoff | None = None,
                result: IngestResult | None = None) -> Run:
    old = ops.get_run(tx, run_id)
    if old is None:
        raise OperatorError(404, f"run {run_id} not found")
    fn = registry.by_id.get(old.function_id)
    if fn is None:
        raise OperatorError(409, f"function {old.function_slug} is no longer synced: re-sync its app to rerun it")
    events = []
    for payload, internal_id in zip(old.events, old.event_ids):
        events.append(Event(internal_id=internal_id, id=payload.get("id") or internal_id, name=payload["name"],
                            data=payload.get("data") or {}, user=payload.get("user") or {}, v=payload.get("v"),
                            ts=payload.get("ts") or now, received_at=now))
    if not events:
        raise OperatorError(409, f"run {run_id} has no triggering event to rerun with")
    # The original ts is kept for the SDK, but a rerun starts now, not at a future ts.
    events[0].ts = min(events[0].ts, now)
    run = create_run_in_tx(tx, fn, events, now=now, handoff=handoff, result=result or IngestResult(),
                           flow_checked=True, registry=registry)
    assert run is not None  # flow_checked skips the only paths that decline
    return run


def remove_app_in_tx(tx: Tx, name: str, *, now: int) -> bool:
    """Forget an app: its functions are archived (old runs stay readable) and its crons stop."""
    app = ops.get_app(tx, name)
    if app is None:
        return False
    for function_id in ops.replace_app_functions(tx, name, [], now):
        ops.delete_jobs_by_prefix(tx, cron.cron_job_prefix(function_id))
    ops.delete_app(tx, name)
    ops.notify_replicas(tx, ops.FUNCTIONS_CHANNEL)
    return True
