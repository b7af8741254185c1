"""How records look to API clients: one place, shared by REST, GraphQL and the dashboard."""

from __future__ import annotations

from typing import Any

from lockgate.models import Event, Function, Run, RunStatus, Step
from lockgate.protocol.timeparse import iso_ms


def _iso(ms: int | None) -> str | None:
    return None if ms is None else iso_ms(ms)


def explain(run: Run) -> str | None:
    """Why a run is where it is: what it waits for, or why it ended."""
    if run.reason:
        return run.reason
    if run.status == RunStatus.QUEUED.value:
        return "queued: waiting for a free worker"
    return None


def run_view(run: Run) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "function_id": run.function_id,
        "function_slug": run.function_slug,
        "function_version": run.function_version,
        "environment_id": "local",
        "event_id": run.event_ids[0] if run.event_ids else None,
        "event_ids": run.event_ids,
        "status": run.status,
        "reason": run.reason,
        "explanation": explain(run),
        "created_at": _iso(run.created_at),
        "run_started_at": _iso(run.started_at or run.created_at),
        "ended_at": _iso(run.ended_at),
        "output": run.output,
        "error": run.error,
        "cron": run.cron,
        # When the run next moves by itself (sleep over, retry due, wait expiry) and its timeouts.
        "wakes_at": _iso(run.wakes_at),
        "deadlines": {which: iso_ms(ms) for which, ms in run.deadlines.items()},
    }


def event_view(event: Event) -> dict[str, Any]:
    return {
        "internal_id": event.internal_id,
        "account_id": "local",
        "environment_id": "local",
        "source": "api",
        "source_id": None,
        "received_at": _iso(event.received_at),
        "id": event.id,
        "name": event.name,
        "data": event.data,
        "user": event.user,
        "ts": event.ts,
        "v": event.v,
        # Why no function ran for it, as of its arrival (no app synced, no such trigger, `if` false).
        "started_nothing": event.started_nothing,
    }


def step_view(step: Step) -> dict[str, Any]:
    return {
        "step_id": step.step_id,
        "name": step.display_name,
        "op": step.op,
        "status": step.status,
        "attempts": step.attempts,
        "started_at": _iso(step.started_at),
        "ended_at": _iso(step.ended_at),
        "output": step.memo,
    }


# Function settings worth showing; the step runtime URLs are shown once, as `url`.
_CONFIG_KEYS = ("triggers", "concurrency", "throttle", "rateLimit", "rate_limit", "debounce", "batchEvents",
                "priority", "timeouts", "singleton", "idempotency", "cancel")


def function_view(fn: Function, next_fires: list[int] | None = None) -> dict[str, Any]:
    config = {k: fn.config[k] for k in _CONFIG_KEYS if fn.config.get(k) is not None}
    view: dict[str, Any] = {
        "id": fn.id,
        "slug": fn.slug,
        "name": fn.name,
        "app": fn.app_name,
        "url": fn.url,
        "version": fn.version,
        "triggers": fn.triggers,
        "retries": fn.retries,
        "config": config,
    }
    if next_fires is not None:
        view["next_cron_fires"] = [iso_ms(ms) for ms in next_fires]
    return view
