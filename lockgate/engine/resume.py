"""Resuming a run after a step finished outside a call: a sleep ended, an event arrived,
a child run finished, a wait timed out. Runs inside the caller's transaction."""

from __future__ import annotations

from typing import Any

from lockgate.engine import progress
from lockgate.models import DISCOVERY_STEP, Job, JobKind, RunStatus, Step
from lockgate.protocol.event_ids import new_ulid
from lockgate.store import operations as ops
from lockgate.store.base import Tx


# Steps finished outside a call whose memo may carry an error the SDK raises in the function.
FAILABLE_OPS = ("InvokeFunction", "AIGateway", "Gateway")


def discovery_job(run_id: str, now: int, *, due: int | None = None) -> Job:
    return Job(
        id=f"{run_id}:call:{new_ulid()}",
        kind=JobKind.CALL.value,
        run_id=run_id,
        step_id=DISCOVERY_STEP,
        due_at=due or now,
        created_at=now,
    )


def resume_step(
    tx: Tx, run_id: str, step_id: str, *, memo: Any, op: str, display_name: str | None, now: int
) -> list[Job]:
    """Record the step's memo and queue the next discovery once no parallel sibling is out.

    Returns the jobs it queued (empty when the run already ended or siblings remain)."""
    run = ops.get_run(tx, run_id, for_update=True)
    if run is None or RunStatus(run.status).is_final:
        return []
    stack, pending = list(run.stack), list(run.pending_steps)
    failed = isinstance(memo, dict) and "error" in memo and op in FAILABLE_OPS
    step = Step(run_id, step_id, op, "failed" if failed else "completed", display_name, memo=memo,
                position=len(stack), ended_at=now)
    if ops.record_step(tx, step):
        stack.append(step_id)
        progress.note("run.resumed", run, status=RunStatus.RUNNING.value,
                      step=progress.step_info(step_id, display_name, op), output=memo)
    if step_id in pending:
        pending.remove(step_id)
    jobs = [] if pending else [discovery_job(run_id, now)]
    ops.enqueue(tx, jobs)
    ops.update_run(tx, run_id, stack=stack, pending_steps=pending,
                   disable_immediate=run.disable_immediate and bool(pending), reason=None)
    return jobs
