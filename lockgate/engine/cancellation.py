"""Cancel-on-event (`cancel: [{event, if?, timeout?}]`) and idempotency keys: rules a
function's config applies to each new run, checked and stored with the run itself."""

from __future__ import annotations

from typing import Any

from lockgate.engine import waits
from lockgate.expressions import ExpressionError, compile_expression, render_key, validate_restrictive
from lockgate.models import Function, Run, Wait
from lockgate.protocol.timeparse import parse_time_or_duration
from lockgate.store import operations as ops
from lockgate.store.base import Tx

MAX_CANCEL_ENTRIES = 5
DEFAULT_CANCEL_WINDOW_MS = 365 * 86400_000
IDEMPOTENCY_WINDOW_MS = 24 * 3600 * 1000


def check_config(raw: dict[str, Any]) -> list[str]:
    """Problems with a function's `cancel` and `idempotency` config, in plain words."""
    problems: list[str] = []
    cancel = raw.get("cancel")
    if cancel is not None and not isinstance(cancel, list):
        return ["'cancel' must be a list"]
    if len(cancel or []) > MAX_CANCEL_ENTRIES:
        problems.append(f"at most {MAX_CANCEL_ENTRIES} cancel entries")
    for index, entry in enumerate(cancel or []):
        where = f"cancel[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("event"), str) or not entry["event"]:
            problems.append(f"{where} needs an 'event' name")
            continue
        if entry.get("if"):
            try:
                validate_restrictive(entry["if"])
                compile_expression(entry["if"])
            except ExpressionError as exc:
                problems.append(f"{where}.if: {exc}")
        if entry.get("timeout"):
            try:
                parse_time_or_duration(str(entry["timeout"]), 0)
            except ValueError as exc:
                problems.append(f"{where}.timeout: {exc}")
    key = raw.get("idempotency")
    if key is not None:
        if not isinstance(key, str) or not key:
            problems.append("'idempotency' must be an expression")
        else:
            try:
                compile_expression(key)
            except ExpressionError as exc:
                problems.append(f"idempotency: {exc}")
    return problems


def claim_idempotency(tx: Tx, fn: Function, event: dict[str, Any], *, now: int) -> bool:
    """False when a run of `fn` already started for this key value in the last 24 h."""
    source = fn.config.get("idempotency")
    if not source:
        return True
    try:
        value = compile_expression(source).evaluate({"event": event})
    except ExpressionError:
        return True  # Inngest runs the function when the key cannot be computed
    key = f"idem:{fn.id}:{render_key(value)}"
    return ops.claim_unique_key(tx, key, expires_at=now + IDEMPOTENCY_WINDOW_MS, now=now)


def register_listeners(tx: Tx, fn: Function, run: Run, *, now: int) -> None:
    """One listener per `cancel` entry, matched like a wait; dropped when the run ends."""
    trigger = run.events[0] if run.events else {}
    for index, entry in enumerate(fn.config.get("cancel") or []):
        timeout = entry.get("timeout")
        try:
            expires = parse_time_or_duration(str(timeout), now) if timeout else now + DEFAULT_CANCEL_WINDOW_MS
            listener = Wait(id=f"{run.run_id}:cancel:{index}", run_id=run.run_id, step_id=f"cancel:{index}",
                            kind="cancel", event_name=entry["event"], expression=entry.get("if") or None,
                            trigger=trigger, created_at=now, expires_at=expires)
            if waits.prepare(listener):
                waits.register_wait(tx, listener, now=now)
        except (ExpressionError, ValueError, KeyError):
            continue  # rejected at sync; an older stored config must not stop the run
