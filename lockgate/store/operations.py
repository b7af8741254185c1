"""All of lockgate's SQL, as small functions that take a transaction first.

The same statements run on SQLite and PostgreSQL (`?` placeholders; the PostgreSQL
transaction translates them). Engine code composes these inside one transaction.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable

import orjson

from lockgate.models import (
    FINAL_STATUSES,
    App,
    Event,
    Function,
    Job,
    Run,
    RunFilter,
    RunStatus,
    Step,
    Wait,
)
from lockgate.store.base import Tx


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _unjson(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def json_rows(columns: tuple[tuple[str, str], ...]) -> str:
    """PostgreSQL: `SELECT` the rows of one parameter holding them as a JSON array of arrays, each
    value cast to its column's type. Many rows in one statement; and encoding them with orjson costs
    a fraction of psycopg's array parameters, which quote and escape each value in Python."""
    picks = ", ".join(f"(r->>{i})::{kind}" for i, (_, kind) in enumerate(columns))
    return f"SELECT {picks} FROM json_array_elements(?::json) AS r"


def insert_rows(tx: Tx, table: str, columns: tuple[tuple[str, str], ...], rows: list[tuple], suffix: str = "") -> None:
    """INSERT many rows. PostgreSQL gets one statement whatever their number, not one per row:
    `columns` pairs each name with its PostgreSQL type."""
    if not rows:
        return
    names = ", ".join(name for name, _ in columns)
    if tx.dialect == "postgres" and len(rows) > 1:
        tx.execute(f"INSERT INTO {table} ({names}) {json_rows(columns)}{suffix}", (_json(rows),))
    else:
        tx.executemany(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' for _ in columns)}){suffix}", rows)


def where_in(tx: Tx, column: str, values: list[Any]) -> tuple[str, list[Any]]:
    """`column` is one of `values`: a condition and its parameters (one array on PostgreSQL)."""
    if tx.dialect == "postgres":
        return f"{column} = ANY(?)", [list(values)]
    return f"{column} IN ({', '.join('?' for _ in values)})", list(values)


# -- apps and functions --------------------------------------------------------------


def _app_from_row(row: Any) -> App:
    return App(
        name=row["name"],
        url=row["url"],
        sdk=row["sdk"],
        framework=row["framework"],
        checksum=row["checksum"],
        error=row["error"],
        synced_at=row["synced_at"],
        created_at=row["created_at"],
    )


def _function_from_row(row: Any) -> Function:
    return Function(
        id=row["id"],
        slug=row["slug"],
        app_name=row["app_name"],
        name=row["name"],
        url=row["url"],
        config=orjson.loads(row["config"]),
        version=row["version"],
        archived=bool(row["archived"]),
    )


def get_app(tx: Tx, name: str) -> App | None:
    row = tx.one("SELECT * FROM apps WHERE name = ?", (name,))
    return _app_from_row(row) if row else None


def get_app_by_url(tx: Tx, url: str) -> App | None:
    row = tx.one("SELECT * FROM apps WHERE url = ?", (url,))
    return _app_from_row(row) if row else None


def list_apps(tx: Tx) -> list[App]:
    return [_app_from_row(r) for r in tx.all("SELECT * FROM apps ORDER BY name")]


def upsert_app(tx: Tx, app: App) -> None:
    tx.execute(
        "INSERT INTO apps (name, url, sdk, framework, checksum, error, synced_at, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET url = excluded.url, sdk = excluded.sdk,"
        " framework = excluded.framework, checksum = excluded.checksum, error = excluded.error,"
        " synced_at = excluded.synced_at",
        (app.name, app.url, app.sdk, app.framework, app.checksum, app.error, app.synced_at, app.created_at),
    )


def set_app_error(tx: Tx, *, url: str, error: str | None, at: int) -> None:
    """Record a sync failure against whichever app lives at this URL (or a placeholder)."""
    row = tx.one("SELECT name FROM apps WHERE url = ?", (url,))
    if row:
        tx.execute("UPDATE apps SET error = ? WHERE name = ?", (error, row["name"]))
    elif error is not None:
        tx.execute(
            "INSERT INTO apps (name, url, error, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE"
            " SET error = excluded.error",
            (url, url, error, at),
        )


def delete_app(tx: Tx, name: str) -> None:
    tx.execute("DELETE FROM apps WHERE name = ?", (name,))


def delete_placeholder_app(tx: Tx, url: str) -> None:
    tx.execute("DELETE FROM apps WHERE name = ? AND url = ?", (url, url))


def replace_app_functions(tx: Tx, app_name: str, functions: list[Function], at: int) -> list[str]:
    """Upsert this app's functions by slug and archive the ones missing; returns archived ids."""
    existing = {
        r["slug"]: r
        for r in tx.all("SELECT id, slug, config, version FROM functions WHERE app_name = ?", (app_name,))
    }
    keep: set[str] = set()
    for fn in functions:
        old = existing.get(fn.slug)
        if old is None:
            other = tx.one("SELECT id FROM functions WHERE slug = ?", (fn.slug,))
            if other:  # the slug moved between apps: take it over
                old = tx.one("SELECT id, slug, config, version FROM functions WHERE slug = ?", (fn.slug,))
        if old is not None:
            fn.id = old["id"]
            changed = orjson.loads(old["config"]) != fn.config
            fn.version = old["version"] + (1 if changed else 0)
            tx.execute(
                "UPDATE functions SET app_name = ?, name = ?, url = ?, config = ?, version = ?, archived = 0,"
                " updated_at = ? WHERE id = ?",
                (app_name, fn.name, fn.url, _json(fn.config), fn.version, at, fn.id),
            )
        else:
            tx.execute(
                "INSERT INTO functions (id, slug, app_name, name, url, config, version, archived, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
                (fn.id, fn.slug, app_name, fn.name, fn.url, _json(fn.config), fn.version, at),
            )
        keep.add(fn.id)
    archived = [r["id"] for r in existing.values() if r["id"] not in keep]
    for fid in archived:
        tx.execute("UPDATE functions SET archived = 1, updated_at = ? WHERE id = ?", (at, fid))
    return archived


def upsert_function(tx: Tx, fn: Function, at: int) -> None:
    """Create or update one function by id, leaving its app's others alone (durable endpoints)."""
    tx.execute(
        "INSERT INTO functions (id, slug, app_name, name, url, config, version, archived, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT (id) DO UPDATE SET app_name = excluded.app_name,"
        " name = excluded.name, url = excluded.url, config = excluded.config, version = excluded.version,"
        " archived = 0, updated_at = excluded.updated_at",
        (fn.id, fn.slug, fn.app_name, fn.name, fn.url, _json(fn.config), fn.version, at),
    )


def load_functions(tx: Tx, *, include_archived: bool = False) -> list[Function]:
    sql = "SELECT * FROM functions" + ("" if include_archived else " WHERE archived = 0")
    return [_function_from_row(r) for r in tx.all(sql + " ORDER BY slug")]


def active_function_versions(tx: Tx) -> dict[str, int]:
    """Each active function's id and version: what a registry built now would hold, without configs."""
    return {r["id"]: r["version"] for r in tx.all("SELECT id, version FROM functions WHERE archived = 0")}


def get_function(tx: Tx, function_id: str) -> Function | None:
    row = tx.one("SELECT * FROM functions WHERE id = ?", (function_id,))
    return _function_from_row(row) if row else None


# -- events ---------------------------------------------------------------------------


def insert_events(tx: Tx, events: Iterable[Event]) -> None:
    tx.executemany(
        "INSERT INTO events (internal_id, id, name, data, user_data, v, ts, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(e.internal_id, e.id, e.name, _json(e.data), _json(e.user), e.v, e.ts, e.received_at) for e in events],
    )


def _event_from_row(row: Any) -> Event:
    return Event(
        internal_id=row["internal_id"],
        id=row["id"],
        name=row["name"],
        data=orjson.loads(row["data"]),
        user=orjson.loads(row["user_data"]),
        v=row["v"],
        ts=row["ts"],
        received_at=row["received_at"],
        started_nothing=row["started_nothing"],
    )


def note_started_nothing(tx: Tx, internal_id: str, why: str) -> None:
    tx.execute("UPDATE events SET started_nothing = ? WHERE internal_id = ?", (why, internal_id))


def get_event(tx: Tx, internal_id: str) -> Event | None:
    row = tx.one("SELECT * FROM events WHERE internal_id = ? ORDER BY seq LIMIT 1", (internal_id,))
    return _event_from_row(row) if row else None


def _where(*conditions: tuple[str, Any]) -> tuple[str, list[Any]]:
    """A WHERE clause of the conditions whose value is not None, and its parameters."""
    used = [(sql, value) for sql, value in conditions if value is not None]
    return (" WHERE " + " AND ".join(sql for sql, _ in used)) if used else "", [value for _, value in used]


def list_events(
    tx: Tx,
    *,
    name: str | None = None,
    limit: int = 20,
    before_seq: int | None = None,
    received_after: int | None = None,
    received_before: int | None = None,
    data_contains: str | None = None,
) -> list[tuple[int, Event]]:
    contains = "%" + _like_escape(data_contains.lower()) + "%" if data_contains else None
    # `contains`: a substring of the stored JSON payload (unindexed: the page limit bounds the scan)
    where, params = _where(("name = ?", name or None), ("LOWER(data) LIKE ? ESCAPE '\\'", contains),
                           ("seq < ?", before_seq), ("received_at >= ?", received_after),
                           ("received_at <= ?", received_before))
    rows = tx.all(f"SELECT * FROM events{where} ORDER BY seq DESC LIMIT ?", (*params, limit))
    return [(r["seq"], _event_from_row(r)) for r in rows]


def recent_events(tx: Tx, name: str, *, since: int, limit: int) -> list[Event]:
    """Events of one name received at or after `since`, oldest first."""
    rows = tx.all(
        "SELECT * FROM events WHERE name = ? AND received_at >= ? ORDER BY received_at, seq LIMIT ?",
        (name, since, limit),
    )
    return [_event_from_row(r) for r in rows]


# -- uniqueness windows ---------------------------------------------------------------


def claim_unique_key(tx: Tx, key: str, *, expires_at: int, now: int) -> bool:
    """True if `key` was free (or its window had lapsed) and is now held until expires_at."""
    row = tx.one(
        "INSERT INTO unique_keys (key, expires_at) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at"
        " WHERE unique_keys.expires_at <= ? RETURNING key",
        (key, expires_at, now),
    )
    return row is not None


# -- runs -----------------------------------------------------------------------------

_RUN_COLUMNS = (
    "run_id, function_id, function_slug, function_version, status, events, event_ids, reason,"
    " request_version, disable_immediate, pending_steps, stack, output, error, cron, correlation_id,"
    " created_at, started_at, ended_at"
)

_INSERT_RUN = f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def insert_run(tx: Tx, run: Run) -> None:
    values = (
        run.run_id,
        run.function_id,
        run.function_slug,
        run.function_version,
        run.status,
        _json(run.events),
        _json(run.event_ids),
        run.reason,
        run.request_version,
        int(run.disable_immediate),
        _json(run.pending_steps),
        _json(run.stack),
        _json(run.output) if run.has_output else None,
        _json(run.error) if run.error is not None else None,
        run.cron,
        run.correlation_id,
        run.created_at,
        run.started_at,
        run.ended_at,
    )
    if tx.dialect == "postgres":  # the run and its trigger links in one statement
        tx.execute(f"WITH r AS ({_INSERT_RUN} RETURNING run_id) INSERT INTO run_triggers (event_internal_id, run_id)"
                   " SELECT e, r.run_id FROM r, unnest(?::text[]) AS e ON CONFLICT DO NOTHING",
                   (*values, list(run.event_ids)))
        return
    tx.execute(_INSERT_RUN, values)
    tx.executemany(
        "INSERT INTO run_triggers (event_internal_id, run_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
        [(eid, run.run_id) for eid in run.event_ids],
    )


def _run_from_row(row: Any) -> Run:
    output_text = row["output"]
    return Run(
        run_id=row["run_id"],
        function_id=row["function_id"],
        function_slug=row["function_slug"],
        function_version=row["function_version"],
        status=row["status"],
        events=orjson.loads(row["events"]),
        event_ids=orjson.loads(row["event_ids"]),
        reason=row["reason"],
        request_version=row["request_version"],
        disable_immediate=bool(row["disable_immediate"]),
        pending_steps=orjson.loads(row["pending_steps"]),
        stack=orjson.loads(row["stack"]),
        output=_unjson(output_text),
        has_output=output_text is not None,
        error=_unjson(row["error"]),
        cron=row["cron"],
        correlation_id=row["correlation_id"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
    )


def lock_run_of_job(tx: Tx, job: Job) -> tuple[str | None, int, Run | None] | None:
    """For settling a call in one round trip: the job's lease owner and attempt, and its run locked
    (FOR UPDATE on PostgreSQL). None when the job or its run is gone."""
    lock = " FOR UPDATE OF r" if tx.dialect == "postgres" else ""
    columns = ", ".join("r." + c.strip() for c in _RUN_COLUMNS.split(","))
    row = tx.one(f"SELECT j.lease_owner AS job_lease_owner, j.attempt AS job_attempt, {columns} FROM jobs j"
                 f" JOIN runs r ON r.run_id = j.run_id WHERE j.id = ?{lock}", (job.id,))
    return None if row is None else (row["job_lease_owner"], row["job_attempt"], _run_from_row(row))


def get_run(tx: Tx, run_id: str, *, for_update: bool = False) -> Run | None:
    lock = " FOR UPDATE" if for_update and tx.dialect == "postgres" else ""
    row = tx.one(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?{lock}", (run_id,))
    return _run_from_row(row) if row else None


def runs_of_event(tx: Tx, internal_id: str) -> list[Run]:
    rows = tx.all(
        f"SELECT {', '.join('r.' + c.strip() for c in _RUN_COLUMNS.split(','))} FROM runs r"
        " JOIN run_triggers t ON t.run_id = r.run_id WHERE t.event_internal_id = ? ORDER BY r.created_at",
        (internal_id,),
    )
    return [_run_from_row(r) for r in rows]


def _in(column: str, values: list[Any]) -> str:
    return f"{column} = ?" if len(values) == 1 else f"{column} IN ({', '.join('?' for _ in values)})"


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _run_where(run_filter: RunFilter, before: tuple[int, str] | None = None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if run_filter.statuses:
        clauses.append(_in("status", run_filter.statuses))
        params += run_filter.statuses
    if run_filter.function_ids:
        clauses.append(_in("function_id", run_filter.function_ids))
        params += run_filter.function_ids
    if run_filter.created_from is not None:
        clauses.append("created_at >= ?")
        params.append(run_filter.created_from)
    if run_filter.created_to is not None:
        clauses.append("created_at < ?")
        params.append(run_filter.created_to)
    for text in run_filter.events_contain:
        clauses.append("events LIKE ? ESCAPE '\\'")
        params.append("%" + _like_escape(text) + "%")
    if before is not None:  # keyset: strictly older than the last row of the previous page
        clauses.append("(created_at < ? OR (created_at = ? AND run_id < ?))")
        params += [before[0], before[0], before[1]]
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


MAX_SPLIT = 32


def _split(run_filter: RunFilter) -> list[RunFilter]:
    """One filter per (status, function) pair when several are asked for: each pair is one range of an
    index, where `IN (...)` plus `ORDER BY created_at` would make the database sort every matching row."""
    statuses, functions = run_filter.statuses or [None], run_filter.function_ids or [None]
    if len(statuses) * len(functions) == 1 or len(statuses) * len(functions) > MAX_SPLIT:
        return [run_filter]
    return [replace(run_filter, statuses=[s] if s else [], function_ids=[f] if f else [])
            for s in statuses for f in functions]


def page_runs(tx: Tx, run_filter: RunFilter, *, before: tuple[int, str] | None, limit: int) -> list[Run]:
    """Runs matching the filter, newest first, older than the `before` keyset position."""
    rows = []
    for part in _split(run_filter):
        where, params = _run_where(part, before)
        rows += tx.all(f"SELECT {_RUN_COLUMNS} FROM runs{where} ORDER BY created_at DESC, run_id DESC LIMIT ?",
                       (*params, limit))
    rows.sort(key=lambda r: (r["created_at"], r["run_id"]), reverse=True)
    return [_run_from_row(r) for r in rows[:limit]]


def scan_run_triggers(tx: Tx, run_filter: RunFilter, *, before: tuple[int, str] | None,
                      limit: int) -> list[tuple[int, str, str, Any]]:
    """(created_at, run_id, status, first triggering event) newest first: the light rows an expression
    filter is checked against before whole runs are loaded."""
    rows = []
    for part in _split(run_filter):
        where, params = _run_where(part, before)
        rows += tx.all(f"SELECT created_at, run_id, status, events FROM runs{where}"
                       " ORDER BY created_at DESC, run_id DESC LIMIT ?", (*params, limit))
    rows.sort(key=lambda r: (r["created_at"], r["run_id"]), reverse=True)
    out = []
    for r in rows[:limit]:
        events = orjson.loads(r["events"])
        out.append((r["created_at"], r["run_id"], r["status"], events[0] if events else {}))
    return out


def count_newest_runs(tx: Tx, run_filter: RunFilter, *, limit: int) -> dict[str, int]:
    """The newest `limit` matching runs by status: a count that stops (a time range or event text
    filter has no stored count, and grouping millions of runs takes seconds)."""
    where, params = _run_where(run_filter)
    rows = tx.all(f"SELECT status, COUNT(*) AS n FROM (SELECT status FROM runs{where}"
                  " ORDER BY created_at DESC, run_id DESC LIMIT ?) r GROUP BY status", (*params, limit))
    return {r["status"]: r["n"] for r in rows}


def list_runs(tx: Tx, *, status: str | None = None, function_id: str | None = None, limit: int = 50) -> list[Run]:
    """Newest runs, of one status and/or one function (the REST API and the dashboard use page_runs)."""
    run_filter = RunFilter(statuses=[status] if status else [], function_ids=[function_id] if function_id else [])
    return page_runs(tx, run_filter, before=None, limit=limit)


def function_ids_of(tx: Tx, *, slug_or_id: str | None = None, app_name: str | None = None) -> list[str]:
    """Resolve a function (slug or id) and/or an app to function ids, archived ones included."""
    clauses, params = [], []
    if slug_or_id:
        clauses.append("(slug = ? OR id = ?)")
        params += [slug_or_id, slug_or_id]
    if app_name:
        clauses.append("app_name = ?")
        params.append(app_name)
    where = " AND ".join(clauses) or "1 = 1"
    return [r["id"] for r in tx.all(f"SELECT id FROM functions WHERE {where} ORDER BY id", params)]


_UPDATABLE_RUN_FIELDS = {
    "status",
    "reason",
    "request_version",
    "disable_immediate",
    "pending_steps",
    "stack",
    "output",
    "error",
    "started_at",
    "ended_at",
}
_JSON_RUN_FIELDS = {"pending_steps", "stack", "output", "error"}


def update_run(tx: Tx, run_id: str, **fields: Any) -> None:
    sets, params = [], []
    for name, value in fields.items():
        assert name in _UPDATABLE_RUN_FIELDS, name
        if name in _JSON_RUN_FIELDS:
            value = None if (value is None and name == "error") else _json(value)
        elif name == "disable_immediate":
            value = int(value)
        sets.append(f"{name} = ?")
        params.append(value)
    tx.execute(f"UPDATE runs SET {', '.join(sets)} WHERE run_id = ?", (*params, run_id))


def runs_progress(tx: Tx, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Function, status, stack, pending steps and disable_immediate of several runs, locked on PostgreSQL
    (in run id order, so two such batches never wait on each other crosswise)."""
    found: dict[str, dict[str, Any]] = {}
    lock = " ORDER BY run_id FOR UPDATE" if tx.dialect == "postgres" else ""
    for i in range(0, len(run_ids), 500):
        condition, params = where_in(tx, "run_id", run_ids[i:i + 500])
        for r in tx.all(f"SELECT run_id, function_slug, status, stack, pending_steps, disable_immediate FROM runs"
                        f" WHERE {condition}{lock}", params):
            found[r["run_id"]] = {"function": r["function_slug"], "status": r["status"], "stack": orjson.loads(r["stack"]),
                                  "pending_steps": orjson.loads(r["pending_steps"]),
                                  "disable_immediate": bool(r["disable_immediate"])}
    return found


def update_runs_progress(tx: Tx, progress: dict[str, dict[str, Any]]) -> None:
    """Write back what `runs_progress` read, changed; clears the runs' reason."""
    rows = [(run_id, _json(p["stack"]), _json(p["pending_steps"]), int(p["disable_immediate"]))
            for run_id, p in progress.items()]
    if not rows:
        return
    if tx.dialect == "postgres":
        columns = (("run_id", "text"), ("stack", "text"), ("pending", "text"), ("immediate", "int"))
        tx.execute("UPDATE runs SET stack = u.stack, pending_steps = u.pending, disable_immediate = u.immediate,"
                   f" reason = NULL FROM ({json_rows(columns)}) AS u(run_id, stack, pending, immediate)"
                   " WHERE runs.run_id = u.run_id", (_json(rows),))
    else:
        tx.executemany("UPDATE runs SET stack = ?, pending_steps = ?, disable_immediate = ?, reason = NULL"
                       " WHERE run_id = ?", [(stack, pending, immediate, run_id)
                                             for run_id, stack, pending, immediate in rows])


def mark_runs_started(tx: Tx, run_ids: list[str], at: int) -> None:
    for i in range(0, len(run_ids), 500):
        condition, params = where_in(tx, "run_id", run_ids[i:i + 500])
        tx.execute(f"UPDATE runs SET status = ?, started_at = ?, reason = NULL WHERE {condition} AND status = ?",
                   [RunStatus.RUNNING.value, at, *params, RunStatus.QUEUED.value])


def child_runs(tx: Tx, run_id: str) -> list[Run]:
    """Runs this run started with step.invoke."""
    rows = tx.all(f"SELECT {_RUN_COLUMNS} FROM runs WHERE correlation_id >= ? AND correlation_id < ?"
                  " ORDER BY created_at", (run_id + ".", run_id + "/"))
    return [_run_from_row(r) for r in rows]


def runs_change_mark(tx: Tx) -> tuple:
    """Changes whenever a run is created or ends, or an event arrives (three index lookups)."""
    created = tx.one("SELECT MAX(created_at) AS t FROM runs")["t"]
    # IS NOT NULL: SQLite takes the partial runs_ended_set (0012) only when the query implies it.
    ended = tx.one("SELECT MAX(ended_at) AS t FROM runs WHERE ended_at IS NOT NULL")["t"]
    event = tx.one("SELECT MAX(seq) AS s FROM events")["s"]
    return created, ended, event


def run_change_mark(tx: Tx, run_id: str) -> tuple:
    """Changes whenever this run or one of its steps or queued jobs changes."""
    run = tx.one("SELECT status, started_at, ended_at, reason FROM runs WHERE run_id = ?", (run_id,))
    steps = tx.one("SELECT COUNT(*) AS n, MAX(ended_at) AS t, SUM(attempts) AS a, MAX(status) AS s"
                   " FROM steps WHERE run_id = ?", (run_id,))
    jobs = tx.one("SELECT COUNT(*) AS n, MAX(due_at) AS t, MAX(attempt) AS a FROM jobs WHERE run_id = ?", (run_id,))
    return ((run["status"], run["started_at"], run["ended_at"], run["reason"]) if run else None,
            (steps["n"], steps["t"], steps["a"], steps["s"]), (jobs["n"], jobs["t"], jobs["a"]))


def run_is_final(tx: Tx, run_id: str) -> bool:
    row = tx.one("SELECT status FROM runs WHERE run_id = ?", (run_id,))
    return row is None or row["status"] in FINAL_STATUSES


# -- steps ----------------------------------------------------------------------------


def _step_from_row(row: Any) -> Step:
    return Step(
        run_id=row["run_id"],
        step_id=row["step_id"],
        display_name=row["display_name"],
        op=row["op"],
        status=row["status"],
        memo=_unjson(row["memo"]),
        position=row["position"],
        attempts=row["attempts"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
    )


def get_steps(tx: Tx, run_id: str) -> list[Step]:
    rows = tx.all(
        "SELECT * FROM steps WHERE run_id = ? ORDER BY COALESCE(position, 1000000000), started_at", (run_id,)
    )
    return [_step_from_row(r) for r in rows]


def failed_steps(tx: Tx, run_id: str) -> list[Step]:
    """The run's steps recorded as failed, latest last."""
    rows = tx.all("SELECT * FROM steps WHERE run_id = ? AND status = 'failed' AND position IS NOT NULL"
                  " ORDER BY position", (run_id,))
    return [_step_from_row(r) for r in rows]


def completed_memos(tx: Tx, run_id: str) -> dict[str, Any]:
    rows = tx.all(
        "SELECT step_id, memo FROM steps WHERE run_id = ? AND position IS NOT NULL", (run_id,)
    )
    return {r["step_id"]: _unjson(r["memo"]) for r in rows}


def step_is_recorded(tx: Tx, run_id: str, step_id: str) -> bool:
    row = tx.one("SELECT position FROM steps WHERE run_id = ? AND step_id = ?", (run_id, step_id))
    return row is not None and row["position"] is not None


# Saves finished steps; never overwrites a recorded one (position set).
_STEP_COLUMNS = (("run_id", "text"), ("step_id", "text"), ("display_name", "text"), ("op", "text"),
                 ("status", "text"), ("memo", "text"), ("position", "int"), ("attempts", "int"),
                 ("started_at", "bigint"), ("ended_at", "bigint"))
_STEP_CONFLICT = (
    " ON CONFLICT (run_id, step_id) DO UPDATE SET display_name = COALESCE(excluded.display_name,"
    " steps.display_name), op = excluded.op, status = excluded.status, memo = excluded.memo,"
    " position = excluded.position, attempts = excluded.attempts, ended_at = excluded.ended_at"
    " WHERE steps.position IS NULL"
)


def _step_row(step: Step) -> tuple:
    return (step.run_id, step.step_id, step.display_name, step.op, step.status, _json(step.memo), step.position,
            step.attempts, step.started_at, step.ended_at)


def record_step(tx: Tx, step: Step) -> bool:
    """Save a finished step. Never overwrites a recorded one: returns False if it was."""
    row = tx.one(f"INSERT INTO steps ({', '.join(name for name, _ in _STEP_COLUMNS)}) VALUES"
                 f" ({', '.join('?' for _ in _STEP_COLUMNS)}){_STEP_CONFLICT} RETURNING step_id", _step_row(step))
    return row is not None


def record_steps(tx: Tx, steps: list[Step]) -> None:
    """Save finished steps known not to be recorded yet (not in their run's stack)."""
    insert_rows(tx, "steps", _STEP_COLUMNS, [_step_row(step) for step in steps], _STEP_CONFLICT)


def note_step_pending(tx: Tx, step: Step) -> None:
    """Show a step that is sleeping, planned or retrying in the trace (a retry keeps its last error as memo;
    only recorded steps, with a position, are ever sent back to the SDK)."""
    tx.execute(
        "INSERT INTO steps (run_id, step_id, display_name, op, status, memo, attempts, started_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, step_id) DO UPDATE SET status = excluded.status,"
        " op = excluded.op, memo = excluded.memo, attempts = excluded.attempts WHERE steps.position IS NULL",
        (step.run_id, step.step_id, step.display_name, step.op, step.status,
         None if step.memo is None else _json(step.memo), step.attempts, step.started_at),
    )


# -- jobs (the queue) -----------------------------------------------------------------


def _job_from_row(row: Any) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        run_id=row["run_id"],
        step_id=row["step_id"],
        attempt=row["attempt"],
        due_at=row["due_at"],
        rank_at=row["rank_at"],
        payload=_unjson(row["payload"]),
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        created_at=row["created_at"],
    )


_JOB_COLUMNS = (("id", "text"), ("kind", "text"), ("run_id", "text"), ("step_id", "text"), ("attempt", "int"),
                ("due_at", "bigint"), ("rank_at", "bigint"), ("payload", "text"), ("created_at", "bigint"),
                ("lease_owner", "text"), ("lease_expires_at", "bigint"))


def enqueue(tx: Tx, jobs: Iterable[Job]) -> None:
    """Insert jobs; a job whose id already exists is left alone (idempotent enqueue).

    A job may go in already leased (`lease_owner` set): only for a new id, which cannot exist yet."""
    jobs = list(jobs)
    if not jobs:
        return
    if any(j.lease_owner is None for j in jobs):  # leased ones are taken here: nothing for the others
        notify_replicas(tx)
    rows = [(j.id, j.kind, j.run_id, j.step_id, j.attempt, j.due_at, j.due_at if j.rank_at is None else j.rank_at,
             None if j.payload is None else _json(j.payload), j.created_at, j.lease_owner, j.lease_expires_at)
            for j in jobs]
    insert_rows(tx, "jobs", _JOB_COLUMNS, rows, " ON CONFLICT (id) DO NOTHING")


def select_due_jobs(tx: Tx, *, now: int, limit: int, kinds: tuple[str, ...] = (),
                    other_than: tuple[str, ...] = ()) -> list[Job]:
    """Due jobs that no live lease holds (of these kinds only / other than these, if given), in
    queue order, locked for this transaction on PostgreSQL (skipping rows another replica takes)."""
    skip_locked = " FOR UPDATE SKIP LOCKED" if tx.dialect == "postgres" else ""
    of_kinds = f" AND kind IN ({', '.join('?' for _ in kinds)})" if kinds else ""
    of_kinds += f" AND kind NOT IN ({', '.join('?' for _ in other_than)})" if other_than else ""
    rows = tx.all(
        f"SELECT * FROM jobs WHERE rank_at <= ? AND due_at <= ?{of_kinds}"
        " AND (lease_expires_at IS NULL OR lease_expires_at < ?)"
        f" ORDER BY rank_at LIMIT ?{skip_locked}",
        (now, now, *kinds, *other_than, now, limit),
    )
    return [_job_from_row(r) for r in rows]


def lease_due_jobs(tx: Tx, *, owner: str, now: int, limit: int, lease_ms: int,
                   kinds: tuple[str, ...] = (), other_than: tuple[str, ...] = ()) -> list[Job]:
    jobs = select_due_jobs(tx, now=now, limit=limit, kinds=kinds, other_than=other_than)
    take_leases(tx, jobs, owner=owner, until=now + lease_ms)
    return jobs


def take_leases(tx: Tx, jobs: list[Job], *, owner: str, until: int) -> None:
    """Lease jobs this transaction selected (and, on PostgreSQL, locked)."""
    if not jobs:
        return
    condition, params = where_in(tx, "id", [j.id for j in jobs])
    tx.execute(f"UPDATE jobs SET lease_owner = ?, lease_expires_at = ? WHERE {condition}", [owner, until, *params])
    for j in jobs:
        j.lease_owner, j.lease_expires_at = owner, until


def delete_jobs(tx: Tx, job_ids: list[str]) -> None:
    """Drop jobs this transaction holds (selected FOR UPDATE, or leased in it)."""
    for i in range(0, len(job_ids), 500):
        condition, params = where_in(tx, "id", job_ids[i:i + 500])
        tx.execute(f"DELETE FROM jobs WHERE {condition}", params)


def lease_job(tx: Tx, job: Job, *, owner: str, now: int, lease_ms: int) -> bool:
    """Lease one known job that is due now (hand-off without a trip through the dispatcher)."""
    expires = now + lease_ms
    cur = tx.execute(
        "UPDATE jobs SET lease_owner = ?, lease_expires_at = ? WHERE id = ? AND lease_owner IS NULL"
        " AND due_at <= ? AND rank_at <= ?",
        (owner, expires, job.id, now, now),
    )
    if cur.rowcount != 1:
        return False
    job.lease_owner, job.lease_expires_at = owner, expires
    return True


def next_wakeup(tx: Tx) -> int | None:
    """The earliest time at which some job becomes leasable (two index lookups, no scan, one statement).

    A free job is leasable at max(due_at, rank_at); looking at the earliest few by due_at is
    exact unless many of them are held back by a negative priority, and then the dispatcher's
    safety poll still finds the job.
    """
    later = "GREATEST" if tx.dialect == "postgres" else "MAX"
    row = tx.one(f"SELECT (SELECT MIN({later}(due_at, rank_at)) FROM (SELECT due_at, rank_at FROM jobs"
                 " WHERE lease_owner IS NULL ORDER BY due_at LIMIT 32) AS f) AS free,"
                 " (SELECT MIN(lease_expires_at) FROM jobs WHERE lease_owner IS NOT NULL) AS leased")
    times = [t for t in (row["free"], row["leased"]) if t is not None]
    return min(times) if times else None


def next_due_of_kinds(tx: Tx, kinds: tuple[str, ...]) -> int | None:
    """When the earliest free job of these kinds comes due (timers, while every worker is busy)."""
    row = tx.one(f"SELECT MIN(rank_at) AS t FROM jobs WHERE kind IN ({', '.join('?' for _ in kinds)})"
                 " AND lease_owner IS NULL", kinds)
    return None if row is None else row["t"]


def dispatch_outlook(tx: Tx, now: int) -> tuple[bool, int | None]:
    """(a dispatcher round would find work now, the next wake-up) in one read-only statement.

    Work now: a job `select_due_jobs` would take (due, and free or its lease lapsed), or a
    concurrency slot `freed_limit_keys` would free. When there is none, an idle dispatcher skips
    its leasing transaction and sleeps until the next wake-up (`next_wakeup`)."""
    later = "GREATEST" if tx.dialect == "postgres" else "MAX"
    row = tx.one(
        "SELECT (SELECT 1 FROM jobs WHERE rank_at <= ? AND due_at <= ?"
        " AND (lease_expires_at IS NULL OR lease_expires_at < ?) LIMIT 1) AS due,"
        " (SELECT 1 FROM flow_slots s LEFT JOIN jobs j ON j.id = s.job_id AND j.lease_owner = s.owner"
        " AND j.lease_expires_at >= ? WHERE j.id IS NULL LIMIT 1) AS freed,"
        f" (SELECT MIN({later}(due_at, rank_at)) FROM (SELECT due_at, rank_at FROM jobs"
        " WHERE lease_owner IS NULL ORDER BY due_at LIMIT 32) AS f) AS free,"
        " (SELECT MIN(lease_expires_at) FROM jobs WHERE lease_owner IS NOT NULL) AS leased",
        (now, now, now, now))
    times = [t for t in (row["free"], row["leased"]) if t is not None]
    return row["due"] is not None or row["freed"] is not None, min(times) if times else None


def release_job(tx: Tx, job: Job) -> bool:
    """Finish a leased job. False when the lease was lost (someone else owns it now)."""
    return drop_settled_job(tx, job).rowcount == 1


def drop_settled_job(tx: Tx, job: Job) -> Any:
    """`release_job` for a caller that checked the lease already and ignores the outcome (a
    settlement, holding its run's lock): nothing read back, so no round trip of its own."""
    return tx.execute("DELETE FROM jobs WHERE id = ? AND lease_owner = ?", (job.id, job.lease_owner))


def retry_job(tx: Tx, job: Job, *, due_at: int, attempt: int) -> bool:
    """Queue a leased job again at due_at, keeping its priority shift (rank_at - due_at)."""
    cur = tx.execute(
        "UPDATE jobs SET attempt = ?, due_at = ?, rank_at = ? + (rank_at - due_at), lease_owner = NULL,"
        " lease_expires_at = NULL WHERE id = ? AND lease_owner = ?",
        (attempt, due_at, due_at, job.id, job.lease_owner),
    )
    return cur.rowcount == 1


def drop_run_jobs(tx: Tx, run_id: str, *, except_job: str | None = None) -> None:
    tx.execute("DELETE FROM jobs WHERE run_id = ? AND id <> ?", (run_id, except_job or ""))


def drop_run_work(tx: Tx, run_id: str, *, except_job: str | None = None) -> None:
    """An ended run's queued jobs (but `except_job`) and its waits."""
    if tx.dialect == "postgres":  # one round trip
        tx.execute("WITH j AS (DELETE FROM jobs WHERE run_id = ? AND id <> ?) DELETE FROM waits WHERE run_id = ?",
                   (run_id, except_job or "", run_id))
        return
    drop_run_jobs(tx, run_id, except_job=except_job)
    drop_run_waits(tx, run_id)


# Timers a test may fast-forward: a step.sleep's wake-up and a waitForEvent/invoke deadline.
FAST_FORWARD_KINDS = ("wake", "wait_timeout")


def fast_forward_run(tx: Tx, run_id: str, *, now: int) -> list[Job]:
    """Make the run's pending sleep and wait timers due now (keeping their priority shift)."""
    rows = tx.all(
        "SELECT * FROM jobs WHERE run_id = ? AND kind IN (?, ?) AND lease_owner IS NULL AND due_at > ?",
        (run_id, *FAST_FORWARD_KINDS, now),
    )
    jobs = [_job_from_row(r) for r in rows]
    for job in jobs:
        tx.execute("UPDATE jobs SET due_at = ?, rank_at = ? + (rank_at - due_at) WHERE id = ? AND lease_owner IS NULL",
                   (now, now, job.id))
    if jobs:
        notify_replicas(tx)
    return jobs


def jobs_of_run(tx: Tx, run_id: str) -> list[Job]:
    return [_job_from_row(r) for r in tx.all("SELECT * FROM jobs WHERE run_id = ? ORDER BY due_at", (run_id,))]


# Channels other replicas LISTEN on: new work to lease, and a changed set of functions.
JOBS_CHANNEL = "lockgate_jobs"
FUNCTIONS_CHANNEL = "lockgate_functions"


def notify_replicas(tx: Tx, channel: str = JOBS_CHANNEL) -> None:
    """Tell the other replicas when this transaction commits (PostgreSQL only; one process needs nothing)."""
    if tx.dialect == "postgres":
        tx.notify_on_commit(channel)  # one NOTIFY per channel and commit, however many writes asked


def release_leases_of(tx: Tx, owner: str) -> int:
    """Graceful shutdown: hand this process's leased jobs back at once."""
    cur = tx.execute("UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = ?", (owner,))
    if cur.rowcount:
        notify_replicas(tx)
    return cur.rowcount


def release_all_leases(tx: Tx, owner_prefix: str | None = None) -> int:
    """Single-node start-up: leases of a dead predecessor lapse at once."""
    cur = tx.execute("UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner IS NOT NULL")
    return cur.rowcount


def delete_jobs_by_prefix(tx: Tx, prefix: str) -> None:
    tx.execute("DELETE FROM jobs WHERE id LIKE ?", (prefix + "%",))


def queue_depth(tx: Tx) -> int:
    return tx.one("SELECT COUNT(*) AS n FROM jobs")["n"]


# -- waits ----------------------------------------------------------------------------


def insert_wait(tx: Tx, wait: Wait) -> None:
    tx.execute(
        "INSERT INTO waits (id, run_id, step_id, kind, event_name, match_path, match_value, expression, trigger,"
        " display_name, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (id) DO NOTHING",
        (
            wait.id, wait.run_id, wait.step_id, wait.kind, wait.event_name, wait.match_path,
            None if wait.match_path is None else _json(wait.match_value), wait.expression, _json(wait.trigger),
            wait.display_name, wait.created_at, wait.expires_at,
        ),
    )
    # An upsert that updates holds the key's row until commit, so housekeeping, which deletes keys
    # no pending wait uses, leaves it alone meanwhile (retention_operations.delete_unused).
    tx.execute("INSERT INTO wait_keys (event_name, match_path) VALUES (?, ?)"
               " ON CONFLICT (event_name, match_path) DO UPDATE SET match_path = excluded.match_path",
               (wait.event_name, wait.match_path or ""))


def _wait_from_row(row: Any) -> Wait:
    return Wait(
        id=row["id"], run_id=row["run_id"], step_id=row["step_id"], kind=row["kind"], event_name=row["event_name"],
        expression=row["expression"], trigger=orjson.loads(row["trigger"]), created_at=row["created_at"],
        expires_at=row["expires_at"], match_path=row["match_path"], match_value=_unjson(row["match_value"]),
        display_name=row["display_name"],
    )


def wait_paths(tx: Tx, event_name: str) -> list[str | None]:
    """The equality-key paths pending waits of this event name use (None: unindexed waits)."""
    rows = tx.all("SELECT match_path FROM wait_keys WHERE event_name = ?", (event_name,))
    return [r["match_path"] or None for r in rows]


def candidate_waits(tx: Tx, event_name: str, path: str | None, value: Any) -> list[Wait]:
    if path is None:
        rows = tx.all("SELECT * FROM waits WHERE event_name = ? AND match_path IS NULL ORDER BY created_at",
                      (event_name,))
    else:
        rows = tx.all(
            "SELECT * FROM waits WHERE event_name = ? AND match_path = ? AND match_value = ? ORDER BY created_at",
            (event_name, path, _json(value)),
        )
    return [_wait_from_row(r) for r in rows]


def take_wait(tx: Tx, wait_id: str) -> Wait | None:
    """Remove a wait; None if someone else (a timeout, another event) already resolved it."""
    row = tx.one("DELETE FROM waits WHERE id = ? RETURNING *", (wait_id,))
    return _wait_from_row(row) if row else None


def count_waits(tx: Tx) -> dict[str, int]:
    return {r["kind"]: r["n"] for r in tx.all("SELECT kind, COUNT(*) AS n FROM waits GROUP BY kind")}


def drop_run_waits(tx: Tx, run_id: str) -> None:
    tx.execute("DELETE FROM waits WHERE run_id = ?", (run_id,))
