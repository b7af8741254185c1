"""SQL for retention and expiry: small batches the housekeeping task repeats until done.

Each function deletes at most `limit` rows of its kind and returns how many it deleted, so one
call is one short write transaction and the hot path never waits long behind it.
"""

from __future__ import annotations

from lockgate.models import FINAL_STATUSES
from lockgate.qstash.models import FINAL_STATES as QSTASH_FINAL
from lockgate.store import health_operations as hops
from lockgate.store.base import Tx

_FINAL = tuple(sorted(FINAL_STATUSES))
_FINAL_MARKS = ", ".join("?" for _ in _FINAL)


def _marks(values: list) -> str:
    return ", ".join("?" for _ in values)


def delete_finished_runs(tx: Tx, *, ended_before: int, ended_from: int, limit: int) -> tuple[int, int | None]:
    """Finished runs that ended in [ended_from, ended_before), oldest first, with their steps,
    trigger links and leftovers. Returns (deleted, the last one's end time to resume from, or None
    when none is left). Resuming from there, not from the start of the index, keeps each batch from
    stepping over the entries of the rows earlier batches deleted (PostgreSQL keeps them until vacuum)."""
    # On PostgreSQL, rows another transaction holds (a replica's own sweep, an operator's action) are
    # skipped, not waited for: the next sweep takes them.
    skip_locked = " FOR UPDATE SKIP LOCKED" if tx.dialect == "postgres" else ""
    # The runs it deletes leave run_counts in this transaction; the share lock keeps housekeeping
    # elsewhere from moving the counted range until it commits.
    counted = hops.counted_range(tx, lock="share")
    rows = tx.all(
        f"SELECT run_id, function_id, status, ended_at FROM runs WHERE ended_at >= ? AND ended_at < ? AND status IN ({_FINAL_MARKS})"
        f" ORDER BY ended_at LIMIT ?{skip_locked}",  # runs_ended_set (0012)
        (ended_from, ended_before, *_FINAL, limit),
    )
    ids = [row["run_id"] for row in rows]
    if not ids:
        return 0, None
    marks = _marks(ids)
    for table in ("steps", "run_triggers", "flow_runs", "jobs"):  # waits go when a run ends
        tx.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", ids)
    tx.execute(f"DELETE FROM runs WHERE run_id IN ({marks})", ids)
    hops.uncount_deleted_runs(tx, rows, counted)
    return len(ids), rows[-1]["ended_at"]


def delete_unreferenced_events(tx: Tx, *, received_before: int, after_seq: int, limit: int) -> tuple[int, int | None]:
    """Among the next `limit` events after `after_seq` (oldest first) received before the cutoff,
    delete those no kept run was triggered by. Returns (deleted, last seq looked at, or None when
    no event older than the cutoff is left)."""
    rows = tx.all("SELECT seq, received_at FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit))
    old = []
    for row in rows:  # received_at grows with seq, bar clock steps: stop at the first young event
        if row["received_at"] >= received_before:
            break
        old.append(row["seq"])
    if not old:
        return 0, None
    low, high = old[0], old[-1]
    doomed = tx.all(
        "SELECT e.seq, e.internal_id FROM events e WHERE e.seq BETWEEN ? AND ? AND NOT EXISTS"
        " (SELECT 1 FROM run_triggers t WHERE t.event_internal_id = e.internal_id)",
        (low, high),
    )
    if doomed:
        seqs = [row["seq"] for row in doomed]
        internal_ids = sorted({row["internal_id"] for row in doomed})
        tx.execute(f"DELETE FROM flow_skips WHERE event_internal_id IN ({_marks(internal_ids)})", internal_ids)
        tx.execute(f"DELETE FROM events WHERE seq IN ({_marks(seqs)})", seqs)
    return len(doomed), high


def delete_finished_messages(tx: Tx, *, finished_before: int, limit: int) -> int:
    """QStash messages delivered, failed or cancelled before the cutoff (their grace period is over)."""
    rows = tx.all(f"SELECT seq FROM qstash_messages WHERE state IN ({_marks(QSTASH_FINAL)}) AND finished_at < ?"
                  " LIMIT ?", (*QSTASH_FINAL, finished_before, limit))  # qstash_messages_state
    seqs = [row["seq"] for row in rows]
    if seqs:
        tx.execute(f"DELETE FROM qstash_messages WHERE seq IN ({_marks(seqs)})", seqs)
    return len(seqs)


def delete_old_message_logs(tx: Tx, *, logged_before: int, after_seq: int, limit: int) -> tuple[int, int | None]:
    """QStash log entries logged before the cutoff, walked in `seq` order from `after_seq` (they are
    logged in that order) and stopping at the first young one. Returns (deleted, last seq or None)."""
    rows = tx.all("SELECT seq, logged_at FROM qstash_events WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit))
    seqs = []
    for row in rows:  # a filter on logged_at (not indexed) would read the whole table when none is old
        if row["logged_at"] >= logged_before:
            break
        seqs.append(row["seq"])
    if not seqs:
        return 0, None
    tx.execute(f"DELETE FROM qstash_events WHERE seq IN ({_marks(seqs)})", seqs)
    return len(seqs), seqs[-1]


# Rows whose window has lapsed behave exactly as absent ones, so deleting them changes nothing.
_EXPIRING = {
    "unique_keys": ("key", "expires_at"),  # idempotency keys, event-id dedupe per function
    "qstash_dedup": ("dedup_key", "expires_at"),  # QStash deduplication ids
    "flow_buckets": ("bucket_key", "tat"),  # throttle / rate-limit state: max(tat, now) is now
}


def delete_expired(tx: Tx, table: str, *, now: int, limit: int) -> int:
    key, expiry = _EXPIRING[table]
    rows = tx.all(f"SELECT {key} FROM {table} WHERE {expiry} <= ? LIMIT ?", (now, limit))
    keys = [row[key] for row in rows]
    if keys:
        tx.execute(f"DELETE FROM {table} WHERE {key} IN ({_marks(keys)}) AND {expiry} <= ?", (*keys, now))
    return len(keys)


EXPIRING_TABLES = tuple(_EXPIRING)


# -- rows kept while something uses them ---------------------------------------------------
# One row per wait key, concurrency key or singleton key: needed while a wait, a call or a run
# uses the key, deleted after. The hot path creates or locks such a row with an upsert in the
# transaction that uses it, so housekeeping takes only rows nobody holds (SKIP LOCKED) and
# deletes them in a later statement, which on PostgreSQL sees everything committed before it:
# a user that committed first is seen and keeps its row; one that comes after finds no row and
# creates it again. (SQLite has one writer: nothing runs between the statements.)

_WAIT_KEY_UNUSED = ("NOT EXISTS (SELECT 1 FROM waits w WHERE w.event_name = k.event_name"
                    " AND (w.match_path = k.match_path OR (k.match_path = '' AND w.match_path IS NULL)))")
_LIMIT_UNUSED = ("NOT EXISTS (SELECT 1 FROM flow_slots s WHERE s.limit_key = k.limit_key)"
                 " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.lease_owner = 'flow:' || k.limit_key)")
_SINGLETON_UNUSED = (f"NOT EXISTS (SELECT 1 FROM runs r WHERE r.run_id = k.run_id"
                     f" AND r.status NOT IN ({_FINAL_MARKS}))")

_IN_USE_KEYS = {
    # table: (key columns, condition under which the row serves nobody, its parameters)
    "wait_keys": (("event_name", "match_path"), _WAIT_KEY_UNUSED, ()),  # no pending wait of that name and path
    "flow_limits": (("limit_key",), _LIMIT_UNUSED, ()),  # no call holds a slot or is parked on it
    "flow_singletons": (("singleton_key",), _SINGLETON_UNUSED, _FINAL),  # its run has ended (or is gone)
}


def delete_unused(tx: Tx, table: str, *, limit: int) -> int:
    columns, unused, params = _IN_USE_KEYS[table]
    cols = ", ".join(columns)
    rows = tx.all(f"SELECT {cols} FROM {table} k WHERE {unused} LIMIT ?", (*params, limit))
    if not rows:
        return 0
    keys = [tuple(row[c] for c in columns) for row in rows]
    match = _key_match(columns, keys)
    flat = [value for key in keys for value in key]
    if tx.dialect == "postgres":
        held = tx.all(f"SELECT {cols} FROM {table} WHERE {match} ORDER BY {cols} FOR UPDATE SKIP LOCKED", flat)
        keys = [tuple(row[c] for c in columns) for row in held]
        if not keys:
            return 0
        match = _key_match(columns, keys)
        flat = [value for key in keys for value in key]
    cur = tx.execute(f"DELETE FROM {table} AS k WHERE {match} AND {unused}", (*flat, *params))
    return cur.rowcount


def _key_match(columns: tuple[str, ...], keys: list[tuple]) -> str:
    if len(columns) == 1:
        return f"{columns[0]} IN ({_marks(keys)})"
    row = "(" + ", ".join("?" for _ in columns) + ")"
    return f"({', '.join(columns)}) IN ({', '.join(row for _ in keys)})"


IN_USE_TABLES = tuple(_IN_USE_KEYS)

# Connect rows of a replica or worker that stopped without saying so (kill -9, lost host): readers
# ignore them after 15 s of silence; an hour later they go.
CONNECT_SILENT_MS = 3_600_000


def delete_silent_connect_rows(tx: Tx, *, now: int) -> int:
    before = now - CONNECT_SILENT_MS
    workers = tx.execute("DELETE FROM connect_workers WHERE last_heartbeat_at < ?", (before,)).rowcount
    gateways = tx.execute("DELETE FROM connect_gateways WHERE heartbeat_at < ?", (before,)).rowcount
    requests = tx.execute("DELETE FROM connect_requests WHERE created_at < ?", (before,)).rowcount
    return workers + gateways + requests


def table_sizes(tx: Tx, tables: list[str]) -> dict[str, int]:
    return {table: tx.one(f"SELECT COUNT(*) AS n FROM {table}")["n"] for table in tables}


# -- table statistics and dead rows ------------------------------------------------------------

SQLITE_ANALYSIS_LIMIT = 1000  # rows ANALYZE samples per index: milliseconds at any size, good enough for plans


def analyze_sqlite(tx: Tx) -> None:
    """Refresh SQLite's planner statistics. Without them SQLite guesses, and at a few hundred thousand
    runs the retention walk picked a status index and sorted (225 ms a batch instead of ~1)."""
    tx.execute(f"PRAGMA analysis_limit = {SQLITE_ANALYSIS_LIMIT}")
    tx.execute("ANALYZE")


def holds_runs(tx: Tx, at_least: int) -> bool:
    """Whether `runs` has at least this many rows, reading no more than that."""
    return tx.one("SELECT COUNT(*) AS n FROM (SELECT 1 FROM runs LIMIT ?) r", (at_least,))["n"] >= at_least


# A table is vacuumed once this many rows are dead and they are a fifth of its live rows
# (autovacuum's default scale factor), analyzed once this many rows changed and a tenth.
DEAD_ROWS_MIN = 1000
CHANGED_ROWS_MIN = 1000


def tables_left_to_us(tx: Tx) -> list[tuple[str, str]]:
    """Tables of this schema that autovacuum does not look after (it is off on the server, or for the
    table) and that need it now: (table, "vacuum" | "analyze"). PostgreSQL only."""
    rows = tx.all(
        "SELECT s.relname AS name,"
        " CASE WHEN s.n_dead_tup >= ? AND s.n_dead_tup >= s.n_live_tup / 5 THEN 'vacuum' ELSE 'analyze' END AS need"
        " FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
        " WHERE s.schemaname = current_schema()"
        " AND (current_setting('autovacuum') = 'off'"
        "      OR COALESCE(c.reloptions, '{}'::text[]) @> ARRAY['autovacuum_enabled=false'])"
        " AND ((s.n_dead_tup >= ? AND s.n_dead_tup >= s.n_live_tup / 5)"
        "      OR (s.n_mod_since_analyze >= ? AND s.n_mod_since_analyze >= s.n_live_tup / 10))"
        " ORDER BY s.n_dead_tup DESC",
        (DEAD_ROWS_MIN, DEAD_ROWS_MIN, CHANGED_ROWS_MIN))
    return [(row["name"], row["need"]) for row in rows]


def autovacuum_is_off(tx: Tx) -> bool:
    return tx.one("SELECT current_setting('autovacuum') = 'off' AS off")["off"]


def vacuum_table(tx: Tx, table: str, need: str) -> None:
    """VACUUM (ANALYZE) or ANALYZE one table, paced like autovacuum (cost delay) so that it reads
    and dirties pages in small steps beside the hot path. Runs outside any transaction (autocommit)."""
    if not table.replace("_", "").isalnum():
        raise ValueError(f"not a table name: {table!r}")
    def alone(sql: str) -> None:  # its result read at once: sent by itself, never joined to a batch
        tx.execute(sql).rowcount

    alone("SET vacuum_cost_delay = 2")
    try:
        alone(f"VACUUM (ANALYZE) {table}" if need == "vacuum" else f"ANALYZE {table}")
    finally:
        alone("RESET vacuum_cost_delay")
