"""Flow control at run creation, in the order the Inngest server applies it (spec 5):

batching → rate limit and idempotency → debounce → singleton → create the run (event-id dedupe)
→ start/finish timeouts → first call, subject to throttle (its due time), priority (its rank)
and concurrency (checked when it is leased, see concurrency.py).

Everything runs inside the ingest transaction. Debounce and batch windows close through timer
jobs (`JOB_KINDS`), handled by `fire_timer` in the engine's job loop.
"""

from __future__ import annotations

import hashlib
from typing import Any

from lockgate.engine.flow.config import PRIORITY_CLAMP_S, FlowConfig, flow_of
from lockgate.expressions import compile_expression, render_key
from lockgate.models import Event, Function, Job, Run, RunStatus
from lockgate.protocol.timeparse import iso_ms
from lockgate.store import flow_operations as fops
from lockgate.store import operations as ops
from lockgate.store.base import Tx

DEBOUNCE_JOB = "debounce"
BATCH_JOB = "batch"
TIMEOUT_JOB = "flow_timeout"
JOB_KINDS = (DEBOUNCE_JOB, BATCH_JOB, TIMEOUT_JOB)
IDEMPOTENCY_WINDOW_MS = 24 * 3600_000

# Stages of the pipeline; a window that closes resumes after its own stage.
_BATCH, _RATE, _DEBOUNCE, _SINGLETON = range(4)


def _key_value(source: str | None, event: dict[str, Any]) -> Any:
    if source is None:
        return ""
    try:
        return compile_expression(source).evaluate({"event": event})
    except Exception:  # a failing key expression counts as the empty key, as in Go
        return None


def _key_text(value: Any) -> str:
    text = render_key(value)
    # Keep row keys short; long values are hashed (the label keeps a readable prefix).
    return text if len(text) <= 120 else "sha1:" + hashlib.sha1(text.encode()).hexdigest()


def _seconds(ms: int) -> str:
    return f"{ms / 1000:g}s"


def _skip(tx: Tx, fn: Function, event: Event, reason: str, now: int) -> None:
    fops.record_skip(tx, event.internal_id, fn.id, fn.slug, reason, now)


def _event_record(event: Event) -> dict[str, Any]:
    return {**event.payload(), "internal_id": event.internal_id, "received_at": event.received_at}


def _event_from_record(rec: dict[str, Any]) -> Event:
    return Event(internal_id=rec["internal_id"], id=rec["id"], name=rec["name"], data=rec.get("data") or {},
                 ts=rec["ts"], received_at=rec.get("received_at", rec["ts"]), user=rec.get("user") or {},
                 v=rec.get("v"))


def _gcra(tx: Tx, bucket_key: str, now: int, interval_ms: int, tolerance_ms: int, *, drop: bool) -> int | None:
    """Generic cell rate algorithm. Returns when this arrival may pass, or None if dropped."""
    tat = max(fops.bucket_tat(tx, bucket_key, now), now)
    allowed_at = max(now, tat - tolerance_ms)
    if drop and allowed_at > now:
        return None
    fops.set_bucket_tat(tx, bucket_key, tat + interval_ms)
    return allowed_at


def start_runs(
    tx: Tx, fn: Function, events: list[Event], *, now: int, stage: int = _BATCH, registry: Any = None, **kwargs: Any
) -> Run | None:
    """Apply creation-time flow control; returns the run if one was created now."""
    from lockgate.engine.ingest import claim_run_dedupe, create_run_in_tx

    flow = flow_of(fn)
    first = events[0]
    payload = first.payload()
    # A repeated event (same id) must not take a rate-limit token or join a window twice.
    if stage == _BATCH and not claim_run_dedupe(tx, fn, first, now):
        return None

    if stage <= _BATCH and flow.batch is not None and not kwargs.get("correlation_id"):
        cond = flow.batch.condition
        if cond is None or compile_expression(cond).matches({"event": payload}):
            _note_deferred(kwargs)
            return _add_to_batch(tx, fn, flow, first, now=now, registry=registry)

    if stage <= _RATE:
        if flow.rate_limit is not None:
            rl = flow.rate_limit
            value = _key_value(rl.key, payload)
            if value is not False:
                interval = max(1, rl.period_ms // rl.limit)
                key = f"rate:{fn.id}:{_key_text(value)}"
                if _gcra(tx, key, now, interval, interval * (rl.limit - 1), drop=True) is None:
                    where = f" for key {render_key(value)!r}" if rl.key else ""
                    _skip(tx, fn, first, f"rate limited: at most {rl.limit} runs per {_seconds(rl.period_ms)}{where}",
                          now)
                    return None
        if flow.idempotency is not None:
            value = _key_text(_key_value(flow.idempotency, payload))
            if not ops.claim_unique_key(tx, f"idem:{fn.id}:{value}", expires_at=now + IDEMPOTENCY_WINDOW_MS, now=now):
                _skip(tx, fn, first, f"idempotency: a run for key {value!r} already started within 24h", now)
                return None

    if stage <= _DEBOUNCE and flow.debounce is not None and not kwargs.get("correlation_id"):
        _debounce(tx, fn, flow, first, now=now)
        _note_deferred(kwargs)
        return None

    if flow.singleton is not None:
        value = _key_text(_key_value(flow.singleton.key, payload))
        skey = f"{fn.id}:{value}"
        active_id = fops.singleton_run(tx, skey)
        active = ops.get_run(tx, active_id) if active_id else None
        if active is not None and not RunStatus(active.status).is_final:
            if flow.singleton.mode == "skip":
                _skip(tx, fn, first, f"singleton: run {active.run_id} for key {value!r} is still active", now)
                return None
            _cancel(tx, registry, active.run_id, now,
                    f"singleton: replaced by a newer run for key {value!r}")
        run = create_run_in_tx(tx, fn, events, now=now, flow_checked=True, **kwargs)
        if run is not None:
            fops.set_singleton_run(tx, skey, run.run_id)
        return run
    return create_run_in_tx(tx, fn, events, now=now, flow_checked=True, **kwargs)


def _note_deferred(kwargs: dict[str, Any]) -> None:
    if kwargs.get("result") is not None:
        kwargs["result"].deferred += 1


def _cancel(tx: Tx, registry: Any, run_id: str, now: int, reason: str) -> None:
    from lockgate.engine import interpreter
    from lockgate.engine.registry import Registry

    if registry is None:
        registry = Registry.build(ops.load_functions(tx))
    interpreter.cancel_run(tx, interpreter.EngineContext(registry=registry), run_id, now=now, reason=reason)


def prepare_run(tx: Tx, fn: Function, run: Run, job: Job, now: int) -> list[Job]:
    """Shape a new run's first call (throttle, priority), record its limits; returns timer jobs."""
    flow = flow_of(fn)
    event = run.events[0] if run.events else {}
    extra: list[Job] = []
    limits: list[list[Any]] = []
    if flow.concurrency:
        for lim in flow.concurrency:
            if lim.key is None:
                limits.append([f"fn:{fn.id}", lim.limit, f"concurrency limit {lim.limit} of function {fn.slug}"])
                continue
            value = render_key(_key_value(lim.key, event))
            if lim.scope == "fn":  # per function and key expression
                limit_key = f"fn:{fn.id}:{hashlib.sha1(lim.key.encode()).hexdigest()[:12]}:{_key_text(value)}"
            else:  # shared by every function whose key evaluates to this value
                limit_key = f"{lim.scope}:{_key_text(value)}"
            label = f"concurrency limit {lim.limit} ({lim.scope} scope) for key {lim.key} = {value!r}"
            limits.append([limit_key, lim.limit, label])
    if flow.throttle is not None:
        th = flow.throttle
        value = _key_value(th.key, event)
        interval = max(1, th.period_ms // th.limit)
        start = _gcra(tx, f"throttle:{fn.id}:{_key_text(value)}", now, interval, interval * th.burst, drop=False)
        if start is not None and start > job.due_at:
            job.due_at = start
            where = f" for key {render_key(value)!r}" if th.key else ""
            run.reason = (f"throttled: {th.limit} runs per {_seconds(th.period_ms)}{where};"
                          f" starts at {iso_ms(start)}")
    priority_ms = 0
    if flow.priority is not None:
        shift = _key_value(flow.priority, event)
        if isinstance(shift, (int, float)) and not isinstance(shift, bool) and int(shift) == shift:
            priority_ms = max(-PRIORITY_CLAMP_S, min(PRIORITY_CLAMP_S, int(shift))) * 1000
    job.rank_at = job.due_at - priority_ms
    if limits or priority_ms:
        fops.set_run_limits(tx, run.run_id, limits, priority_ms)
    for which, ms in (("start", flow.start_timeout_ms), ("finish", flow.finish_timeout_ms)):
        if ms is not None:
            extra.append(Job(id=f"{run.run_id}:timeout:{which}", kind=TIMEOUT_JOB, run_id=run.run_id,
                             due_at=now + ms, created_at=now, payload={"which": which, "ms": ms}))
    return extra


def _debounce(tx: Tx, fn: Function, flow: FlowConfig, event: Event, *, now: int) -> None:
    db = flow.debounce
    assert db is not None
    window_key = f"debounce:{fn.id}:{_key_text(_key_value(db.key, event.payload()))}"
    window = fops.open_window(tx, window_key, fn.id, DEBOUNCE_JOB, now)
    is_new = not window["events"]
    latest = [_event_record(event)]
    if not is_new:
        held = window["events"][0]
        if held["ts"] > event.ts:  # a late event with an older ts does not replace a newer one
            latest = window["events"]
            _skip(tx, fn, event, f"debounced: event {held['id']} with a later ts is already waiting", now)
        else:
            fops.record_skip(tx, held["internal_id"], fn.id, fn.slug,
                             f"debounced: replaced by the later event {event.id}", now)
    fops.set_window_events(tx, window_key, latest)
    due = now + db.period_ms
    if db.timeout_ms is not None:
        due = min(due, window["first_at"] + db.timeout_ms)
    job_id = f"flow:{window_key}"
    if is_new or not fops.move_timer(tx, job_id, due):
        ops.enqueue(tx, [Job(id=job_id, kind=DEBOUNCE_JOB, due_at=due, created_at=now,
                             payload={"window": window_key, "function_id": fn.id})])


def _add_to_batch(tx: Tx, fn: Function, flow: FlowConfig, event: Event, *, now: int, registry: Any) -> Run | None:
    batch = flow.batch
    assert batch is not None
    window_key = f"batch:{fn.id}:{_key_text(_key_value(batch.key, event.payload()))}"
    window = fops.open_window(tx, window_key, fn.id, BATCH_JOB, now)
    events = window["events"] + [_event_record(event)]
    job_id = f"flow:{window_key}"
    if len(events) >= batch.max_size:
        fops.take_window(tx, window_key)
        fops.drop_timer(tx, job_id)
        return start_runs(tx, fn, [_event_from_record(r) for r in events], now=now, stage=_RATE, registry=registry)
    fops.set_window_events(tx, window_key, events)
    if len(events) == 1:
        ops.enqueue(tx, [Job(id=job_id, kind=BATCH_JOB, due_at=window["first_at"] + batch.timeout_ms, created_at=now,
                             payload={"window": window_key, "function_id": fn.id})])
    return None


def fire_timer(tx: Tx, registry: Any, job: Job, *, now: int) -> list[str]:
    """A debounce/batch window closed or a timeout is due; returns run ids created."""
    row = tx.one("SELECT lease_owner FROM jobs WHERE id = ?", (job.id,))
    if row is None or row["lease_owner"] != job.lease_owner:
        return []  # lease lost: someone else handles it
    if job.kind == TIMEOUT_JOB:
        _fire_timeout(tx, registry, job, now)
        return []
    ops.release_job(tx, job)
    payload = job.payload or {}
    window = fops.take_window(tx, payload.get("window", ""))
    fn = registry.by_id.get(payload.get("function_id")) if registry is not None else None
    fn = fn or ops.get_function(tx, payload.get("function_id", ""))
    if window is None or fn is None or fn.archived or not window["events"]:
        return []
    events = [_event_from_record(r) for r in window["events"]]
    stage = _SINGLETON if job.kind == DEBOUNCE_JOB else _RATE
    run = start_runs(tx, fn, events, now=now, stage=stage, registry=registry)
    return [run.run_id] if run is not None else []


def _fire_timeout(tx: Tx, registry: Any, job: Job, now: int) -> None:
    payload = job.payload or {}
    which, ms = payload.get("which"), int(payload.get("ms") or 0)
    run = ops.get_run(tx, job.run_id or "")
    if run is None or RunStatus(run.status).is_final:
        ops.release_job(tx, job)
        return
    if which == "start":
        if run.started_at is None:
            _cancel(tx, registry, run.run_id, now, f"start timeout: the run did not start within {_seconds(ms)}")
        ops.release_job(tx, job)
        return
    if run.started_at is None:  # not started yet: the finish clock has not begun
        ops.retry_job(tx, job, due_at=now + ms, attempt=job.attempt)
        return
    deadline = run.started_at + ms
    if now >= deadline:
        _cancel(tx, registry, run.run_id, now, f"finish timeout: the run did not finish within {_seconds(ms)}"
                                               " of starting")
        ops.release_job(tx, job)
    else:
        ops.retry_job(tx, job, due_at=deadline, attempt=job.attempt)
