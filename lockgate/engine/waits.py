"""Runs paused on an event: step.waitForEvent, step.invoke, and cancel-on-event listeners.

A condition's `event.*` references are replaced by the run's trigger values when the wait
is registered, so matching only needs the incoming event (`async`). Pending waits are
indexed by event name plus one `async.<path> == <literal>` term of that condition, so an
incoming event looks up only the waits it can satisfy; the full condition then confirms.

A wait sees events received after it was registered, as in Inngest. Lockgate adds a
lookback window: when the condition bounds `async.ts` from below (`async.ts >= event.ts`,
`async.ts > event.ts - 60000`), events already received inside that bound — at most
`MAX_LOOKBACK_MS` back — can satisfy the wait the moment it is registered. On another
server the same condition is merely a harmless extra filter.
"""

from __future__ import annotations

from typing import Any, Callable

from lockgate.engine.resume import resume_step
from lockgate.expressions import (
    ExpressionError,
    compile_expression,
    equality_keys,
    interpolate_event,
    key_value,
    lookback_bound,
)
from lockgate.models import Event, Job, JobKind, Wait
from lockgate.protocol.sdk_response import to_error_memo
from lockgate.store import operations as ops
from lockgate.store.base import Tx

FINISHED_EVENT = "inngest/function.finished"
MAX_LOOKBACK_MS = 24 * 3600 * 1000
MAX_LOOKBACK_CANDIDATES = 10_000


def lookup(payload: dict[str, Any], path: str) -> tuple[bool, Any]:
    """Walk 'data.user.id' through an event; (False, None) when a part is missing."""
    current: Any = payload
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return False, None
        current = current[part]
    return True, key_value(current)


def prepare(wait: Wait) -> bool:
    """Interpolate the trigger into the condition and pick its index key.

    Returns False when the condition can never hold (it interpolates to a constant that is not
    true): such a wait need not be stored at all. Raises ExpressionError for a bad condition.
    """
    if not wait.expression:
        return True
    interpolated = interpolate_event(wait.expression, wait.trigger)
    compiled = compile_expression(interpolated)
    if compiled.is_constant:
        if compiled.matches({}):
            wait.expression = None
            return True
        return False
    wait.expression = interpolated
    if wait.match_path is None:
        keys = equality_keys(interpolated)
        if keys:
            wait.match_path, wait.match_value = keys[0]
    return True


def _satisfies(wait: Wait, payload: dict[str, Any]) -> bool:
    if not wait.expression:
        return True
    try:
        return compile_expression(wait.expression).matches({"event": wait.trigger, "async": payload})
    except ExpressionError:
        return False


def timeout_job_id(wait_id: str) -> str:
    return f"{wait_id}:timeout"


def register_wait(tx: Tx, wait: Wait, *, now: int) -> None:
    """Store a prepared wait; waits and invokes also get a timeout job at their deadline."""
    ops.insert_wait(tx, wait)
    if wait.kind != "cancel":  # cancel listeners just lapse; they are dropped when the run ends
        ops.enqueue(tx, [Job(id=timeout_job_id(wait.id), kind=JobKind.WAIT_TIMEOUT.value, run_id=wait.run_id,
                             step_id=wait.step_id, due_at=wait.expires_at, created_at=now,
                             payload={"wait_id": wait.id})])


def lookback_match(tx: Tx, wait: Wait, *, now: int, exclude: list[str]) -> dict[str, Any] | None:
    """The earliest already-received event inside the wait's lookback window that satisfies it."""
    if not wait.expression:
        return None
    source = lookback_bound(wait.expression)
    if source is None:
        return None
    try:
        bound = compile_expression(source).evaluate({"event": wait.trigger})
    except ExpressionError:
        return None
    if isinstance(bound, bool) or not isinstance(bound, (int, float)):
        return None
    since = max(int(bound) - 1, now - MAX_LOOKBACK_MS)  # ts may precede receipt a little
    for event in ops.recent_events(tx, wait.event_name, since=since, limit=MAX_LOOKBACK_CANDIDATES):
        if event.internal_id in exclude:
            continue
        payload = event.payload()
        if wait.match_path is not None and lookup(payload, wait.match_path) != (True, wait.match_value):
            continue
        if _satisfies(wait, payload):
            return payload
    return None


def _memo_for(wait: Wait, event_payload: dict[str, Any]) -> Any:
    if wait.kind == "invoke":
        data = event_payload.get("data") or {}
        if "error" in data and data.get("error") is not None:
            return {"error": to_error_memo(data["error"])}
        return {"data": data.get("result")}
    return event_payload


def match_event(
    tx: Tx, event: Event, *, now: int, cancel: Callable[[Wait, Event], None] | None = None
) -> list[Job]:
    """Resume every wait this event satisfies (and fire matching cancel listeners through
    `cancel`); returns the discovery jobs it queued."""
    paths = ops.wait_paths(tx, event.name)
    if not paths:
        return []
    payload = event.payload()
    queued: list[Job] = []
    for path in paths:
        if path is None:
            candidates = ops.candidate_waits(tx, event.name, None, None)
        else:
            found, value = lookup(payload, path)
            if not found:
                continue
            candidates = ops.candidate_waits(tx, event.name, path, value)
        for wait in candidates:
            if wait.kind == "signal":
                continue  # only POST /v1/signals resumes these (lockgate/engine/signals.py)
            if wait.created_at > event.received_at or wait.expires_at < event.received_at:
                continue  # only events received while the wait is open count
            if not _satisfies(wait, payload):
                continue
            if wait.kind == "cancel":
                if cancel is not None:
                    cancel(wait, event)
                continue
            if ops.take_wait(tx, wait.id) is None:
                continue
            tx.execute("DELETE FROM jobs WHERE id = ? AND lease_owner IS NULL", (timeout_job_id(wait.id),))
            op = "InvokeFunction" if wait.kind == "invoke" else "WaitForEvent"
            queued += resume_step(tx, wait.run_id, wait.step_id, memo=_memo_for(wait, payload), op=op,
                                  display_name=wait.display_name, now=now)
    return queued


def expire_wait(tx: Tx, job: Job, *, now: int) -> list[Job]:
    """The deadline passed: resume with null (wait) or a timeout error (invoke)."""
    ops.release_job(tx, job)
    wait = ops.take_wait(tx, (job.payload or {}).get("wait_id", ""))
    if wait is None:
        return []  # an event got there first
    if wait.kind == "invoke":
        memo: Any = {"error": {"name": "InngestInvokeTimeoutError",
                               "message": "Timed out waiting for invoked function to complete"}}
        op = "InvokeFunction"
    else:
        memo, op = None, "WaitForSignal" if wait.kind == "signal" else "WaitForEvent"
    return resume_step(tx, wait.run_id, wait.step_id, memo=memo, op=op, display_name=wait.display_name, now=now)
