"""SQL for retention and expiry: small batches the housekeeping task repeats until done.

Each function deletes at most `limit` rows of its kind and returns how many it deleted, so one
call is one short write transaction and the hot path never waits long behind it.
"""

from __future__ import annotations

from lockgate.models import FINAL_STATUSES
from lockgate.store.base import Tx

_FINAL = tuple(sorted(FINAL_STATUSES))
_FINAL_MARKS = ", ".join("?" for _ in _FINAL)


def _marks(values: list) -> str:
    return ", ".join("?" for _ in values)


def delete_finished_runs(tx: Tx, *, ended_before: int, limit: int) -> int:
    """Finished runs that ended before the cutoff, with their steps, trigger links and leftovers."""
    rows = tx.all(
        f"SELECT run_id FROM runs WHERE ended_at < ? AND status IN ({_FINAL_MARKS}) LIMIT ?",  # runs_ended (0004)
        (ended_before, *_FINAL, limit),
    )
    ids = [row["run_id"] for row in rows]
    if not ids:
        return 0
    marks = _marks(ids)
    for table in ("steps", "run_triggers", "flow_runs", "jobs"):  # waits go when a run ends
        tx.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", ids)
    tx.execute(f"DELETE FROM runs WHERE run_id IN ({marks})", ids)
    return len(ids)


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


def table_sizes(tx: Tx, tables: list[str]) -> dict[str, int]:
    return {table: tx.one(f"SELECT COUNT(*) AS n FROM {table}")["n"] for table in tables}
