"""The Inngest SDK protocol surface: events API, app sync, and the SDK's own fetches."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lockgate.engine.engine import Engine
from lockgate.engine.ingest import EventValidationError
from lockgate.interfaces.auth import AccessPolicy, RefusedEventLog, event_name_of
from lockgate.interfaces.errors import ApiError, error_response, json_response, read_json
from lockgate.store import operations as ops

def routes(engine: Engine, access: AccessPolicy) -> list[Route]:
    limits = engine.options.limits
    refusals = RefusedEventLog()

    async def log_refusal(request: Request, reason: str, status: int, key: str | None = None) -> None:
        source = request.client.host if request.client else "unknown"
        held_back = refusals.should_log(source, reason)
        if held_back is None:  # held back: not worth reading the body either
            return
        try:
            name = event_name_of(await read_json(request, limit=limits.max_request_bytes,
                                                 max_depth=limits.max_json_depth))
        except ApiError:
            name = None
        refusals.emit(source, reason, held_back, event_name=name, key=key, status=status)

    async def send_events(request: Request) -> Response:
        key = request.path_params["key"]
        try:
            access.check_event_key(key)
        except ApiError as exc:
            await log_refusal(request, "unknown event key", exc.status, key)
            raise
        body = await read_json(request, limit=limits.max_request_bytes, max_depth=limits.max_json_depth)
        try:
            ids = await engine.ingest(body, seed=request.headers.get("x-inngest-event-id-seed"))
        except EventValidationError as exc:
            return json_response({"ids": [], "status": 400, "error": str(exc)}, status=400)
        return json_response({"ids": ids, "status": 200})

    async def send_events_without_key(request: Request) -> Response:
        # 401 where keys are checked (start), 400 in dev where any key will do.
        status = 401 if access.event_keys else 400
        example = "one of the keys this server was started with (--event-key)" if access.event_keys else \
            "any key in dev, e.g. /e/dev"
        await log_refusal(request, "no event key in the URL", status)
        raise ApiError(status, f"the event key is missing from the URL: send events to POST /e/<event key> ({example});"
                       " SDKs take it from INNGEST_EVENT_KEY")

    async def register(request: Request) -> Response:
        access.check_api(request)
        expected = request.headers.get("x-inngest-expected-server-kind")
        if expected and expected != engine.options.server_kind:
            return error_response(400, f"Expected server kind {engine.options.server_kind}, got {expected}")
        body = await read_json(request, limit=limits.max_request_bytes, max_depth=limits.max_json_depth)
        outcome = await engine.register(body)
        return json_response(outcome.body, status=outcome.status)

    async def health(request: Request) -> Response:
        # Liveness stays 200; a realtime backend outage is reported beside it (doctor reads it).
        realtime = {"backend": engine.realtime.name, "problem": engine.realtime.problem}
        return json_response({"status": 200, "message": "OK", "realtime": realtime})

    async def run_batch(request: Request) -> Response:
        access.check_api(request)
        run = await _run_or_404(engine, request.path_params["run_id"])
        return json_response(run.events)

    async def run_actions(request: Request) -> Response:
        access.check_api(request)
        run = await _run_or_404(engine, request.path_params["run_id"])
        return json_response(await engine.store.read(ops.completed_memos, run.run_id))

    async def send_signal(request: Request) -> Response:
        # JS `sendSignal`: 200 with the resumed run, or 404 (the SDK's "no run id") when nobody waits.
        access.check_api(request)
        body = await read_json(request, limit=limits.max_request_bytes, max_depth=limits.max_json_depth)
        signal = body.get("signal") if isinstance(body, dict) else None
        if not isinstance(signal, str) or not signal:
            return error_response(400, "the body must be a JSON object with a non-empty 'signal' (and optional 'data')")
        run_id = await engine.send_signal(signal, body.get("data"))
        if run_id is None:
            return error_response(404, f"no run is waiting for signal {signal!r}; a signal is not kept for later")
        return json_response({"data": {"run_id": run_id}})

    async def delete_run(request: Request) -> Response:
        access.check_api(request)
        run = await engine.cancel_run(request.path_params["run_id"])
        if run is None:
            raise ApiError(404, "run not found")
        return Response(status_code=204)

    return [
        Route("/e/{key}", send_events, methods=["POST"]),
        Route("/e/", send_events_without_key, methods=["POST"]),
        Route("/e", send_events_without_key, methods=["POST"]),
        Route("/fn/register", register, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/v0/runs/{run_id}/batch", run_batch, methods=["GET"]),
        Route("/v0/runs/{run_id}/actions", run_actions, methods=["GET"]),
        Route("/v0/runs/{run_id}", delete_run, methods=["DELETE"]),
        Route("/v1/signals", send_signal, methods=["POST"]),
    ]


async def _run_or_404(engine: Engine, run_id: str):
    run = await engine.store.read(ops.get_run, run_id)
    if run is None:
        raise ApiError(404, f"run {run_id} not found")
    return run
