"""Durable endpoints: runs that start inside an app's own HTTP handler (JS v4 sync-mode checkpoints).

A JS v4 app wraps an HTTP handler with `inngest.endpoint(...)`. The handler runs its steps in
the user's request and reports them to the server:

- `POST /v1/checkpoint` creates the run (with the steps run so far) the first time there is
  something to save. The run's trigger is an `inngest/http.request` event describing the
  request, and its function is created on the fly, one per endpoint (no sync, no triggers):
  the app is named after the request's origin, as the Inngest server does.
- `POST /v1/checkpoint/{run}/steps` records further steps, then either completes the run
  (`RunComplete`, whose data is the HTTP response) or hands it over to the server: a step
  that failed and must be retried, a sleep, a wait, parallel steps... From then on the run is
  an ordinary queued run, and each call re-sends the original request to the endpoint with
  `X-Run-Id`, the SDK fetching the recorded steps itself (`use_api`).

Such a hand-over is applied exactly like the answer to a run's first call: a call job is put
in the queue, leased and settled by the interpreter in the same transaction. So retries,
sleeps, waits and parallel steps behave as for any function, through the same code.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from lockgate.engine import interpreter, progress
from lockgate.engine.checkpoint import RESULT_OPS, CheckpointError, record_step_results
from lockgate.engine.ingest import EventValidationError, ingest_in_tx, parse_events
from lockgate.models import DISCOVERY_STEP, App, Function, Job, JobKind, Run, RunStatus
from lockgate.protocol.backoff import DEFAULT_RETRIES, clamp_retries
from lockgate.protocol.event_ids import new_ulid
from lockgate.protocol.sdk_response import FunctionErrored, Op, OpsReturned, parse_op
from lockgate.store import operations as ops
from lockgate.store.base import Tx

HTTP_REQUEST_EVENT = "inngest/http.request"
KIND = "durable_endpoint"  # config key marking a function created by an endpoint
# The JS SDK reports a function-level error (not a step's) as a StepError with this id: sha1("complete").
FUNCTION_ERROR_STEP_ID = hashlib.sha1(b"complete").hexdigest()
FRAMEWORK = "durable endpoint"  # the `framework` of an endpoint's app
NOT_SYNCED = ("this app's functions are durable endpoints, created by their own requests: there is nothing to sync"
              " (its URL is only the origin of those requests)")
RUNNING_REASON = "running inside the app's own HTTP request (durable endpoint)"
_ULID_CHARS = frozenset("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


@dataclass(slots=True)
class NewRun:
    """A parsed `POST /v1/checkpoint` body."""

    run_id: str
    event: dict[str, Any]  # name, data (the request), optional id/ts
    steps: list[Op]
    request_version: int
    retries: int


@dataclass(slots=True)
class Created:
    run: Run
    function: Function
    settled: interpreter.Settled | None


def is_endpoint(fn: Function) -> bool:
    return KIND in fn.config


def is_endpoint_app(app: App) -> bool:
    return app.framework == FRAMEWORK


def _steps(raw: Any) -> list[Op]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise CheckpointError(400, "'steps' must be a list of step ops")
    try:
        return [parse_op(item) for item in raw]
    except ValueError as exc:
        raise CheckpointError(400, f"bad step op: {exc}") from None


def parse_new_run(body: Any) -> NewRun:
    if not isinstance(body, dict):
        raise CheckpointError(400, "the checkpoint body must be a JSON object")
    run_id = body.get("run_id")
    if not isinstance(run_id, str) or len(run_id) != 26 or not set(run_id.upper()) <= _ULID_CHARS:
        raise CheckpointError(400, "'run_id' must be a ULID (26 characters), made by the SDK for this request")
    event = body.get("event")
    data = event.get("data") if isinstance(event, dict) else None
    if not isinstance(data, dict):
        raise CheckpointError(400, "'event' must be an object whose 'data' describes the HTTP request")
    for key in ("domain", "method", "path"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise CheckpointError(400, f"'event.data.{key}' must be a non-empty string")
    if not data["method"].isalpha() or len(data["method"]) > 16:
        raise CheckpointError(400, "'event.data.method' must be an HTTP method, e.g. GET or POST")
    origin = urlsplit(data["domain"])
    if origin.scheme not in ("http", "https") or not origin.netloc:
        raise CheckpointError(400, "'event.data.domain' must be the request's origin, e.g. https://api.example.com")
    if not data["path"].startswith("/"):
        raise CheckpointError(400, "'event.data.path' must start with '/'")
    version = body.get("request_version")
    retries = body.get("retries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)):
        raise CheckpointError(400, "'retries' must be an integer")
    return NewRun(
        run_id=run_id.upper(),
        event=event,
        steps=_steps(body.get("steps")),
        request_version=version if isinstance(version, int) and not isinstance(version, bool) else -1,
        retries=clamp_retries(DEFAULT_RETRIES if retries is None or retries < 0 else retries),
    )


def endpoint_function(request: dict[str, Any], retries: int) -> tuple[App, Function]:
    """The app (named after the request's origin) and function (one per method and path) of an endpoint."""
    domain = request["domain"].rstrip("/")
    method = request["method"].upper()
    given = request.get("fn")
    name = given if isinstance(given, str) and given else f"{method} {request['path']}"
    slug = f"{method} {domain}{request['path']}"
    config = {
        "id": name,
        "name": name,
        "triggers": [],
        "steps": {"step": {"id": "step", "name": name, "runtime": {"type": "http", "url": domain + request["path"]},
                           "retries": {"attempts": retries}}},
        KIND: {"method": method},
    }
    fn_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"lockgate durable endpoint {slug}"))
    app = App(name=domain, url=domain, sdk="js", framework=FRAMEWORK)
    return app, Function(id=fn_id, slug=slug, app_name=domain, name=name, url=domain + request["path"], config=config)


def _store_function(tx: Tx, app: App, fn: Function, now: int) -> bool:
    """Create or update the endpoint's function; True when the set of functions changed."""
    if ops.get_app(tx, app.name) is None:
        app.created_at = app.synced_at = now
        ops.upsert_app(tx, app)
    existing = ops.get_function(tx, fn.id)
    if existing is not None and existing.config == fn.config and not existing.archived:
        fn.version = existing.version
        return False
    fn.version = existing.version + 1 if existing is not None else 1
    ops.upsert_function(tx, fn, now)
    ops.notify_replicas(tx, ops.FUNCTIONS_CHANNEL)
    return True


def create_run(tx: Tx, ctx: interpreter.EngineContext, new: NewRun, *, now: int) -> tuple[Created, bool]:
    """`POST /v1/checkpoint`: create the endpoint's run (once) and apply the steps it carries.

    Returns what was created and whether the functions changed. A repeated request (the SDK
    retries when an answer is lost) finds its run and applies its steps again, which records
    nothing twice."""
    app, fn = endpoint_function(new.event["data"], new.retries)
    changed = _store_function(tx, app, fn, now)
    run = ops.get_run(tx, new.run_id, for_update=True)
    if run is not None and run.function_id != fn.id:
        raise CheckpointError(409, f"run {new.run_id} already exists for another function ({run.function_slug})")
    if run is None:
        raw = new.event
        try:  # the request as an event, checked like any other (size, id)
            (event,) = parse_events({"name": HTTP_REQUEST_EVENT, "data": raw["data"], "id": raw.get("id")},
                                    seed=None, now=now, allow_internal=True)
        except EventValidationError as exc:
            raise CheckpointError(400, f"'event': {exc}") from None
        # As any event: stored, and it may start functions triggered by it or resume waits.
        ingest_in_tx(tx, [event], ctx.registry, now=now)
        run = Run(run_id=new.run_id, function_id=fn.id, function_slug=fn.slug, function_version=fn.version,
                  status=RunStatus.RUNNING.value, events=[event.payload()], event_ids=[event.internal_id],
                  created_at=now, started_at=now, reason=RUNNING_REASON, request_version=new.request_version)
        ops.insert_run(tx, run)
        progress.note("run.started", run)
    settled = apply_steps(tx, ctx, run, fn, new.steps, now=now)
    return Created(run=run, function=fn, settled=settled), changed


def save_steps(tx: Tx, ctx: interpreter.EngineContext, run_id: str, body: Any, *,
               now: int) -> interpreter.Settled | None:
    """`POST /v1/checkpoint/{run}/steps`: more steps of an endpoint's run, maybe its end or hand-over."""
    if not isinstance(body, dict):
        raise CheckpointError(400, "the checkpoint body must be a JSON object")
    steps = _steps(body.get("steps"))
    run = ops.get_run(tx, run_id, for_update=True)
    if run is None:
        raise CheckpointError(404, f"run {run_id} not found: create it first with POST /v1/checkpoint")
    fn_id = body.get("fn_id")
    if isinstance(fn_id, str) and fn_id and fn_id != run.function_id:
        raise CheckpointError(400, f"run {run_id} belongs to function {run.function_id}, not {fn_id}")
    fn = ctx.registry.by_id.get(run.function_id) or ops.get_function(tx, run.function_id)
    if fn is None or not is_endpoint(fn):
        raise CheckpointError(400, f"run {run_id} is not a durable endpoint's run; JS v4 functions checkpoint"
                                   " to /v1/checkpoint/{run}/async")
    return apply_steps(tx, ctx, run, fn, steps, now=now)


def apply_steps(tx: Tx, ctx: interpreter.EngineContext, run: Run, fn: Function, steps: list[Op], *,
                now: int) -> interpreter.Settled | None:
    """Record step results; settle any other op (end, retry, sleep...) as the answer to the run's first call."""
    if RunStatus(run.status).is_final:
        if run.status == RunStatus.CANCELLED.value:  # tells the SDK to stop running the endpoint's steps
            raise CheckpointError(409, f"run {run.run_id} was cancelled")
        return None  # a repeated report of what ended the run
    record_step_results(tx, run, steps, now=now, reason=RUNNING_REASON)
    rest = [op for op in steps if op.op not in RESULT_OPS and not op.op.startswith("Defer")]
    if not rest:
        return None
    # The endpoint hands its run over once; a repeated report finds the run queued already.
    if run.pending_steps or ops.jobs_of_run(tx, run.run_id):
        return None
    job = Job(id=f"{run.run_id}:call:0", kind=JobKind.CALL.value, run_id=run.run_id, step_id=DISCOVERY_STEP,
              due_at=now, created_at=now)
    ops.enqueue(tx, [job])
    ops.take_leases(tx, [job], owner=f"endpoint:{new_ulid()}", until=now + 60_000)
    failed = next((op for op in rest if op.op == "StepError" and op.id == FUNCTION_ERROR_STEP_ID), None)
    # The handler itself threw (not a step): the whole call failed and is retried as one.
    result = FunctionErrored(error=failed.error if isinstance(failed.error, dict) else {"message": str(failed.error)},
                             retriable=True) if failed else OpsReturned(rest)
    quiet = interpreter.EngineContext(registry=ctx.registry, retry_interval_s=ctx.retry_interval_s, handoff=None)
    return interpreter.settle_call(tx, quiet, job, fn, result, started_at=run.started_at or now, now=now)


def continuation(run: Run, fn: Function) -> tuple[str, str, bytes | None, str]:
    """How to call the endpoint again for its run: (method, url, body, content type), the original request."""
    request = (run.events[0].get("data") if run.events else None) or {}
    method = str(request.get("method") or fn.config[KIND].get("method") or "POST").upper()
    url = str(request.get("domain") or "").rstrip("/") + str(request.get("path") or "")
    if not url:
        url = fn.url
    query = request.get("query_params")
    if isinstance(query, str) and query:
        url += ("&" if "?" in url else "?") + query
    body = request.get("body")
    raw = body.encode() if isinstance(body, str) and body and method not in ("GET", "HEAD") else None
    content_type = request.get("content_type") if isinstance(request.get("content_type"), str) else ""
    return method, url, raw, content_type or "application/json"
