"""The opcode interpreter: apply what an SDK answered to a run, in one transaction.

Everything here runs inside a store write transaction (`settle_call(tx, ...)`), so a
step result, the run's bookkeeping and the next queued call are committed together
or not at all. The job being settled is fenced by its lease: if the lease was lost
(another worker took the job over) nothing is applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from lockgate.engine.flow.concurrency import lease_call
from lockgate.engine.flow.config import flow_of
from lockgate.engine.ingest import Handoff, create_run_in_tx, ingest_in_tx
from lockgate.engine.resume import discovery_job, resume_step
from lockgate.engine import progress, signals, waits
from lockgate.engine.waits import FINISHED_EVENT, register_wait
from lockgate.expressions import ExpressionError
from lockgate.engine.registry import Registry
from lockgate.models import DISCOVERY_STEP, Event, Function, Job, JobKind, Run, RunStatus, Step, Wait
from lockgate.protocol import step_requests
from lockgate.protocol.backoff import retry_delay_ms
from lockgate.protocol.event_ids import new_ulid
from lockgate.protocol.sdk_response import (
    FunctionCompleted,
    FunctionErrored,
    Op,
    OpsReturned,
    SdkResult,
    TransportError,
    to_error_memo,
)
from lockgate.protocol.timeparse import iso_ms, parse_time_or_duration
from lockgate.store import operations as ops
from lockgate.store.base import Tx

MAX_STEPS_PER_RUN = 1000
MAX_STEP_OUTPUT_BYTES = 4 * 1024 * 1024
MAX_SLEEP_MS = 366 * 86400_000
DEFAULT_WAIT_MS = 366 * 86400_000


@dataclass(slots=True)
class EngineContext:
    """What transaction code needs from the engine, without importing it."""

    registry: Registry
    retry_interval_s: float | None = None
    handoff: Handoff | None = None  # lets a settled call lease its follow-up at once


@dataclass(slots=True)
class Settled:
    """What the caller should do after the commit."""

    applied: bool = True
    run_finished: str | None = None
    reason: str | None = None  # why the run did not complete, when it ended
    retry_reason: str | None = None  # set when the call failed and will be retried
    new_runs: list[str] = field(default_factory=list)
    next_jobs: list[Job] = field(default_factory=list)  # leased follow-up calls of this run
    next_state: tuple[Run, dict[str, Any]] | None = None  # the run and its memos, for next_jobs


def _hand_off(tx: Tx, ctx: EngineContext, run_id: str, jobs: list[Job], now: int, *,
              run: Run | None = None, memos: dict[str, Any] | None = None) -> Settled:
    """Lease this run's follow-up calls that are due now, so the worker continues without a queue trip.

    Calls that went into the queue already leased by us (`_lease_on_insert`) need no second write;
    `run` and `memos`, when given, are the run as this transaction left it (its row is locked) and
    its recorded steps' memos, so they are not read again."""
    settled = Settled()
    if ctx.handoff is None:
        return settled
    for job in jobs:
        if job.kind == JobKind.CALL.value and len(settled.next_jobs) < ctx.handoff.limit:
            if job.lease_owner == ctx.handoff.owner or lease_call(tx, job, owner=ctx.handoff.owner, now=now,
                                                                  lease_ms=ctx.handoff.lease_ms):
                settled.next_jobs.append(job)
    if settled.next_jobs:
        settled.next_state = (run or ops.get_run(tx, run_id),
                              ops.completed_memos(tx, run_id) if memos is None else memos)
    return settled


def _lease_on_insert(ctx: EngineContext, run: Run, fn: Function, job: Job, now: int, *, calls_before: int) -> None:
    """Lease a new call (fresh id) of a run as it is queued, when nothing may hold it back and
    `_hand_off` will surely take it (fewer than its limit of calls queued before it): due now, and
    no concurrency limit or priority on the run (those are recorded only for runs created under a
    flow-shaping config, i.e. another function version). A leased call nobody runs would wait
    for its lease to lapse."""
    if (ctx.handoff is not None and calls_before < ctx.handoff.limit and job.kind == JobKind.CALL.value
            and job.due_at <= now
            and run.function_version == fn.version and not flow_of(fn).shapes_creation):
        job.lease_owner, job.lease_expires_at = ctx.handoff.owner, now + ctx.handoff.lease_ms


_discovery_job = discovery_job


def _claim_for_settling(tx: Tx, job: Job) -> tuple[bool, Run | None]:
    """(the lease is still ours, the run locked) in one round trip; see `_lease_still_ours`."""
    found = ops.lock_run_of_job(tx, job)
    if found is None:  # the job or its run is gone: tell which, the slow way (rare)
        if not _lease_still_ours(tx, job):
            return False, None
        return True, ops.get_run(tx, job.run_id, for_update=True)
    owner, attempt, run = found
    if owner != job.lease_owner:
        return False, None
    job.attempt = attempt
    return True, run


def _lease_still_ours(tx: Tx, job: Job) -> bool:
    """True when this worker still holds the job; also takes the job's attempt as stored, which a
    checkpoint during the call may have reset (lockgate/engine/checkpoint.py)."""
    row = tx.one("SELECT lease_owner, attempt FROM jobs WHERE id = ?", (job.id,))
    if row is None or row["lease_owner"] != job.lease_owner:
        return False
    job.attempt = row["attempt"]
    return True


def settle_call(
    tx: Tx,
    ctx: EngineContext,
    job: Job,
    fn: Function,
    result: SdkResult,
    *,
    started_at: int,
    now: int,
    sent: tuple[list[str], dict[str, Any]] | None = None,
) -> Settled:
    """Apply what the app answered to a call. `sent`: the stack and memos the call carried, so a
    follow-up call can be given them plus this call's steps without reading every memo again."""
    ours, run = _claim_for_settling(tx, job)
    if not ours:
        return Settled(applied=False)
    if run is None or RunStatus(run.status).is_final:
        # Cancelled (or gone) while the call was in flight: its ops are discarded.
        ops.drop_settled_job(tx, job)
        return Settled(applied=False)
    new_version = None
    if run.request_version == -1 and getattr(result, "request_version", None) is not None:
        run.request_version = new_version = int(result.request_version)

    max_attempts = fn.retries + 1
    if isinstance(result, FunctionCompleted):
        # Ending the run drops every job of it, this one (whose lease we hold) included.
        return finish_run(tx, ctx, run, RunStatus.COMPLETED, output=result.output, now=now,
                          request_version=new_version)
    if new_version is not None:
        ops.update_run(tx, run.run_id, request_version=new_version)
    if isinstance(result, (FunctionErrored, TransportError)):
        if isinstance(result, FunctionErrored):
            error, retriable, retry_at = result.error, result.retriable, result.retry_at_ms
        else:
            error, retriable, retry_at = server_error(result.message), result.retriable, None
        if retriable and job.attempt + 1 < max_attempts:
            due = retry_at if retry_at is not None else now + retry_delay_ms(job.attempt, ctx.retry_interval_s)
            ops.retry_job(tx, job, due_at=due, attempt=job.attempt + 1)
            message = _first_line(error.get("message") if isinstance(error, dict) else error)
            reason = f"attempt {job.attempt + 1} of {max_attempts} failed ({message}); next attempt at {iso_ms(due)}"
            ops.update_run(tx, run.run_id, reason=reason)
            progress.note("step.retried", run, step=progress.step_info(job.step_id, None, "Call", job.attempt),
                          error=error, until=progress.until(due), reason=reason)
            return Settled(retry_reason=reason)
        reason = _final_failure_reason(tx, run, error, retriable=retriable, attempts=job.attempt + 1,
                                       max_attempts=max_attempts, app_answered=isinstance(result, FunctionErrored))
        return finish_run(tx, ctx, run, RunStatus.FAILED, error=error, reason=reason, now=now)
    assert isinstance(result, OpsReturned)
    # The memos sent are still the run's own if no step was recorded meanwhile (a checkpoint).
    known = dict(sent[1]) if sent is not None and list(sent[0]) == list(run.stack) else None
    return _apply_ops(tx, ctx, run, job, fn, result.ops, max_attempts=max_attempts, started_at=started_at, now=now,
                      known_memos=known)


def _apply_ops(
    tx: Tx,
    ctx: EngineContext,
    run: Run,
    job: Job,
    fn: Function,
    op_list: list[Op],
    *,
    max_attempts: int,
    started_at: int,
    now: int,
    known_memos: dict[str, Any] | None = None,
) -> Settled:
    """`known_memos`: every recorded step's memo before this call (None: read them when needed);
    steps recorded here are added to it."""
    planned_any = any(op.op == "StepPlanned" for op in op_list)
    parallel = len(op_list) > 1 or planned_any
    stack = list(run.stack)
    pending = list(run.pending_steps)
    disable_immediate = run.disable_immediate or parallel
    completed_any = False
    race = False
    discover = False
    new_jobs: list[Job] = []

    # Waits first: a send in the same batch may produce the event they wait for.
    ordered = sorted(op_list, key=lambda o: 0 if o.op == "WaitForEvent" else 1)
    for op in ordered:
        kind = op.op
        if kind in ("StepRun", "Step", "StepFailed") or (kind == "StepError"):
            if kind == "StepError":
                no_retry = getattr(op, "no_retry", False)
                if not no_retry and job.attempt + 1 < max_attempts:
                    due = now + retry_delay_ms(job.attempt, ctx.retry_interval_s)
                    ops.retry_job(tx, job, due_at=due, attempt=job.attempt + 1)
                    ops.note_step_pending(
                        tx,
                        Step(run.run_id, op.id, "StepError", "retrying", op.display_name, attempts=job.attempt + 1,
                             started_at=started_at, memo={"error": to_error_memo(op.error)}),
                    )
                    message = _first_line((op.error or {}).get("message") if isinstance(op.error, dict) else op.error)
                    reason = (f"step {op.display_name or op.id} attempt {job.attempt + 1} of {max_attempts} failed"
                              f" ({message}); next attempt at {iso_ms(due)}")
                    ops.update_run(tx, run.run_id, reason=reason)
                    progress.note("step.retried", run, step=progress.step_info(op.id, op.display_name, kind, job.attempt),
                                  error=op.error, until=progress.until(due), reason=reason)
                    return Settled(retry_reason=reason)
            if kind in ("StepRun", "Step"):
                memo: Any = op.data if kind == "Step" else {"data": op.data}
                status = "completed"
            else:
                memo = {"error": to_error_memo(op.error)}
                status = "failed"
            if len(stack) >= MAX_STEPS_PER_RUN:
                return _fail(tx, ctx, run, job, f"the run exceeded the limit of {MAX_STEPS_PER_RUN} steps", now)
            size = len(orjson.dumps(memo))
            if size > MAX_STEP_OUTPUT_BYTES:
                return _fail(tx, ctx, run, job, f"step {op.display_name or op.id!r} returned {_mib(size)} of output;"
                             f" the limit is {_mib(MAX_STEP_OUTPUT_BYTES)} per step", now)
            # The run is locked and a recorded step is in its stack: the insert need not be read back.
            recorded = op.id not in stack
            if recorded:
                ops.record_steps(tx, [Step(
                    run_id=run.run_id,
                    step_id=op.id,
                    display_name=op.display_name,
                    op=kind,
                    status=status,
                    memo=memo,
                    position=len(stack),
                    attempts=job.attempt + 1,
                    started_at=started_at,
                    ended_at=now,
                )])
                stack.append(op.id)
                if known_memos is not None:
                    known_memos[op.id] = memo
                step = progress.step_info(op.id, op.display_name, kind, job.attempt)
                if status == "completed":
                    progress.note("step.finished", run, step=step, output=op.data)
                else:
                    progress.note("step.failed", run, step=step, error=op.error)
            if op.id in pending:
                pending.remove(op.id)
            completed_any = True
            race = race or (op.opts or {}).get("parallelMode") == "race"
        elif kind == "StepPlanned":
            if op.id in pending or op.id in stack or ops.step_is_recorded(tx, run.run_id, op.id):
                continue  # re-reported sibling: already queued or done
            pending.append(op.id)
            new_jobs.append(
                Job(
                    id=f"{run.run_id}:plan:{op.id}",
                    kind=JobKind.CALL.value,
                    run_id=run.run_id,
                    step_id=op.id,
                    due_at=now,
                    created_at=now,
                )
            )
            ops.note_step_pending(tx, Step(run.run_id, op.id, "StepPlanned", "planned", op.display_name, started_at=now))
        elif kind == "Sleep":
            raw = (op.opts or {}).get("duration") or op.name or ""
            try:
                wake_at = parse_time_or_duration(str(raw), now)
            except ValueError as exc:
                return _fail(tx, ctx, run, job, f"step {op.display_name or op.id}: bad sleep duration {raw!r}: {exc}", now)
            if wake_at - now > MAX_SLEEP_MS:
                return _fail(tx, ctx, run, job, f"step {op.display_name or op.id}: sleeps are limited to 366 days", now)
            if op.id in stack:
                continue
            if op.id not in pending:
                pending.append(op.id)
            new_jobs.append(
                Job(
                    id=f"{run.run_id}:wake:{op.id}",
                    kind=JobKind.WAKE.value,
                    run_id=run.run_id,
                    step_id=op.id,
                    due_at=max(now, wake_at),
                    created_at=now,
                    payload={"display_name": op.display_name},
                )
            )
            ops.note_step_pending(tx, Step(run.run_id, op.id, "Sleep", "sleeping", op.display_name, started_at=now))
            progress.note("run.sleeping", run, step=progress.step_info(op.id, op.display_name, kind),
                          until=progress.until(wake_at))
        elif kind == "WaitForEvent":
            if op.id in stack or op.id in pending:
                continue
            opts = op.opts or {}
            try:
                expires = _deadline(opts.get("timeout"), now)
            except ValueError as exc:
                return _fail(tx, ctx, run, job, f"step {op.display_name or op.id}: bad timeout: {exc}", now)
            wait = Wait(id=f"{run.run_id}:{op.id}", run_id=run.run_id, step_id=op.id, kind="wait",
                        event_name=str(opts.get("event") or op.name), expression=opts.get("if") or None,
                        trigger=run.events[0] if run.events else {}, created_at=now, expires_at=expires,
                        display_name=op.display_name)
            try:
                satisfiable = waits.prepare(wait)
            except ExpressionError as exc:
                return _fail(tx, ctx, run, job, f"step {op.display_name or op.id}: {exc}", now)
            earlier = waits.lookback_match(tx, wait, now=now, exclude=run.event_ids) if satisfiable else None
            if earlier is not None:
                if not ops.record_step(tx, Step(run.run_id, op.id, kind, "completed", op.display_name,
                                                memo=earlier, position=len(stack), started_at=now, ended_at=now)):
                    known_memos = None  # recorded before: its memo is the stored one
                elif known_memos is not None:
                    known_memos[op.id] = earlier
                stack.append(op.id)
                completed_any = True
                continue
            pending.append(op.id)
            register_wait(tx, wait, now=now)  # even a never-true condition ends at its timeout
            ops.note_step_pending(tx, Step(run.run_id, op.id, "WaitForEvent", "waiting", op.display_name,
                                           started_at=now))
            progress.note("run.waiting", run, step=progress.step_info(op.id, op.display_name, kind),
                          until=progress.until(expires),
                          waiting_for=wait.event_name + (f" if {wait.expression}" if wait.expression else ""))
        elif kind == "InvokeFunction":
            if op.id in stack or op.id in pending:
                continue
            opts = op.opts or {}
            target_ref = str(opts.get("function_id") or "")
            target = ctx.registry.find(target_ref)
            if target is None:
                ops.record_step(tx, Step(run.run_id, op.id, kind, "failed", op.display_name, position=len(stack),
                                         memo={"error": {"name": "Error",
                                                         "message": f"could not find function with ID: {target_ref}"}},
                                         started_at=now, ended_at=now))
                stack.append(op.id)
                known_memos = None  # rare: the follow-up reads the memos again
                completed_any = True
                continue
            try:
                expires = _deadline(opts.get("timeout"), now)
            except ValueError as exc:
                return _fail(tx, ctx, run, job, f"step {op.display_name or op.id}: bad timeout: {exc}", now)
            payload = opts.get("payload") or {}
            correlation = f"{run.run_id}.{op.id}"
            invoked = system_event(
                "inngest/function.invoked",
                {**(payload.get("data") or {}), "_inngest": {
                    "fn_id": target.slug, "correlation_id": correlation, "expire": expires,
                    "source_app_id": fn.app_name, "source_fn_id": fn.slug, "source_fn_v": fn.version,
                    "name": "inngest/function.invoked"}},
                now=now,
            )
            if isinstance(payload.get("user"), dict):
                invoked.user = payload["user"]
            pending.append(op.id)
            register_wait(tx, Wait(id=f"{run.run_id}:{op.id}", run_id=run.run_id, step_id=op.id, kind="invoke",
                                   event_name=FINISHED_EVENT, expression=None, trigger={}, created_at=now,
                                   expires_at=expires, match_path="data.correlation_id", match_value=correlation,
                                   display_name=op.display_name), now=now)
            ops.insert_events(tx, [invoked])
            create_run_in_tx(tx, target, [invoked], now=now, correlation_id=correlation, registry=ctx.registry)
            ops.note_step_pending(tx, Step(run.run_id, op.id, kind, "invoking", op.display_name, started_at=now))
            progress.note("run.waiting", run, step=progress.step_info(op.id, op.display_name, kind),
                          until=progress.until(expires), waiting_for=f"function {target.slug} (invoked)")
        elif kind == signals.OP:
            if op.id in stack or op.id in pending:
                continue
            opts = op.opts or {}
            name = opts.get("signal") or op.name
            if not isinstance(name, str) or not name:
                return _fail(tx, ctx, run, job, f"step {op.display_name or op.id}: waitForSignal needs a signal name",
                             now)
            try:
                expires = _deadline(opts.get("timeout"), now)
                signals.wait_for_signal(tx, run_id=run.run_id, step_id=op.id, signal=name,
                                        conflict=opts.get("conflict"), expires_at=expires,
                                        display_name=op.display_name, now=now)
            except ValueError as exc:
                return _fail(tx, ctx, run, job, f"step {op.display_name or op.id}: bad timeout: {exc}", now)
            except signals.SignalConflict as exc:
                return _fail(tx, ctx, run, job, f"step {op.display_name or op.id}: {exc} (onConflict: fail)", now)
            pending.append(op.id)
            ops.note_step_pending(tx, Step(run.run_id, op.id, kind, "waiting", op.display_name, started_at=now))
        elif kind in step_requests.OPS:
            if op.id in stack or op.id in pending:
                continue
            try:
                step_requests.build_request(kind, op.opts)
            except step_requests.StepRequestError as exc:
                return _fail(tx, ctx, run, job, f"step {op.display_name or op.id}: {exc}", now)
            pending.append(op.id)
            new_jobs.append(Job(id=f"{run.run_id}:request:{op.id}", kind=JobKind.STEP_REQUEST.value, run_id=run.run_id,
                                step_id=op.id, due_at=now, created_at=now,
                                payload={"op": kind, "opts": op.opts, "display_name": op.display_name}))
            ops.note_step_pending(tx, Step(run.run_id, op.id, kind, "requesting", op.display_name, started_at=now))
        elif kind == "RunComplete":
            return finish_run(tx, ctx, run, RunStatus.COMPLETED, output=op.data, now=now)
        elif kind == "DiscoveryRequest":
            discover = True
        else:
            return _fail(
                tx, ctx, run, job, f"step {op.display_name or op.id}: the '{kind}' operation is not supported by this server", now
            )

    # Request version 0/1 (JS v3) expects a discovery after every parallel step rather than
    # once the whole group is done (spec §2.6); `Promise.race` relies on it there.
    coalesce = not 0 <= run.request_version < 2
    if completed_any:
        if job.step_id == DISCOVERY_STEP or not pending or race or not coalesce:
            discover = True
    if discover:
        if not pending:
            disable_immediate = False
        discovery = _discovery_job(run.run_id, now)
        calls_before = sum(1 for j in new_jobs if j.kind == JobKind.CALL.value)
        _lease_on_insert(ctx, run, fn, discovery, now, calls_before=calls_before)
        new_jobs.append(discovery)
    ops.enqueue(tx, new_jobs)
    ops.update_run(
        tx,
        run.run_id,
        stack=stack,
        pending_steps=pending,
        disable_immediate=disable_immediate,
        reason=None,
    )
    ops.drop_settled_job(tx, job)
    after = replace(run, stack=stack, pending_steps=pending, disable_immediate=disable_immediate, reason=None)
    return _hand_off(tx, ctx, run.run_id, new_jobs, now, run=after, memos=known_memos)


def _first_line(message: Any) -> str:
    text = str(message or "").strip()
    return text.splitlines()[0] if text else "(no message)"


def error_summary(error: Any) -> str:
    """`Name: first line of the message`, for reasons and log lines."""
    if isinstance(error, dict):
        return f"{error.get('name') or 'Error'}: {_first_line(error.get('message'))}"
    return f"Error: {_first_line(error)}"


def _attempts(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"


def _final_failure_reason(tx: Tx, run: Run, error: Any, *, retriable: bool, attempts: int, max_attempts: int,
                          app_answered: bool) -> str:
    """Why a run failed for good, naming the step whose error ended it when there is one: the SDKs
    throw a step's final error again from the function, as a fresh, non-retriable function error."""
    step, step_error = _failed_step_behind(tx, run, error) if app_answered else (None, None)
    if step is not None:
        name = step.display_name or step.step_id
        given_up_early = step.attempts < max_attempts or _is_non_retriable(step_error)
        if given_up_early:
            return f"step {name!r} failed (not retriable): {error_summary(step_error)}"
        return f"step {name!r} failed after {_attempts(step.attempts)}: {error_summary(step_error)}"
    what = "the function" if app_answered else "the call to the app"
    if not retriable and (attempts < max_attempts or _is_non_retriable(error)):
        return f"{what} failed (not retriable): {error_summary(error)}"
    return f"{what} failed after {_attempts(attempts)}: {error_summary(error)}"


def _is_non_retriable(error: Any) -> bool:
    return isinstance(error, dict) and error.get("name") == "NonRetriableError"


def _failed_step_behind(tx: Tx, run: Run, error: Any) -> tuple[Step | None, dict | None]:
    """The latest failed step whose error the function raised again (same name and message), with
    that step's own error; (None, None) when there is none."""
    if not isinstance(error, dict):
        return None, None
    for step in reversed(ops.failed_steps(tx, run.run_id)):
        step_error = step.memo.get("error") if isinstance(step.memo, dict) else None
        if not isinstance(step_error, dict):
            continue
        same_message = _first_line(step_error.get("message")) == _first_line(error.get("message"))
        same_name = step_error.get("name") in (None, "", "Error") or step_error.get("name") == error.get("name")
        if same_message and same_name:
            return step, step_error
    return None, None


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def _fail(tx: Tx, ctx: EngineContext, run: Run, job: Job, message: str, now: int) -> Settled:
    # Ending the run drops every job of it, `job` (whose lease we hold) included.
    return finish_run(tx, ctx, run, RunStatus.FAILED, error=server_error(message), now=now)


def settle_step_request(tx: Tx, ctx: EngineContext, job: Job, fn: Function,
                        result: step_requests.StepRequestResult, *, now: int) -> Settled:
    """The server's request for a step came back: record its output, or retry / fail the step."""
    if not _lease_still_ours(tx, job):
        return Settled(applied=False)
    payload = job.payload or {}
    display = payload.get("display_name")
    if result.error is None:
        memo: Any = {"data": result.output}
    else:
        max_attempts = fn.retries + 1
        if result.retriable and job.attempt + 1 < max_attempts:
            due = now + retry_delay_ms(job.attempt, ctx.retry_interval_s)
            ops.retry_job(tx, job, due_at=due, attempt=job.attempt + 1)
            ops.update_run(tx, job.run_id, reason=f"step {display or job.step_id} attempt {job.attempt + 1} of"
                           f" {max_attempts} failed ({result.error['message']}); next attempt at {iso_ms(due)}")
            return Settled()
        memo = {"error": result.error}
    ops.release_job(tx, job)
    jobs = resume_step(tx, job.run_id, job.step_id, memo=memo, op=payload.get("op", "Gateway"), display_name=display,
                       now=now)
    return _hand_off(tx, ctx, job.run_id, jobs, now)


def wake_sleep(tx: Tx, ctx: EngineContext, job: Job, *, now: int) -> Settled:
    """A sleep is over: record null for its step and continue the run."""
    if not _lease_still_ours(tx, job):
        return Settled(applied=False)
    ops.release_job(tx, job)
    display = (job.payload or {}).get("display_name")
    jobs = resume_step(tx, job.run_id, job.step_id, memo=None, op="Sleep", display_name=display, now=now)
    return _hand_off(tx, ctx, job.run_id, jobs, now)


def _deadline(timeout: Any, now: int) -> int:
    """A wait's expiry: a time string or date; absent means the longest wait allowed."""
    if timeout is None:
        return now + DEFAULT_WAIT_MS
    return min(parse_time_or_duration(str(timeout), now), now + DEFAULT_WAIT_MS)


FAILED_EVENT = "inngest/function.failed"
CANCELLED_MESSAGE = "function cancelled"


def server_error(message: str) -> dict[str, str]:
    """An error the server (not the app) raised, in the Inngest server's shape: `error`, `name`, `message`."""
    return {"error": message, "name": "Error", "message": message}


def system_event(name: str, data: dict[str, Any], *, now: int, event_id: str | None = None) -> Event:
    internal = new_ulid()
    return Event(internal_id=internal, id=event_id or internal, name=name, data=data, ts=now, received_at=now)


def finish_run(
    tx: Tx,
    ctx: EngineContext,
    run: Run,
    status: RunStatus,
    *,
    now: int,
    output: Any = None,
    error: Any = None,
    reason: str | None = None,
    keep_job: str | None = None,
    request_version: int | None = None,
) -> Settled:
    """End a run, drop its queued work (but `keep_job`) and emit the system events (which may start
    runs). `request_version`: the SDK's, when this call is the first to tell it."""
    if reason is None and status is not RunStatus.COMPLETED:  # a run that did not complete says why
        reason = f"{status.value.lower()}: {error_summary(error)}"
    fields: dict[str, Any] = {"status": status.value, "ended_at": now, "reason": reason, "pending_steps": []}
    if request_version is not None:
        fields["request_version"] = request_version
    if status is RunStatus.COMPLETED:
        fields["output"] = output
    if error is not None:
        fields["error"] = error
    ops.update_run(tx, run.run_id, **fields)
    ops.drop_run_work(tx, run.run_id, except_job=keep_job)
    base = {
        "function_id": run.function_slug,
        "run_id": run.run_id,
        "event": run.events[0] if run.events else {},
        "events": run.events,
    }
    if run.correlation_id:
        base["correlation_id"] = run.correlation_id
    if status is RunStatus.COMPLETED:
        base["result"] = output
    else:
        base["error"] = error if error is not None else server_error(reason or status.value)
    # As the Inngest server: the three events share one data object, status included; a run started
    # by one of these events emits none itself, so handlers never trigger each other in a loop.
    base["_inngest"] = {"status": status.value}
    if run.events and run.events[0].get("name") in (FINISHED_EVENT, FAILED_EVENT):
        return Settled(run_finished=status.value)
    events = [system_event(FINISHED_EVENT, dict(base), now=now)]
    if status is RunStatus.FAILED:
        events.append(system_event(FAILED_EVENT, dict(base), now=now, event_id=run.run_id))
    elif status is RunStatus.CANCELLED:
        events.append(system_event("inngest/function.cancelled", dict(base), now=now, event_id=run.run_id))
    result = ingest_in_tx(tx, events, ctx.registry, now=now)
    kind = {RunStatus.COMPLETED: "run.finished", RunStatus.FAILED: "run.failed"}.get(status, "run.cancelled")
    progress.note(kind, run, status=status.value, output=output if status is RunStatus.COMPLETED else None,
                  error=error, reason=reason)
    return Settled(run_finished=status.value, reason=reason, new_runs=result.run_ids)


def cancel_run(tx: Tx, ctx: EngineContext, run_id: str, *, now: int, reason: str) -> Run | None:
    """Cancel a run that has not ended; returns the run as it was, or None if unknown."""
    run = ops.get_run(tx, run_id, for_update=True)
    if run is None:
        return None
    if RunStatus(run.status).is_final:
        return run
    # The error is the Inngest server's for every cancellation; `reason` keeps ours (which event, API, timeout).
    finish_run(tx, ctx, run, RunStatus.CANCELLED, now=now, reason=reason, error=server_error(CANCELLED_MESSAGE))
    return run
