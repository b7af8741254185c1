"""Find runs: SQL filters (status, function, app, time) plus an expression over the triggering event.

The SQL part walks an index newest first with a (created_at, run_id) keyset cursor. An
expression such as `event.data.user_id == "u1"` cannot be indexed, so it is checked here, on
the rows the SQL part yields, and a page stops after scanning `SCAN_LIMIT` rows: the cursor then
continues where the scan stopped, and the page says it is partial. REST and the dashboard share
these functions, so every list, count and bulk action means the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import orjson

from lockgate.expressions import Expression, ExpressionError, compile_expression, equality_keys
from lockgate.models import FINAL_STATUSES, Run, RunFilter, RunStatus
from lockgate.store import health_operations as hops
from lockgate.store import operations as ops
from lockgate.store.base import Tx

SCAN_LIMIT = 5000  # rows one page may scan for an expression filter
COUNT_SCAN_LIMIT = 10000  # rows a count may scan for an expression, a time range or event text
BULK_LIMIT = 10000  # runs one bulk action may touch
_BATCH = 500


class RunQueryError(ValueError):
    """A filter that cannot be applied (bad cursor, expression that does not compile)."""


@dataclass(slots=True)
class RunQuery:
    filter: RunFilter = field(default_factory=RunFilter)
    expression: Expression | None = None

    def __post_init__(self) -> None:
        if self.expression is not None and not self.filter.events_contain:
            self.filter = replace(self.filter, events_contain=text_hints(self.expression.source))

    @property
    def source(self) -> str | None:
        return self.expression.source if self.expression else None


@dataclass(slots=True)
class RunPage:
    runs: list[Run]
    next_cursor: str | None
    scanned: int = 0
    partial: bool = False  # the expression scan stopped at SCAN_LIMIT before the page was full


@dataclass(slots=True)
class RunCounts:
    by_status: dict[str, int]
    complete: bool = True  # False: an expression count stopped at COUNT_SCAN_LIMIT rows

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


def compile_run_expression(source: str | None) -> Expression | None:
    if not source or not source.strip():
        return None
    try:
        return compile_expression(source.strip())
    except ExpressionError as exc:
        raise RunQueryError(f"the run filter expression does not compile: {exc}") from None


def text_hints(source: str) -> list[str]:
    """Substrings the stored trigger JSON must contain for the expression to hold, so SQL can skip most
    rows: `event.data.user_id == "u1"` needs `"user_id":"u1"` (the store writes compact JSON). Only
    strings and booleans: numbers have several spellings (1, 1.0)."""
    hints = []
    for path, value in equality_keys(source, root="event"):
        if isinstance(value, (str, bool)) and path.startswith("data."):
            key = path.rsplit(".", 1)[1]
            hints.append(orjson.dumps(key).decode() + ":" + orjson.dumps(value).decode())
    return hints


def encode_cursor(run: Run) -> str:
    return f"{run.created_at}.{run.run_id}"


def decode_cursor(tx: Tx, cursor: str | None) -> tuple[int, str] | None:
    """`<created_at>.<run_id>` (what pages hand out), or a bare run id: page on from that run."""
    if not cursor:
        return None
    if "." not in cursor:
        run = ops.get_run(tx, cursor)
        if run is None:
            raise RunQueryError(f"invalid cursor {cursor!r}: no run with that id; pass back the previous page's"
                                " metadata.cursor")
        return run.created_at, run.run_id
    created, _, run_id = cursor.partition(".")
    if not created.isdigit() or not run_id:
        raise RunQueryError(f"invalid cursor {cursor!r}: pass back the next_cursor of the previous page")
    return int(created), run_id


def _scan(tx: Tx, query: RunQuery, before: tuple[int, str] | None, budget: int):
    """Yield (created_at, run_id, status, matched) newest first, at most `budget` rows."""
    seen = 0
    while seen < budget:
        batch = ops.scan_run_triggers(tx, query.filter, before=before, limit=min(_BATCH, budget - seen))
        for created_at, run_id, status, event in batch:
            seen += 1
            matched = query.expression is None or query.expression.matches({"event": event})
            yield created_at, run_id, status, matched
        if len(batch) < _BATCH:
            return
        before = (batch[-1][0], batch[-1][1])


def search_runs(tx: Tx, query: RunQuery, *, cursor: str | None, limit: int) -> RunPage:
    before = decode_cursor(tx, cursor)
    if query.expression is None:
        runs = ops.page_runs(tx, query.filter, before=before, limit=limit + 1)
        more = len(runs) > limit
        runs = runs[:limit]
        return RunPage(runs, encode_cursor(runs[-1]) if more and runs else None, scanned=len(runs))
    found: list[str] = []
    last: tuple[int, str] | None = None
    scanned = 0
    for created_at, run_id, _, matched in _scan(tx, query, before, SCAN_LIMIT):
        scanned += 1
        last = (created_at, run_id)
        if matched:
            found.append(run_id)
            if len(found) == limit:
                break
    runs = [run for run in (ops.get_run(tx, run_id) for run_id in found) if run is not None]
    exhausted = scanned < SCAN_LIMIT and len(found) < limit
    if exhausted or last is None:
        return RunPage(runs, None, scanned)
    return RunPage(runs, f"{last[0]}.{last[1]}", scanned, partial=len(found) < limit)


def count_runs(tx: Tx, query: RunQuery) -> RunCounts:
    """Matching runs by status: exact from the stored counts when the filter is statuses and
    functions only; else among the newest COUNT_SCAN_LIMIT matching runs (complete=False past that)."""
    f = query.filter
    if query.expression is None and f.created_from is None and f.created_to is None and not f.events_contain:
        wanted = set(f.function_ids)
        counts = {}
        for function_id, by_status in hops.runs_by_function(tx).items():
            if wanted and function_id not in wanted:
                continue
            for status, n in by_status.items():
                if not f.statuses or status in f.statuses:
                    counts[status] = counts.get(status, 0) + n
        return RunCounts(counts)
    if query.expression is None:
        counts = ops.count_newest_runs(tx, f, limit=COUNT_SCAN_LIMIT)
        return RunCounts(counts, complete=sum(counts.values()) < COUNT_SCAN_LIMIT)
    counts: dict[str, int] = {}
    scanned = 0
    for _, _, status, matched in _scan(tx, query, None, COUNT_SCAN_LIMIT):
        scanned += 1
        if matched:
            counts[status] = counts.get(status, 0) + 1
    return RunCounts(counts, complete=scanned < COUNT_SCAN_LIMIT)


NO_FUNCTION = "(no such function)"  # matches nothing: a named function or app that does not exist


def resolve_filter(tx: Tx, *, statuses: list[str], function: str | None, app: str | None,
                   created_from: int | None, created_to: int | None) -> RunFilter:
    """A RunFilter from what a person types: a function slug (or id) and an app name."""
    function_ids: list[str] = []
    if function or app:
        function_ids = ops.function_ids_of(tx, slug_or_id=function, app_name=app) or [NO_FUNCTION]
    return RunFilter(statuses=statuses, function_ids=function_ids, created_from=created_from,
                     created_to=created_to)


def parse_statuses(values: list[str]) -> list[str]:
    known = {s.value.lower(): s.value for s in RunStatus}
    out = []
    for value in values:
        for part in value.split(","):
            if not part.strip():
                continue
            status = known.get(part.strip().lower())
            if status is None:
                raise RunQueryError(f"unknown run status {part.strip()!r}; use one of {', '.join(known.values())}")
            out.append(status)
    return out


def select_run_ids(tx: Tx, query: RunQuery, *, unfinished_only: bool) -> list[str]:
    """Every run a bulk action covers (at most BULK_LIMIT), newest first."""
    if unfinished_only:
        statuses = [s for s in (query.filter.statuses or [s.value for s in RunStatus]) if s not in FINAL_STATUSES]
        if not statuses:
            return []
        query = RunQuery(replace(query.filter, statuses=statuses), query.expression)
    ids: list[str] = []
    for _, run_id, _, matched in _scan(tx, query, None, BULK_LIMIT * 4 if query.expression else BULK_LIMIT):
        if matched:
            ids.append(run_id)
            if len(ids) == BULK_LIMIT:
                break
    return ids
