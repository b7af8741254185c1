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
    if step_id not in stack:  # the run is locked, and a recorded step is in its stack
        ops.record_steps(tx, [step])
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


def resume_sleeps(tx: Tx, jobs: list[Job], *, now: int) -> int:
    """Many sleeps are over at once (a dispatcher round's due timers, selected and locked in this
    transaction): record each step and queue each run's next call, with one statement per kind
    of write for the whole batch rather than several per sleep. Returns the calls queued."""
    runs = ops.runs_progress(tx, sorted({j.run_id for j in jobs if j.run_id}))
    ops.delete_jobs(tx, [j.id for j in jobs])
    steps: list[Step] = []
    touched: dict[str, dict[str, Any]] = {}
    for job in jobs:  # in due order: a run with two sleeps over records them in that order
        run = runs.get(job.run_id or "")
        if run is None or RunStatus(run["status"]).is_final or job.step_id is None:
            continue
        stack, pending = run["stack"], run["pending_steps"]
        if job.step_id not in stack:  # not recorded yet (a recorded step is in the stack)
            display = (job.payload or {}).get("display_name")
            steps.append(Step(job.run_id, job.step_id, "Sleep", "completed", display, memo=None,
                              position=len(stack), ended_at=now))
            stack.append(job.step_id)
            progress.note("run.resumed", run_id=job.run_id, function=run["function"], status=RunStatus.RUNNING.value,
                          step=progress.step_info(job.step_id, display, "Sleep"))
        if job.step_id in pending:
            pending.remove(job.step_id)
        touched[job.run_id] = run
    calls = []
    for run_id, run in touched.items():
        if not run["pending_steps"]:
            calls.append(discovery_job(run_id, now))
        run["disable_immediate"] = run["disable_immediate"] and bool(run["pending_steps"])
    ops.record_steps(tx, steps)
    ops.enqueue(tx, calls)
    ops.update_runs_progress(tx, touched)
    return len(calls)
