"""How records look to API clients: one place, shared by REST, GraphQL and the dashboard."""

from __future__ import annotations

from typing import Any

from lockgate.models import Event, Run, RunStatus, Step
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
