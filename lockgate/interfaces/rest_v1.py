"""REST v1: read events and runs, cancel runs."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lockgate.engine import endpoints, health_snapshot, run_search
from lockgate.engine.cron import next_fire_times
from lockgate.engine.engine import Engine, FunctionNotFound
from lockgate.engine.sync import CONNECT_APP_SCHEME
from lockgate.engine.flow.explain import annotate, explained
from lockgate.interfaces.auth import AccessPolicy
from lockgate.interfaces.errors import ApiError, json_response, read_json
from lockgate.interfaces.run_filters import RUN_FILTERS, parse_run_filter
from lockgate.interfaces.views import event_view, function_view, run_view, step_view
from lockgate.models import now_ms
from lockgate.protocol.signing import hashed_signing_key
from lockgate.protocol.timeparse import iso_ms
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
        return _envelope({**event_view(event), "skipped": skipped})

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

    async def fast_forward(request: Request) -> Response:
        # Tests (lockgate.testing) skip a run's sleeps and wait timeouts; never in production.
        access.check_api(request)
        if engine.options.server_kind != "dev":
            raise ApiError(403, "fast-forward is a `lockgate dev` feature for tests; `lockgate start` keeps real time")
        advanced = await engine.fast_forward(request.path_params["run_id"])
        if advanced is None:
            raise ApiError(404, "run not found")
        return _envelope({"advanced": [{"kind": j.kind, "step_id": j.step_id, "was_due_at": j.due_at}
                                       for j in advanced]})

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
        wanted = parse_run_filter(request.query_params)
        page = await store.read(lambda tx: find_runs(tx, wanted, request.query_params.get("cursor"), limit))
        return json_response({"data": [run_view(r) for r in page.runs],
                              "metadata": {"fetched_at": now_ms(), "cursor": page.next_cursor,
                                           "scanned": page.scanned, "partial": page.partial}})

    async def count_runs(request: Request) -> Response:
        access.check_api(request)
        _check_params(request, RUN_FILTERS)
        wanted = parse_run_filter(request.query_params)
        counts = await store.read(lambda tx: run_search.count_runs(tx, wanted.query(tx)))
        return _envelope({"total": counts.total, "by_status": counts.by_status, "complete": counts.complete})

    async def rerun_run(request: Request) -> Response:
        access.check_api(request)
        return _envelope(run_view(await engine.rerun(request.path_params["run_id"])))

    async def bulk(request: Request) -> Response:
        """POST /v1/runs/cancel or /v1/runs/rerun with a JSON filter (the /v1/runs query parameters)."""
        access.check_api(request)
        body = await read_json(request, limit=64 * 1024)
        if not isinstance(body, dict) or not (set(body) & {"status", "function", "function_id", "app", "from",
                                                           "to", "if", "all"}):
            raise ApiError(400, "send a JSON object with a filter (status, function, app, from, to, if), or"
                                " {\"all\": true} to act on every run")
        wanted = parse_run_filter({k: v for k, v in body.items() if k != "all"})
        cancelling = request.url.path.endswith("/cancel")
        ids = await store.read(lambda tx: run_search.select_run_ids(tx, wanted.query(tx), unfinished_only=cancelling))
        if cancelling:
            done = await engine.cancel_runs(ids, reason="cancelled in bulk through the API")
            return _envelope({"matched": len(ids), "cancelled": done})
        started = await engine.rerun_runs(ids)
        return _envelope({"matched": len(ids), "started": started})

    async def replay_event(request: Request) -> Response:
        access.check_api(request)
        return _envelope({"id": await engine.replay_event(request.path_params["event_id"])})

    async def add_app(request: Request) -> Response:
        access.check_api(request)
        body = await read_json(request, limit=64 * 1024)
        url = body.get("url") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ApiError(400, "send {\"url\": \"http://host:port/api/inngest\"}: the app's serve URL")
        error = await engine.add_app(url)
        if error:
            raise ApiError(502, error)
        return _envelope({"url": url, "synced": True})

    async def resync_app(request: Request) -> Response:
        access.check_api(request)
        app = await store.read(ops.get_app, request.path_params["name"])
        if app is None:
            raise ApiError(404, f"app {request.path_params['name']} not found")
        if endpoints.is_endpoint_app(app):
            raise ApiError(400, endpoints.NOT_SYNCED)
        error = await engine.add_app(app.url)
        if error:
            raise ApiError(502, error)
        return _envelope({"name": app.name, "synced": True})

    async def remove_app(request: Request) -> Response:
        access.check_api(request)
        if not await engine.remove_app(request.path_params["name"]):
            raise ApiError(404, f"app {request.path_params['name']} not found")
        return _envelope({"removed": request.path_params["name"]})

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
        body = await health_snapshot.snapshot(engine)
        body.update({
            "replica": {"owner": engine.dispatcher.owner, "taken_over_jobs": engine.membership.taken_over},
            "connect": engine.connect.stats() if engine.connect else None,
            "retention": engine.options.retention.describe(),
        })
        # failed calls to apps by reason (timeout, connection_refused, stale_connection, ...)
        body["calls"]["failed"] = dict(getattr(engine.executor, "failures", {}))
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
        Route("/v1/runs/count", count_runs, methods=["GET"]),
        Route("/v1/runs/cancel", bulk, methods=["POST"]),
        Route("/v1/runs/rerun", bulk, methods=["POST"]),
        Route("/v1/runs/{run_id}/rerun", rerun_run, methods=["POST"]),
        Route("/v1/events/{event_id}/replay", replay_event, methods=["POST"]),
        Route("/v1/apps", add_app, methods=["POST"]),
        Route("/v1/apps/{name:path}", remove_app, methods=["DELETE"]),
        Route("/v1/apps/{name:path}/resync", resync_app, methods=["POST"]),
        Route("/v1/runs/{run_id}", get_run, methods=["GET"]),
        Route("/v1/runs/{run_id}", cancel_run, methods=["DELETE"]),
        Route("/v1/runs/{run_id}/cancel", cancel_run, methods=["POST"]),
        Route("/v1/runs/{run_id}/steps", run_steps, methods=["GET"]),
        Route("/v1/runs/{run_id}/jobs", run_jobs, methods=["GET"]),
        Route("/v1/runs/{run_id}/fast-forward", fast_forward, methods=["POST"]),
        Route("/v1/apps", list_apps, methods=["GET"]),
        Route("/v1/functions", list_functions, methods=["GET"]),
        Route("/v1/functions/{function_id}", get_function, methods=["GET"]),
        Route("/v1/functions/{function_id}/invoke", invoke_function, methods=["POST"]),
    ]


def find_runs(tx, wanted, cursor: str | None, limit: int) -> run_search.RunPage:
    """One page of runs with their explanations (REST and the dashboard share it)."""
    try:
        page = run_search.search_runs(tx, wanted.query(tx), cursor=cursor, limit=limit)
    except run_search.RunQueryError as exc:
        raise ApiError(400, str(exc)) from None
    annotate(tx, page.runs)
    return page
