"""Why a run is not running: computed when read, from the store's own state.

A call parked on a concurrency limit carries its limit key in `lease_owner`; the reason
names the limit, its key value and how many calls hold it. Nothing is written to the run
while it waits, so admission never touches the run's row (no lock-order risk with the
interpreter, which locks the run first).
"""

from __future__ import annotations

from typing import Any, Callable

from lockgate.models import Run, RunStatus, now_ms
from lockgate.store import flow_operations as fops
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


def annotate(tx: Tx, runs: list[Run]) -> list[Run]:
    """Fill in `reason` (in memory only) for runs held back by flow control."""
    now = now_ms()
    for run in runs:
        if not RunStatus(run.status).is_final:
            run.reason = waiting_reason(tx, run, now) or run.reason
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
