"""The body and headers of a call to an SDK endpoint (spec §2.1).

Serialise the body with `jsoncanon.canonical_json` and sign those exact bytes.
"""

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
    qi_id: str | None = None,
) -> dict[str, Any]:
    """The JSON body every SDK accepts.

    `use_api=True` means "too large to send": the caller should pass `events=[]` and `steps={}`
    (the SDK then fetches them from /v0/runs/{id}/batch and /actions) but still the real `event`,
    which Python uses as `ctx.event`.
    """
    ctx: dict[str, Any] = {
        "run_id": run_id,
        "attempt": attempt,
        "max_attempts": max_attempts,  # lets Python turn the last StepError into StepFailed itself
        "disable_immediate_execution": disable_immediate_execution,
        "use_api": use_api,  # read by JS; Python reads the top-level copy
        # Completed step ids in completion order; `current` points just past the newest one.
        "stack": {"stack": list(stack), "current": len(stack)},
    }
    # With both, JS v4 runs several steps per call and checkpoints each (spec §2.11);
    # fn_id without qi_id makes it fail, so callers pass both or neither.
    if fn_id is not None:
        ctx["fn_id"] = fn_id
    if qi_id is not None:
        ctx["qi_id"] = qi_id
    return {
        "event": event,
        "events": events,
        "steps": steps,
        "ctx": ctx,
        "use_api": use_api,  # Python answers 500 when this is missing
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
    """Headers of the call; `signature` comes from `signing.sign_body` over the canonical body."""
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
