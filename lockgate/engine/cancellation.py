"""Cancel-on-event (`cancel: [{event, if?, timeout?}]`): listeners registered with each new
run, indexed and matched like waits, dropped when the run ends."""

from __future__ import annotations

from typing import Any

from lockgate.engine import waits
from lockgate.expressions import ExpressionError, compile_expression, validate_restrictive
from lockgate.models import Function, Run, Wait
from lockgate.protocol.timeparse import parse_time_or_duration
from lockgate.store.base import Tx

MAX_CANCEL_ENTRIES = 5
DEFAULT_CANCEL_WINDOW_MS = 365 * 86400_000


def check_config(raw: dict[str, Any]) -> list[str]:
    """Problems with a function's `cancel` config, in plain words."""
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
    return problems


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
