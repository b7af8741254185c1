"""REST v1: read events and runs, cancel runs."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lockgate.engine.engine import Engine
from lockgate.engine.sync import CONNECT_APP_SCHEME
from lockgate.engine.flow.explain import explained
from lockgate.interfaces.auth import AccessPolicy
from lockgate.interfaces.errors import ApiError, json_response
from lockgate.interfaces.views import event_view, run_view, step_view
from lockgate.models import now_ms
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


def routes(engine: Engine, access: AccessPolicy) -> list[Route]:
    store = engine.store

    async def list_events(request: Request) -> Response:
        access.check_api(request)
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
        event = await store.read(ops.get_event, request.path_params["event_id"])
        if event is None:
            raise ApiError(404, "event not found")
        skipped = await store.read(flow_ops.skips_of_event, event.internal_id)
        # Functions this event matched but started no run for, and why (rate limit, singleton...).
        return _envelope({**event_view(event), "skipped": skipped})

    async def event_runs(request: Request) -> Response:
        access.check_api(request)
        runs = await store.read(explained(ops.runs_of_event), request.path_params["event_id"])
        return _envelope([run_view(r) for r in runs])

    async def get_run(request: Request) -> Response:
        access.check_api(request)
        run = await store.read(explained(ops.get_run), request.path_params["run_id"])
        if run is None:
            raise ApiError(404, "run not found")
        return _envelope(run_view(run))

    async def run_steps(request: Request) -> Response:
        access.check_api(request)
        steps = await store.read(ops.get_steps, request.path_params["run_id"])
        return _envelope([step_view(s) for s in steps])

    async def run_jobs(request: Request) -> Response:
        access.check_api(request)
        jobs = await store.read(ops.jobs_of_run, request.path_params["run_id"])
        return _envelope(
            [{"id": j.id, "kind": j.kind, "step_id": j.step_id, "attempt": j.attempt, "due_at": j.due_at} for j in jobs]
        )

    async def cancel_run(request: Request) -> Response:
        access.check_api(request)
        run = await engine.cancel_run(request.path_params["run_id"])
        if run is None:
            raise ApiError(404, "run not found")
        run = await store.read(explained(ops.get_run), run.run_id)
        return _envelope(run_view(run))

    async def list_runs(request: Request) -> Response:
        access.check_api(request)
        limit = max(1, min(_int_param(request, "limit", 50) or 50, MAX_PAGE))
        runs = await store.read(
            lambda tx: explained(ops.list_runs)(
                tx, status=request.query_params.get("status"), function_id=request.query_params.get("function_id"),
                limit=limit,
            )
        )
        return _envelope([run_view(r) for r in runs])

    async def list_apps(request: Request) -> Response:
        access.check_api(request)
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

    async def stats(request: Request) -> Response:
        access.check_api(request)
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
    ]
