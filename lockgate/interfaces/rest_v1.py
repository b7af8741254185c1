"""REST v1: read events and runs, cancel runs."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lockgate.engine.cron import next_fire_times
from lockgate.engine.engine import Engine, FunctionNotFound
from lockgate.engine.sync import CONNECT_APP_SCHEME
from lockgate.engine.flow.explain import explained
from lockgate.engine.registry import why_nothing_started
from lockgate.interfaces.auth import AccessPolicy
from lockgate.interfaces.errors import ApiError, json_response, read_json
from lockgate.interfaces.views import event_view, function_view, run_view, step_view
from lockgate.models import RunStatus, now_ms
from lockgate.protocol.signing import hashed_signing_key
from lockgate.protocol.timeparse import iso_ms, parse_datetime_ms
from lockgate.store import flow_operations as flow_ops
from lockgate.store import connect_operations as cops
from lockgate.store import operations as ops

MAX_PAGE = 100
INT64 = 2**63


def _envelope(data) -> Response:
    return json_response({"data": data, "metadata": {"fetched_at": now_ms()}})


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"query parameter '{name}' must be an integer, got {raw[:40]!r}") from None
    if not -INT64 <= value < INT64:
        raise ApiError(400, f"query parameter '{name}' is out of range (64-bit integers only)")
    return value


def _check_params(request: Request, allowed: tuple[str, ...]) -> None:
    """Refuse query parameters this route does not know: a typo must not silently widen a filter."""
    unknown = sorted(set(request.query_params) - set(allowed))
    if unknown:
        known = ", ".join(allowed) if allowed else "none"
        raise ApiError(400, f"unknown query parameter(s) {', '.join(unknown)} on {request.url.path};"
                       f" this route accepts: {known}")


def _time_param(request: Request, name: str) -> int | None:
    """An ISO 8601 time or epoch milliseconds."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw.isdigit():
        return _int_param(request, name, None)
    ms = parse_datetime_ms(raw)
    if ms is None:
        raise ApiError(400, f"query parameter '{name}' must be an ISO 8601 time (2026-01-31T12:00:00Z)"
                       f" or epoch milliseconds, got {raw!r}")
    return ms


def _status_param(request: Request) -> str | None:
    raw = request.query_params.get("status")
    if not raw:
        return None
    for status in RunStatus:
        if raw.lower() == status.value.lower():
            return status.value
    raise ApiError(400, f"query parameter 'status' must be one of {', '.join(s.value for s in RunStatus)},"
                   f" got {raw!r}")


RUN_FILTERS = ("status", "function_id", "function_slug", "slug", "created_after", "created_before", "from", "to",
               "cursor", "limit")


def routes(engine: Engine, access: AccessPolicy) -> list[Route]:
    store = engine.store

    async def list_events(request: Request) -> Response:
        access.check_api(request)
        _check_params(request, ("name", "limit", "cursor", "received_after", "received_before"))
        limit = max(1, min(_int_param(request, "limit", 20) or 20, MAX_PAGE))
        rows = await store.read(
            lambda tx: ops.list_events(
                tx,
                name=request.query_params.get("name"),
                limit=limit,
                before_seq=_int_param(request, "cursor", None),
                received_after=_int_param(request, "received_after", None),
                received_before=_int_param(request, "received_before", None),
            )
        )
        body = {
            "data": [event_view(e) for _, e in rows],
            "metadata": {"fetched_at": now_ms(), "cursor": str(rows[-1][0]) if len(rows) == limit else None},
        }
        return json_response(body)

    async def get_event(request: Request) -> Response:
        access.check_api(request)
        _check_params(request, ())
        event = await store.read(ops.get_event, request.path_params["event_id"])
        if event is None:
            raise ApiError(404, "event not found")
        skipped = await store.read(flow_ops.skips_of_event, event.internal_id)
        # Functions this event matched but started no run for, and why (rate limit, singleton...).
        view = {**event_view(event), "skipped": skipped, "started_nothing": None}
        registry = engine.registry
        if not skipped and not event.name.startswith("inngest/") and not registry.match(event.payload()):
            if not await store.read(ops.runs_of_event, event.internal_id):
                view["started_nothing"] = why_nothing_started(registry, event.name)
        return _envelope(view)

    async def event_runs(request: Request) -> Response:
        access.check_api(request)
        _check_params(request, ())
        runs = await store.read(explained(ops.runs_of_event), request.path_params["event_id"])
        return _envelope([run_view(r) for r in runs])

    async def get_run(request: Request) -> Response:
        access.check_api(request)
        _check_params(request, ())
        run = await store.read(explained(ops.get_run), request.path_params["run_id"])
        if run is None:
            raise ApiError(404, "run not found")
        return _envelope(run_view(run))

    async def run_steps(request: Request) -> Response:
        access.check_api(request)
        _check_params(request, ())
        steps = await store.read(ops.get_steps, request.path_params["run_id"])
        return _envelope([step_view(s) for s in steps])

    async def run_jobs(request: Request) -> Response:
        access.check_api(request)
        _check_params(request, ())
        jobs = await store.read(ops.jobs_of_run, request.path_params["run_id"])
        return _envelope(
            [{"id": j.id, "kind": j.kind, "step_id": j.step_id, "attempt": j.attempt, "due_at": j.due_at,
              "due": iso_ms(j.due_at)} for j in jobs]
        )

    async def cancel_run(request: Request) -> Response:
        access.check_api(request)
        _check_params(request, ())
        run = await engine.cancel_run(request.path_params["run_id"])
        if run is None:
            raise ApiError(404, "run not found")
        run = await store.read(explained(ops.get_run), run.run_id)
        return _envelope(run_view(run))

    async def list_runs(request: Request) -> Response:
        access.check_api(request)
        _check_params(request, RUN_FILTERS)
        limit = max(1, min(_int_param(request, "limit", 50) or 50, MAX_PAGE))
        query = request.query_params
        filters = dict(
            status=_status_param(request),
            function_id=query.get("function_id"),
            function_slug=query.get("function_slug") or query.get("slug"),
            created_after=_time_param(request, "created_after") or _time_param(request, "from"),
            created_before=_time_param(request, "created_before") or _time_param(request, "to"),
            before_run_id=query.get("cursor") or None,
        )
        runs = await store.read(lambda tx: explained(ops.list_runs)(tx, limit=limit, **filters))
        body = {
            "data": [run_view(r) for r in runs],
            "metadata": {"fetched_at": now_ms(), "cursor": runs[-1].run_id if len(runs) == limit else None},
        }
        return json_response(body)

    async def list_functions(request: Request) -> Response:
        access.check_api(request)
        _check_params(request, ())
        now = now_ms()
        return _envelope([function_view(fn, next_fire_times(fn, now)) for fn in await engine.list_functions()])

    async def get_function(request: Request) -> Response:
        access.check_api(request)
        _check_params(request, ())
        fn = await engine.find_function(request.path_params["function_id"])
        if fn is None:
            raise ApiError(404, f"no function {request.path_params['function_id']!r}: GET /v1/functions lists"
                           " the synced ones (by id or slug)")
        view = function_view(fn, next_fire_times(fn, now_ms(), count=10))
        view["config"] = {k: v for k, v in fn.config.items() if k != "steps"}
        return _envelope(view)

    async def invoke_function(request: Request) -> Response:
        access.check_api(request)
        _check_params(request, ())
        limits = engine.options.limits
        body = await read_json(request, limit=limits.max_request_bytes, max_depth=limits.max_json_depth,
                               empty_ok=True)
        if body is None:
            body = {}
        if not isinstance(body, dict) or not set(body) <= {"data", "user"}:
            raise ApiError(400, 'the body must be a JSON object {"data": {...}, "user": {...}} (both optional)')
        for name in ("data", "user"):
            if body.get(name) is not None and not isinstance(body[name], dict):
                raise ApiError(400, f"'{name}' must be a JSON object, got {type(body[name]).__name__}")
        try:
            outcome = await engine.invoke(request.path_params["function_id"], body.get("data"),
                                          user=body.get("user"))
        except FunctionNotFound as exc:
            raise ApiError(404, str(exc)) from None
        return json_response({"data": {"event_id": outcome.event_id, "run_id": outcome.run_id,
                                       "skipped": outcome.skipped},
                              "metadata": {"fetched_at": now_ms()}}, status=201 if outcome.run_id else 200)

    async def list_apps(request: Request) -> Response:
        access.check_api(request)
        _check_params(request, ())
        apps = await store.read(ops.list_apps)
        functions = await store.read(ops.load_functions)
        # Connect workers (of any replica) heard from within three heartbeats
        fresh = now_ms() - int(1000 * (engine.connect.options.silence_limit_s if engine.connect else 30))
        workers = await store.read(cops.list_workers, fresh)
        return _envelope(
            [
                {
                    "name": a.name,
                    "url": a.url,
                    "sdk": a.sdk,
                    "framework": a.framework,
                    "error": a.error,
                    "synced_at": a.synced_at,
                    "connect": cops.worker_summary([w for w in workers if w.app_name == a.name])
                    if a.url.startswith(CONNECT_APP_SCHEME) else None,
                    "functions": [
                        {"id": f.id, "slug": f.slug, "name": f.name, "triggers": f.triggers}
                        for f in functions
                        if f.app_name == a.name
                    ],
                }
                for a in apps
            ]
        )

    async def server_info(request: Request) -> Response:
        """What `lockgate doctor` asks a running server: its mode, its store, its keys (hashed)."""
        access.check_api(request)
        _check_params(request, ())
        options = engine.options
        return _envelope({
            "kind": options.server_kind,
            "store": store.description,
            # A fingerprint, not the hash itself: the full hash works as a bearer token.
            "signing_key_fingerprint": hashed_signing_key(options.signing_key)[:12] if options.signing_key else None,
            "event_keys_required": bool(access.event_keys),
            "apps": [a.url for a in await store.read(ops.list_apps)],
        })

    async def stats(request: Request) -> Response:
        access.check_api(request)
        _check_params(request, ())
        counts = await store.read(ops.count_runs_by_status)
        depth = await store.read(ops.queue_depth)
        pending_waits = await store.read(ops.count_waits)
        body = {
            "runs": counts,
            "queue_depth": depth,
            "waits": pending_waits,
            "calls_in_flight": engine.dispatcher.inflight,
            "replica": {"owner": engine.dispatcher.owner, "taken_over_jobs": engine.membership.taken_over},
            "connect": engine.connect.stats() if engine.connect else None,
            "calls": {"total": getattr(engine.executor, "calls", 0),
                      "use_api": getattr(engine.executor, "calls_use_api", 0),
                      # failed calls to apps by reason (timeout, connection_refused, stale_connection, ...)
                      "failed": dict(getattr(engine.executor, "failures", {}))},
            "retention": engine.options.retention.describe(),
            "store": {"kind": store.description, "commits": getattr(store, "commits", None),
                      "writes": getattr(store, "writes", None)},
        }
        return _envelope(body)

    async def retention(request: Request) -> Response:
        access.check_api(request)
        return _envelope(engine.options.retention.describe())

    return [
        Route("/v1/stats", stats, methods=["GET"]),
        Route("/v1/server", server_info, methods=["GET"]),
        Route("/v1/retention", retention, methods=["GET"]),
        Route("/v1/events", list_events, methods=["GET"]),
        Route("/v1/events/{event_id}", get_event, methods=["GET"]),
        Route("/v1/events/{event_id}/runs", event_runs, methods=["GET"]),
        Route("/v1/runs", list_runs, methods=["GET"]),
        Route("/v1/runs/{run_id}", get_run, methods=["GET"]),
        Route("/v1/runs/{run_id}", cancel_run, methods=["DELETE"]),
        Route("/v1/runs/{run_id}/cancel", cancel_run, methods=["POST"]),
        Route("/v1/runs/{run_id}/steps", run_steps, methods=["GET"]),
        Route("/v1/runs/{run_id}/jobs", run_jobs, methods=["GET"]),
        Route("/v1/apps", list_apps, methods=["GET"]),
        Route("/v1/functions", list_functions, methods=["GET"]),
        Route("/v1/functions/{function_id}", get_function, methods=["GET"]),
        Route("/v1/functions/{function_id}/invoke", invoke_function, methods=["POST"]),
    ]
