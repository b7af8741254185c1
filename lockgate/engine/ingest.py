"""Event ingestion: validate, store, match triggers and create runs — in one transaction.

The events API commits this transaction before it answers, so an acknowledged event
and the runs it starts survive a crash together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from lockgate.engine import cancellation, progress
from lockgate.engine.flow.concurrency import lease_call
from lockgate.engine.flow.config import flow_of
from lockgate.engine.registry import Registry, why_nothing_started
from lockgate.models import DISCOVERY_STEP, Event, Function, Job, JobKind, Run, RunStatus, Wait
from lockgate.protocol.event_ids import new_ulid, ulid_from_seed
from lockgate.protocol.text import has_control_chars
from lockgate.store import operations as ops
from lockgate.store.base import Tx

MAX_EVENTS_PER_REQUEST = 5000
MAX_EVENT_BYTES = 3 * 1024 * 1024
MAX_NAME_LENGTH = 255
MAX_ID_LENGTH = 512  # the default of LOCKGATE_MAX_EVENT_ID_LENGTH
TS_MIN = 315532800000  # 1980-01-01
TS_MAX = 4102444800000  # 2100-01-01
RUN_DEDUPE_WINDOW_MS = 24 * 3600 * 1000
RESERVED_PREFIX = "inngest/"


class EventValidationError(ValueError):
    """Bad event input. `index` says which event of the request was wrong."""

    def __init__(self, message: str, index: int | None = None) -> None:
        prefix = f"event {index}: " if index is not None else ""
        super().__init__(prefix + message)
        self.index = index


def parse_events(
    body: Any, *, seed: str | None, now: int, allow_internal: bool = False, max_id_length: int = MAX_ID_LENGTH
) -> list[Event]:
    """Turn a decoded request body (one event or a list) into Event records, or raise."""
    items = body if isinstance(body, list) else [body]
    if isinstance(body, list) and not body:
        raise EventValidationError("the request holds no events")
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise EventValidationError(f"at most {MAX_EVENTS_PER_REQUEST} events per request, got {len(items)}")
    events = []
    for index, raw in enumerate(items):
        events.append(_parse_one(raw, index, seed=seed, now=now, allow_internal=allow_internal,
                                 max_id_length=max_id_length))
    return events


def _parse_one(raw: Any, index: int, *, seed: str | None, now: int, allow_internal: bool,
               max_id_length: int = MAX_ID_LENGTH) -> Event:
    if not isinstance(raw, dict):
        raise EventValidationError(f"an event must be a JSON object, got {type(raw).__name__}", index)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise EventValidationError("'name' is required and must be a non-empty string", index)
    if len(name) > MAX_NAME_LENGTH:
        raise EventValidationError(f"'name' is longer than {MAX_NAME_LENGTH} characters", index)
    if has_control_chars(name):
        raise EventValidationError("'name' must not hold control characters (NUL, newline, ...)", index)
    if not allow_internal and name.lower().startswith(RESERVED_PREFIX):
        raise EventValidationError(f"event names starting with '{RESERVED_PREFIX}' are reserved: {name!r}", index)
    data = raw.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise EventValidationError(f"'data' must be a JSON object, got {type(data).__name__}", index)
    if not allow_internal and "_inngest" in data:
        data = {k: v for k, v in data.items() if k != "_inngest"}
    user = raw.get("user")
    if user is None:
        user = {}
    if not isinstance(user, dict):
        raise EventValidationError("'user' must be a JSON object", index)
    producer_id = raw.get("id")
    if producer_id is not None and not isinstance(producer_id, str):
        raise EventValidationError("'id' must be a string", index)
    if producer_id is not None and len(producer_id) > max_id_length:
        raise EventValidationError(f"'id' is longer than {max_id_length} characters "
                                   "(LOCKGATE_MAX_EVENT_ID_LENGTH)", index)
    if producer_id is not None and has_control_chars(producer_id):
        raise EventValidationError("'id' must not hold control characters (NUL, newline, ...)", index)
    ts = raw.get("ts")
    if ts is None or ts == 0:
        ts = now
    elif isinstance(ts, bool) or not isinstance(ts, (int, float)) or int(ts) != ts:
        raise EventValidationError("'ts' must be an integer number of milliseconds since the epoch", index)
    ts = int(ts)
    if not TS_MIN <= ts <= TS_MAX:
        raise EventValidationError("'ts' must lie between 1980-01-01 and 2100-01-01 (milliseconds)", index)
    v = raw.get("v")
    if v is not None and (not isinstance(v, str) or len(v) > MAX_NAME_LENGTH or has_control_chars(v)):
        raise EventValidationError(f"'v' must be a string of at most {MAX_NAME_LENGTH} printable characters", index)
    try:
        size = len(orjson.dumps(data)) + len(orjson.dumps(user))
    except TypeError:  # only from callers inside the engine: the HTTP edge decoded this with orjson
        raise EventValidationError("'data' or 'user' cannot be stored as JSON (nested too deeply, or an integer "
                                   "beyond 64 bits)", index) from None
    if size > MAX_EVENT_BYTES:
        raise EventValidationError(f"event is {size} bytes; the limit is {MAX_EVENT_BYTES}", index)
    internal_id = ulid_from_seed(seed, index) or new_ulid()
    return Event(
        internal_id=internal_id,
        id=producer_id or internal_id,
        name=name,
        data=data,
        user=user,
        v=v,
        ts=ts,
        received_at=now,
    )


@dataclass(slots=True)
class IngestResult:
    run_ids: list[str] = field(default_factory=list)
    resumed: int = 0  # paused runs this batch of events woke up
    leased: list[tuple[Job, Run]] = field(default_factory=list)  # first calls handed straight to workers
    deferred: int = 0  # events held in a debounce or batch window (their timers need the dispatcher)
    resumed_runs: list[tuple[str, Event]] = field(default_factory=list)  # (run id, the event that resumed it)
    unmatched: list[Event] = field(default_factory=list)  # events no function's trigger matched
    cancelled: int = 0  # runs cancelled by these events (their system events may start runs)


@dataclass(slots=True)
class Handoff:
    """Lease due work inside the transaction that created it, for the caller to run at once."""

    owner: str
    lease_ms: int
    limit: int


def new_run(
    fn: Function,
    events: list[Event],
    *,
    now: int,
    cron: str | None = None,
    correlation_id: str | None = None,
) -> tuple[Run, Job]:
    """A queued run and the first discovery call for it."""
    run_id = new_ulid()
    first = events[0]
    run = Run(
        run_id=run_id,
        function_id=fn.id,
        function_slug=fn.slug,
        function_version=fn.version,
        status=RunStatus.QUEUED.value,
        events=[e.payload() for e in events],
        event_ids=[e.internal_id for e in events],
        created_at=now,
        cron=cron,
        correlation_id=correlation_id,
    )
    # A future `ts` delays the run until that time.
    due = max(now, first.ts) if first.ts <= now + 366 * 86400_000 else now
    job = Job(
        id=f"{run_id}:call:0",
        kind=JobKind.CALL.value,
        run_id=run_id,
        step_id=DISCOVERY_STEP,
        due_at=due,
        created_at=now,
    )
    if due > now:
        run.reason = "scheduled: the triggering event's ts lies in the future"
    return run, job


def claim_run_dedupe(tx: Tx, fn: Function, event: Event, now: int) -> bool:
    """One run per function and event id within 24 h: False for a repeated event."""
    return ops.claim_unique_key(tx, f"run:{fn.id}:{event.id}", expires_at=now + RUN_DEDUPE_WINDOW_MS, now=now)


def create_run_in_tx(
    tx: Tx, fn: Function, events: list[Event], *, now: int, handoff: Handoff | None = None,
    result: IngestResult | None = None, flow_checked: bool = False, registry: Registry | None = None, **kwargs: Any,
) -> Run | None:
    """Create a run unless one already ran for this function and event id (24 h window)."""
    from lockgate.engine.flow import admission  # flow control creates runs through this function

    shaped = flow_of(fn).shapes_creation
    if shaped and not flow_checked:
        return admission.start_runs(tx, fn, events, now=now, registry=registry, handoff=handoff, result=result,
                                    **kwargs)
    if not flow_checked and not claim_run_dedupe(tx, fn, events[0], now):  # flow control claims it first
        return None
    run, job = new_run(fn, events, now=now, **kwargs)
    timers = admission.prepare_run(tx, fn, run, job, now) if shaped else []
    hand_off = handoff is not None and result is not None and len(result.leased) < handoff.limit
    # Without flow control nothing can hold the first call back: it goes in leased and the run
    # in running, with no second write to either row.
    leased_now = hand_off and not shaped and job.due_at <= now
    if leased_now:
        job.lease_owner, job.lease_expires_at = handoff.owner, now + handoff.lease_ms
        run.status, run.started_at = RunStatus.RUNNING.value, now
    ops.insert_run(tx, run)
    ops.enqueue(tx, [job, *timers])
    progress.note("run.queued", run, status=RunStatus.QUEUED.value)
    if len(events) == 1:  # batched runs get no cancel listeners
        cancellation.register_listeners(tx, fn, run, now=now)
    if leased_now:
        result.leased.append((job, run))
    elif hand_off and lease_call(tx, job, owner=handoff.owner, now=now, lease_ms=handoff.lease_ms):
        ops.mark_runs_started(tx, [run.run_id], now)
        run.status, run.started_at, run.reason = RunStatus.RUNNING.value, now, None
        result.leased.append((job, run))
    return run


def _fresher_registry(tx: Tx, registry: Registry) -> Registry | None:
    """The stored functions when they differ from `registry`, else None. A process swaps in a sync's
    functions only after the sync committed (another replica: after its notification arrives), so
    an event can be matched against the older set while the new one is already stored and listed;
    one it matched nothing would start nothing for good. Checked for such events only: cheap ids
    and versions first, the configs only when they differ."""
    stored = ops.active_function_versions(tx)
    if stored == {fid: fn.version for fid, fn in registry.by_id.items()}:
        return None
    return Registry.build(ops.load_functions(tx))


def ingest_in_tx(
    tx: Tx, events: list[Event], registry: Registry, *, now: int, handoff: Handoff | None = None
) -> IngestResult:
    """Store events and start the runs they trigger. Runs inside the caller's transaction."""
    from lockgate.engine import interpreter  # the interpreter creates runs through this module
    from lockgate.engine.waits import match_event

    def cancel(listener: Wait, event: Event) -> None:
        reason = f"cancelled by event {event.name!r} (id {event.id})"
        interpreter.cancel_run(tx, interpreter.EngineContext(registry=registry), listener.run_id, now=now,
                               reason=reason)
        result.cancelled += 1

    ops.insert_events(tx, events)
    result = IngestResult()
    for event in events:
        resumed = match_event(tx, event, now=now, cancel=cancel)
        result.resumed += len(resumed)
        result.resumed_runs.extend((job.run_id, event) for job in resumed if job.run_id)
        payload = event.payload()
        functions = registry.match(payload)
        if not functions and not resumed and not event.name.startswith(RESERVED_PREFIX):
            fresher = _fresher_registry(tx, registry)
            if fresher is not None:
                registry = fresher
                functions = registry.match(payload)
        if not functions and not resumed and not event.name.startswith(RESERVED_PREFIX):
            # System events (a run finished...) usually start nothing: only users' events are explained.
            event.started_nothing = why_nothing_started(registry, event.name)
            ops.note_started_nothing(tx, event.internal_id, event.started_nothing)
            result.unmatched.append(event)
        for fn in functions:
            run = create_run_in_tx(tx, fn, [event], now=now, handoff=handoff, result=result, registry=registry)
            if run is not None:
                result.run_ids.append(run.run_id)
    return result
