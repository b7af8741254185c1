"""The run filter people type (REST query string, dashboard form): parsed once, checked at the edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlencode

from lockgate.engine.run_search import RunQuery, RunQueryError, compile_run_expression, parse_statuses, resolve_filter
from lockgate.expressions import Expression
from lockgate.interfaces.errors import ApiError
from lockgate.protocol.timeparse import parse_datetime_ms
from lockgate.store.base import Tx

FILTER_PARAMS = ("status", "function", "function_id", "function_slug", "slug", "app", "from", "to",
                 "created_after", "created_before", "if")
RUN_FILTERS = (*FILTER_PARAMS, "cursor", "limit")  # what GET /v1/runs accepts; anything else is a 400


@dataclass(slots=True)
class RunFilterInput:
    statuses: list[str] = field(default_factory=list)
    function: str | None = None  # slug or internal id
    app: str | None = None
    created_from: int | None = None
    created_to: int | None = None
    expression: Expression | None = None
    raw: dict[str, str] = field(default_factory=dict)  # as typed, to fill the form and build links

    def query(self, tx: Tx) -> RunQuery:
        run_filter = resolve_filter(tx, statuses=self.statuses, function=self.function, app=self.app,
                                    created_from=self.created_from, created_to=self.created_to)
        return RunQuery(run_filter, self.expression)

    def query_string(self, **extra: Any) -> str:
        return urlencode({**{k: v for k, v in self.raw.items() if v}, **{k: v for k, v in extra.items() if v}})

    @property
    def empty(self) -> bool:
        return not any(self.raw.values())


def _time(name: str, value: str | None) -> int | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    at = parse_datetime_ms(value)
    if at is None:
        raise ApiError(400, f"'{name}' must be an ISO 8601 time (2026-01-31T12:00:00Z) or epoch milliseconds,"
                            f" got {value!r}")
    return at


def parse_run_filter(params: Mapping[str, Any]) -> RunFilterInput:
    """From a Starlette QueryParams/FormData (or a plain dict); raises ApiError(400) on bad input."""
    def get(name: str) -> str | None:
        value = params.get(name)
        return value.strip() if isinstance(value, str) and value.strip() else None

    getlist = getattr(params, "getlist", None)
    raw_statuses = getlist("status") if getlist else ([params["status"]] if params.get("status") else [])
    if isinstance(params.get("status"), list):
        raw_statuses = params["status"]
    try:
        statuses = parse_statuses([s for s in raw_statuses if isinstance(s, str)])
        expression = compile_run_expression(get("if"))
    except RunQueryError as exc:
        raise ApiError(400, str(exc)) from None
    # `function` takes a slug or an id; the other names are the REST API's aliases.
    function = get("function") or get("function_id") or get("function_slug") or get("slug")
    start_name = "from" if get("from") else "created_after"
    end_name = "to" if get("to") else "created_before"
    created_from, created_to = _time(start_name, get(start_name)), _time(end_name, get(end_name))
    raw = {"status": ",".join(statuses), "function": function or "", "app": get("app") or "",
           "from": get(start_name) or "", "to": get(end_name) or "", "if": get("if") or ""}
    return RunFilterInput(statuses=statuses, function=raw["function"] or None, app=raw["app"] or None,
                          created_from=created_from, created_to=created_to, expression=expression, raw=raw)
