"""The dev server's GraphQL subset at /v0/gql: what the Python SDK's test helpers query.

Statuses are upper-case there (COMPLETED), outputs are JSON strings, and a run's
trace lists one span per step whose output is fetched by id.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import orjson
from graphql import DocumentNode, build_schema, execute, validate
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lockgate.engine.engine import Engine
from lockgate.engine.flow.explain import explained
from lockgate.interfaces.auth import AccessPolicy
from lockgate.interfaces.errors import ApiError, json_response, read_json
from lockgate.interfaces.graphql_limits import QueryTooComplex, parse_bounded
from lockgate.interfaces.views import explain, run_view
from lockgate.store import operations as ops

SCHEMA = build_schema(
    """
    type Query {
      run(runID: String!): FunctionRun
      runTrigger(runID: String!): RunTrigger
      event(query: EventQuery!): Event
      runTraceSpanOutputByID(outputID: String!): SpanOutput
    }
    input EventQuery { eventId: ID! }
    type FunctionRun {
      id: ID!
      status: String!
      output: String
      explanation: String
      functionID: String!
      functionSlug: String!
      startedAt: String
      endedAt: String
      trace: Span
    }
    type Span {
      name: String!
      status: String!
      outputID: String
      attempts: Int!
      childrenSpans: [Span!]!
    }
    type RunTrigger { payloads: [String!]! IDs: [ID!]! }
    type Event { id: ID! name: String! payload: String functionRuns: [FunctionRun!]! }
    type SpanOutput { data: String error: StepError }
    type StepError { message: String! name: String stack: String }
    """
)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _run_node(run) -> dict[str, Any]:
    view = run_view(run)
    return {
        "id": run.run_id,
        "status": run.status.upper(),
        "output": _dumps(run.output) if run.has_output else (_dumps(run.error) if run.error else None),
        "explanation": explain(run),
        "functionID": run.function_id,
        "functionSlug": run.function_slug,
        "startedAt": view["run_started_at"],
        "endedAt": view["ended_at"],
        "_run": run,
    }


class _Resolvers:
    def __init__(self, engine: Engine) -> None:
        self.store = engine.store

    async def run(self, info, runID: str):  # noqa: N803 - GraphQL argument name
        run = await self.store.read(explained(ops.get_run), runID)
        if run is None:
            return None
        node = _run_node(run)
        steps = await self.store.read(ops.get_steps, runID)
        node["trace"] = {
            "name": run.function_slug,
            "status": run.status.upper(),
            "outputID": None,
            "attempts": 1,
            "childrenSpans": [
                {
                    "name": s.display_name or s.step_id,
                    "status": s.status.upper(),
                    "outputID": f"{runID}:{s.step_id}" if s.position is not None else None,
                    "attempts": s.attempts,
                    "childrenSpans": [],
                }
                for s in steps
            ],
        }
        return node

    async def runTrigger(self, info, runID: str):  # noqa: N802
        run = await self.store.read(ops.get_run, runID)
        if run is None:
            return None
        return {"payloads": [_dumps(e) for e in run.events], "IDs": run.event_ids}

    async def event(self, info, query: dict):
        event_id = query["eventId"]
        event = await self.store.read(ops.get_event, event_id)
        if event is None:
            return None
        runs = await self.store.read(explained(ops.runs_of_event), event_id)
        return {
            "id": event.internal_id,
            "name": event.name,
            "payload": _dumps(event.payload()),
            "functionRuns": [_run_node(r) for r in runs],
        }

    async def runTraceSpanOutputByID(self, info, outputID: str):  # noqa: N802, N803
        run_id, _, step_id = outputID.partition(":")
        memos = await self.store.read(ops.completed_memos, run_id)
        if step_id not in memos:
            return None
        memo = memos[step_id]
        if isinstance(memo, dict) and "error" in memo and isinstance(memo["error"], dict):
            return {"data": None, "error": memo["error"]}
        if isinstance(memo, dict) and "data" in memo:
            return {"data": _dumps(memo["data"]), "error": None}
        return {"data": _dumps(memo), "error": None}


GRAPHQL_TIMEOUT_S = 10.0  # resolvers only read the store; a query this slow is refused, not waited on


def routes(engine: Engine, access: AccessPolicy | None = None) -> list[Route]:
    resolvers = _Resolvers(engine)
    limits = engine.options.limits

    def prepare(query: str) -> tuple[DocumentNode, list[dict]]:
        """Bound, parse and validate: pure CPU work, run in a thread so the event loop keeps serving."""
        document = parse_bounded(query, limits)
        return document, [e.formatted for e in validate(SCHEMA, document)]

    async def gql(request: Request) -> Response:
        if access is not None:  # production guards /v0/* with the signing key, like the other APIs
            access.check_api(request)
        body = await read_json(request, limit=limits.max_graphql_bytes, max_depth=limits.max_json_depth)
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            raise ApiError(400, "expected a JSON object with a 'query' string")
        variables = body.get("variables")
        if variables is not None and not isinstance(variables, dict):
            raise ApiError(400, "'variables' must be a JSON object")
        operation = body.get("operationName")
        if operation is not None and not isinstance(operation, str):
            raise ApiError(400, "'operationName' must be a string")
        try:
            document, errors = await asyncio.to_thread(prepare, body["query"])
        except QueryTooComplex as exc:
            raise ApiError(400, str(exc)) from None
        if errors:
            return json_response({"data": None, "errors": errors})
        try:
            async with asyncio.timeout(GRAPHQL_TIMEOUT_S):
                result = execute(SCHEMA, document, root_value=resolvers, variable_values=variables or {},
                                 operation_name=operation)
                if inspect.isawaitable(result):
                    result = await result
        except TimeoutError:
            raise ApiError(503, f"the query took longer than {GRAPHQL_TIMEOUT_S:g}s; ask for less") from None
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [e.formatted for e in result.errors]
        return json_response(payload)

    return [Route("/v0/gql", gql, methods=["POST"])]
