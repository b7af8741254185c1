"""`step.waitForSignal` and `POST /v1/signals`: a run waits for a named signal; a signal resumes it.

A signal wait is a row in `waits` (kind `signal`, the signal's name as `event_name`) with the usual
timeout job, so a timeout resumes the step with null. One run at a time waits for a given signal:
with `onConflict: "replace"` a new wait takes the signal over and the previous one only lapses at
its timeout (its `match_path` becomes `replaced`); with `"fail"` the newcomer's run fails. A signal
nobody waits for is not kept: the sender gets 404, which the SDK reports as no run id.
"""

from __future__ import annotations

from typing import Any

from lockgate.engine.resume import resume_step
from lockgate.engine.waits import register_wait, timeout_job_id
from lockgate.models import Job, Wait
from lockgate.store import operations as ops
from lockgate.store.base import Tx

KIND = "signal"
OP = "WaitForSignal"
REPLACED = "replaced"


class SignalConflict(Exception):
    """Another run already waits for this signal and the step asked to fail in that case."""


def active_wait(tx: Tx, signal: str) -> Wait | None:
    waiting = [w for w in ops.candidate_waits(tx, signal, None, None) if w.kind == KIND]
    return waiting[-1] if waiting else None  # oldest first: the newest took the signal over


def wait_for_signal(tx: Tx, *, run_id: str, step_id: str, signal: str, conflict: str | None, expires_at: int,
                    display_name: str | None, now: int) -> None:
    """Register the wait; raises SignalConflict when the step said to fail on a conflict."""
    current = active_wait(tx, signal)
    if current is not None and current.run_id != run_id:
        if conflict == "fail":
            raise SignalConflict(f"run {current.run_id} is already waiting for signal {signal!r}")
        tx.execute("UPDATE waits SET match_path = ? WHERE id = ?", (REPLACED, current.id))
    register_wait(tx, Wait(id=f"{run_id}:{step_id}", run_id=run_id, step_id=step_id, kind=KIND, event_name=signal,
                           expression=None, trigger={}, created_at=now, expires_at=expires_at,
                           display_name=display_name), now=now)


def deliver(tx: Tx, signal: str, data: Any, *, now: int) -> tuple[str | None, list[Job]]:
    """Resume the run waiting for `signal` with `{signal, data}`; (its run id or None, queued jobs)."""
    wait = active_wait(tx, signal)
    if wait is None or ops.take_wait(tx, wait.id) is None:
        return None, []
    tx.execute("DELETE FROM jobs WHERE id = ? AND lease_owner IS NULL", (timeout_job_id(wait.id),))
    jobs = resume_step(tx, wait.run_id, wait.step_id, memo={"data": {"signal": signal, "data": data}}, op=OP,
                       display_name=wait.display_name, now=now)
    return wait.run_id, jobs
