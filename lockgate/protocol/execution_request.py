"""The body and headers of a call to an SDK endpoint (spec §2.1)."""

from __future__ import annotations

from typing import Any


def build_execution_body(
    *,
    event: dict,
    events: list[dict],
    steps: dict,
    run_id: str,
    attempt: int,
    max_attempts: int,
    disable_immediate_execution: bool,
    stack: list[str],
    request_version: int,
    use_api: bool,
    fn_id: str | None = None,
) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "run_id": run_id,
        "attempt": attempt,
        "max_attempts": max_attempts,
        "disable_immediate_execution": disable_immediate_execution,
        "use_api": use_api,
        "stack": {"stack": list(stack), "current": len(stack)},
    }
    if fn_id is not None:  # JS v4 switches on checkpointing when this is present (spec §2.11)
        ctx["fn_id"] = fn_id
    return {
        "event": event,
        "events": events,
        "steps": steps,
        "ctx": ctx,
        "use_api": use_api,
        "version": request_version,
    }


def execution_headers(
    *,
    run_id: str,
    step_id: str,
    request_version: int,
    job_id: str,
    request_id: str,
    signature: str | None,
) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "X-Inngest-Req-Version": str(request_version),
        "X-Run-ID": run_id,
        "X-Inngest-Step-ID": step_id,
        "x-request-id": request_id,
        "x-inngest-job-id": job_id,
    }
    if signature:
        headers["X-Inngest-Signature"] = signature
    return headers
