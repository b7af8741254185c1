"""The OpenAPI 3.0 description of the REST v1 API and the events API, served at /openapi.json.

Written by hand from the routes (it is short, and it says what clients may rely on); the fuzz
suite generates requests from it, so a route added here is fuzzed from then on.
"""

from __future__ import annotations

from typing import Any

from lockgate.limits import Limits

_ERROR = {"description": "bad input: a JSON error that says what is wrong",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_AUTH = {"description": "production only: missing or wrong signing key", **{k: v for k, v in _ERROR.items()
                                                                           if k == "content"}}
_OK = {"description": "the data", "content": {"application/json": {"schema": {"type": "object"}}}}


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": kind}}


def _op(summary: str, *, params: list | None = None, body: dict | None = None, ok: str = "200",
        extra: tuple[str, ...] = ()) -> dict[str, Any]:
    responses: dict[str, Any] = {ok: _OK if ok != "204" else {"description": "done"}, "400": _ERROR, "401": _AUTH}
    for status in extra:
        responses[status] = _ERROR
    op: dict[str, Any] = {"summary": summary, "parameters": params or [], "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def document(limits: Limits) -> dict[str, Any]:
    event = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 255},
            "data": {"type": "object"},
            "user": {"type": "object"},
            "id": {"type": "string", "maxLength": limits.max_event_id_length},
            "ts": {"type": "integer", "description": "milliseconds since the epoch (1980-2100)"},
            "v": {"type": "string"},
        },
    }
    run_id, event_id, function_id = _path_param("run_id"), _path_param("event_id"), _path_param("function_id")
    run_filters = [_query(name) for name in ("status", "function", "function_id", "function_slug", "slug", "app",
                                             "from", "to", "created_after", "created_before", "if")]
    bulk_filter = {"type": "object", "properties": {
        **{name: {"type": "string"} for name in ("status", "function", "app", "from", "to", "if")},
        "all": {"type": "boolean"}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "lockgate REST and events API", "version": "1",
                 "description": "Production servers want `Authorization: Bearer <signing key>` on /v0 and /v1, "
                                "and one of their event keys in /e/{key}."},
        "paths": {
            "/e/{key}": {"post": _op(
                "Send one event or a list; answers after the commit",
                params=[_path_param("key"), {"name": "x-inngest-event-id-seed", "in": "header", "required": False,
                                             "schema": {"type": "string"}}],
                body={"oneOf": [event, {"type": "array", "items": event, "minItems": 1}]},
                extra=("413",))},
            "/health": {"get": _op("Liveness")},
            "/v1/events": {"get": _op("Recent events, newest first", params=[
                _query("name"), _query("limit", "integer"), _query("cursor", "integer"),
                _query("received_after", "integer"), _query("received_before", "integer")])},
            "/v1/events/{event_id}": {"get": _op("One event and the functions it skipped", params=[event_id],
                                                 extra=("404",))},
            "/v1/events/{event_id}/runs": {"get": _op("Runs an event started", params=[event_id])},
            "/v1/runs": {"get": _op(
                "Recent runs, newest first, filtered (status, function, app, time, an `if` expression over the"
                " triggering event); `metadata.cursor` pages on; unknown parameters are refused",
                params=[*run_filters, _query("cursor"), _query("limit", "integer")])},
            "/v1/runs/count": {"get": _op("Counts by status of the runs a filter selects", params=run_filters)},
            "/v1/runs/cancel": {"post": _op("Cancel every unfinished run a filter selects (at most 10,000)",
                                            body=bulk_filter)},
            "/v1/runs/rerun": {"post": _op("Rerun every run a filter selects (at most 10,000)", body=bulk_filter)},
            "/v1/runs/{run_id}/rerun": {"post": _op("A new run of the same function and events, from the start",
                                                    params=[run_id], extra=("404", "409"))},
            "/v1/events/{event_id}/replay": {"post": _op("Send a stored event again as a new event",
                                                         params=[event_id], extra=("404",))},
            # POST /v1/apps (add an app by URL) is left out on purpose: generated requests would make the
            # server call whatever URL they invent.
            "/v1/apps/{name}": {"delete": _op("Forget an app (its functions are archived)",
                                              params=[_path_param("name")], extra=("404",))},
            "/v1/apps/{name}/resync": {"post": _op("Sync a known app again now", params=[_path_param("name")],
                                                   extra=("404", "502"))},
            "/v1/functions": {"get": _op("Synced functions with their settings and next cron fire times")},
            "/v1/functions/{function_id}": {"get": _op("One function (by id or slug)", params=[function_id],
                                                       extra=("404",))},
            "/v1/functions/{function_id}/invoke": {"post": _op(
                "Run a function now (cron functions too) with this event data", params=[function_id], ok="201",
                body={"type": "object", "properties": {"data": {"type": "object"}, "user": {"type": "object"}},
                      "additionalProperties": False},
                extra=("404", "413"))},
            "/v1/server": {"get": _op("The server's mode, store and signing-key fingerprint")},
            "/v1/runs/{run_id}": {
                "get": _op("One run with its explanation", params=[run_id], extra=("404",)),
                "delete": _op("Cancel a run", params=[run_id], extra=("404",)),
            },
            "/v1/runs/{run_id}/cancel": {"post": _op("Cancel a run", params=[run_id], extra=("404",))},
            "/v1/runs/{run_id}/steps": {"get": _op("A run's steps", params=[run_id])},
            "/v1/runs/{run_id}/jobs": {"get": _op("A run's queued work", params=[run_id])},
            "/v1/runs/{run_id}/fast-forward": {"post": _op(
                "Dev only, for tests: the run's pending sleeps and wait timeouts fire now", params=[run_id],
                extra=("403", "404"))},
            "/v1/apps": {"get": _op("Synced apps and their functions")},
            "/v1/stats": {"get": _op("Counts: runs by status, queue depth, calls in flight")},
            "/v0/runs/{run_id}/batch": {"get": _op("A run's events (SDK large-state fetch)", params=[run_id],
                                                   extra=("404",))},
            "/v0/runs/{run_id}/actions": {"get": _op("A run's step results (SDK large-state fetch)",
                                                     params=[run_id], extra=("404",))},
            "/v0/gql": {"post": _op("The dev server's GraphQL subset", body={
                "type": "object", "required": ["query"],
                "properties": {"query": {"type": "string"}, "variables": {"type": "object"},
                               "operationName": {"type": "string"}}}, extra=("413",))},
            "/v1/checkpoint/{run_id}/async": {"post": _op(
                "Steps a JS SDK ran inside one call", params=[run_id],
                body={"type": "object", "properties": {"fn_id": {"type": "string"}, "qi_id": {"type": "string"},
                                                       "steps": {"type": "array", "items": {"type": "object"}}}},
                extra=("404", "409", "413"))},
            "/v1/checkpoint": {"post": _op(
                "A durable endpoint's run starts inside the app's HTTP request (JS v4 sync mode), with the steps"
                " it ran so far; answers the run's function id, an output token and a realtime token",
                body={"type": "object", "required": ["run_id", "event"], "properties": {
                    "run_id": {"type": "string", "description": "a ULID made by the SDK"},
                    "event": {"type": "object", "description": "data: domain, method, path, query_params, body..."},
                    "steps": {"type": "array", "items": {"type": "object"}},
                    "request_version": {"type": "integer"}, "retries": {"type": "integer"}}},
                extra=("409", "413"))},
            "/v1/checkpoint/{run_id}/steps": {"post": _op(
                "More steps of a durable endpoint's run; RunComplete ends it, other ops hand it to the queue",
                params=[run_id],
                body={"type": "object", "properties": {"fn_id": {"type": "string"}, "app_id": {"type": "string"},
                                                       "steps": {"type": "array", "items": {"type": "object"}}}},
                extra=("404", "409", "413"))},
            "/v1/checkpoint/{run_id}/output": {"get": _op(
                "The HTTP response a durable endpoint's run ended with (waits up to 5 minutes for the end);"
                " also at /v1/http/runs/{run_id}/output", params=[run_id, _query("token")], extra=("404",))},
            "/v1/realtime/publish/tee": {"post": _op(
                "A durable endpoint's response stream, forwarded as it arrives to the run's `$stream` subscribers",
                params=[_query("channel")])},
            "/v1/signals": {"post": _op(
                "Resume the run waiting for a signal (step.waitForSignal); 404 when none waits",
                body={"type": "object", "required": ["signal"],
                      "properties": {"signal": {"type": "string", "minLength": 1}, "data": {}}},
                extra=("404", "413"))},
        },
        "components": {"schemas": {"Error": {
            "type": "object", "required": ["error", "status"],
            "properties": {"error": {"type": "string"}, "status": {"type": "integer"},
                           "request_id": {"type": "string"}}}}},
    }
