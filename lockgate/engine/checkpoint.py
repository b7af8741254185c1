"""JS v4 async checkpoints (spec §2.11): steps the SDK ran inside one call, saved before the call ends.

When an execution request carries `ctx.fn_id` and `ctx.qi_id`, the JS v4 SDK runs one step
after another in the same request and reports each through
`POST /v1/checkpoint/{run_id}/async`. Each reported `StepRun` is recorded exactly as if it
had come back in a 206, so a crash of the app or of lockgate afterwards never runs it again;
but no discovery call is queued, because the SDK is still running the function. The call
itself ends later with a 206 (`RunComplete`, a sleep, a wait, ...) that the interpreter
settles as usual. A checkpoint that saved a step resets the call's attempt counter, so a step
failing later in the same call gets the function's full retries.
"""

from __future__ import annotations

from typing import Any

import orjson

from lockgate.engine import progress
from lockgate.engine.interpreter import MAX_STEP_OUTPUT_BYTES, MAX_STEPS_PER_RUN
from lockgate.models import Run, RunStatus, Step
from lockgate.protocol.sdk_response import Op, parse_op
from lockgate.store import operations as ops
from lockgate.store.base import Tx

# Ops the SDK may checkpoint that carry a step result; lazy ops (DeferAdd, ...) need nothing here.
RESULT_OPS = ("StepRun", "Step")


class CheckpointError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_checkpoint(body: Any) -> tuple[str | None, str | None, list]:
    """(fn_id, qi_id, ops) from the SDK's body; raises CheckpointError(400) on bad input."""
    if not isinstance(body, dict):
        raise CheckpointError(400, "the checkpoint body must be a JSON object")
    steps = body.get("steps")
    if not isinstance(steps, list):
        raise CheckpointError(400, "'steps' must be a list of step ops")
    try:
        parsed = [parse_op(raw) for raw in steps]
    except ValueError as exc:
        raise CheckpointError(400, f"bad step op: {exc}") from None
    fn_id, qi_id = body.get("fn_id"), body.get("qi_id")
    return (fn_id if isinstance(fn_id, str) else None, qi_id if isinstance(qi_id, str) else None, parsed)


def save_checkpoint(tx: Tx, run_id: str, body: Any, *, now: int) -> int:
    """Record the checkpointed step results; returns how many were new."""
    fn_id, qi_id, steps = parse_checkpoint(body)
    run = ops.get_run(tx, run_id, for_update=True)
    if run is None:
        raise CheckpointError(404, f"run {run_id} not found")
    if fn_id and fn_id != run.function_id:
        raise CheckpointError(400, f"run {run_id} belongs to function {run.function_id}, not {fn_id}")
    # 409 tells the SDK to stop: the run ended (cancelled, failed) or this call is no longer queued.
    if RunStatus(run.status).is_final:
        raise CheckpointError(409, f"run {run_id} has already ended ({run.status})")
    if qi_id and not any(job.id == qi_id for job in ops.jobs_of_run(tx, run_id)):
        raise CheckpointError(409, f"queue item {qi_id} of run {run_id} is no longer current")
    saved = record_step_results(tx, run, steps, now=now)
    if saved and qi_id:
        # Progress was made: a step failing later in this call gets its full retries (as Inngest).
        tx.execute("UPDATE jobs SET attempt = 0 WHERE id = ? AND run_id = ?", (qi_id, run_id))
    return saved


def record_step_results(tx: Tx, run: Run, steps: list[Op], *, now: int, reason: str | None = None) -> int:
    """Record the step results (StepRun, Step) among `steps` as the SDK reported them from inside
    a call or an endpoint, leaving `reason` as the run's; other ops are left to the caller.
    Returns how many were new."""
    stack = list(run.stack)
    saved = 0
    for op in steps:
        if op.op not in RESULT_OPS:
            continue
        memo = op.data if op.op == "Step" else {"data": op.data}
        # Over a limit: refuse, and the SDK falls back to a 206 in which the interpreter fails the run.
        if len(stack) >= MAX_STEPS_PER_RUN:
            raise CheckpointError(400, f"the run exceeded the limit of {MAX_STEPS_PER_RUN} steps")
        if len(orjson.dumps(memo)) > MAX_STEP_OUTPUT_BYTES:
            raise CheckpointError(400, f"step {op.display_name or op.id!r} returned more output than the limit")
        step = Step(run_id=run.run_id, step_id=op.id, display_name=op.display_name, op=op.op, status="completed",
                    memo=memo, position=len(stack), attempts=1, started_at=now, ended_at=now)
        if ops.record_step(tx, step):
            stack.append(op.id)
            saved += 1
            progress.note("step.finished", run, step=progress.step_info(op.id, op.display_name, op.op), output=op.data)
    if saved:
        ops.update_run(tx, run.run_id, stack=stack, reason=reason)
        run.stack = stack
    return saved
