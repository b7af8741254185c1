"""step.waitForEvent and step.invoke: park a run until an event arrives, or give up at a deadline.

Pending waits are indexed by event name plus one equality key taken from their condition
(`async.data.id == event.data.id` → path `data.id`, value from the run's trigger), so an
incoming event looks up only the waits it can satisfy; the full condition then confirms.
A wait only sees events received after it was registered.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from lockgate.engine.resume import resume_step
from lockgate.expressions import ExpressionError, compile_expression
from lockgate.models import Event, Job, JobKind, Wait
from lockgate.protocol.sdk_response import to_error_memo
from lockgate.store import operations as ops
from lockgate.store.base import Tx

FINISHED_EVENT = "inngest/function.finished"
_SIDE = re.compile(r"^\(*\s*(.+?)\s*\)*$")
_PATH = re.compile(r"^(async|event)((?:\.[A-Za-z_][A-Za-z0-9_]*)+)$")


def _normalise(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def lookup(payload: dict[str, Any], path: str) -> tuple[bool, Any]:
    """Walk 'data.user.id' through an event; (False, None) when a part is missing."""
    current: Any = payload
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return False, None
        current = current[part]
    return True, _normalise(current)


def _operand(text: str, trigger: dict[str, Any]) -> tuple[str, Any] | None:
    """('async', path) for an incoming-event path, ('value', v) for a literal or a trigger field."""
    text = _SIDE.match(text).group(1) if _SIDE.match(text) else text.strip()
    match = _PATH.match(text)
    if match:
        root, path = match.group(1), match.group(2)[1:]
        if root == "async":
            return ("async", path)
        found, value = lookup(trigger, path)
        return ("value", value) if found and not isinstance(value, (dict, list)) else None
    if text.startswith("'") and text.endswith("'") and len(text) >= 2 and "'" not in text[1:-1]:
        return ("value", text[1:-1])
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return None if isinstance(value, (dict, list)) else ("value", _normalise(value))


def equality_key(expression: str | None, trigger: dict[str, Any]) -> tuple[str, Any] | None:
    """One `async.<path> == <value>` conjunct of the condition, for the index (None: scan by name)."""
    if not expression or "||" in expression or "?" in expression or "!" in expression.replace("!=", ""):
        return None
    for conjunct in expression.split("&&"):
        if conjunct.count("==") != 1 or "!=" in conjunct:
            continue
        left, right = conjunct.split("==")
        a, b = _operand(left, trigger), _operand(right, trigger)
        if a and b and {a[0], b[0]} == {"async", "value"}:
            path = a[1] if a[0] == "async" else b[1]
            value = b[1] if a[0] == "async" else a[1]
            return path, value
    return None


def timeout_job_id(wait_id: str) -> str:
    return f"{wait_id}:timeout"


def register_wait(tx: Tx, wait: Wait, *, now: int) -> None:
    key = equality_key(wait.expression, wait.trigger)
    if key is not None:
        wait.match_path, wait.match_value = key
    ops.insert_wait(tx, wait)
    ops.enqueue(tx, [Job(id=timeout_job_id(wait.id), kind=JobKind.WAIT_TIMEOUT.value, run_id=wait.run_id,
                         step_id=wait.step_id, due_at=wait.expires_at, created_at=now, payload={"wait_id": wait.id})])


def _memo_for(wait: Wait, event_payload: dict[str, Any]) -> Any:
    if wait.kind == "invoke":
        data = event_payload.get("data") or {}
        if "error" in data and data.get("error") is not None:
            return {"error": to_error_memo(data["error"])}
        return {"data": data.get("result")}
    return event_payload


def match_event(tx: Tx, event: Event, *, now: int) -> list[Job]:
    """Resume every wait this event satisfies; returns the discovery jobs it queued."""
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
            if wait.created_at > event.received_at:
                continue  # only events received after the wait began count
            if wait.expression:
                try:
                    ok = compile_expression(wait.expression).matches({"event": wait.trigger, "async": payload})
                except ExpressionError:
                    ok = False
                if not ok:
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
        memo, op = None, "WaitForEvent"
    return resume_step(tx, wait.run_id, wait.step_id, memo=memo, op=op, display_name=wait.display_name, now=now)
