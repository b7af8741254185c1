"""SQL of flow control (concurrency slots, GCRA buckets, debounce/batch windows, skips).

Same rules as `operations`: `?` placeholders, portable statements, `tx.dialect` only for
row locks. Concurrency is enforced here, in the transaction that leases a call, so the
limit holds across workers and replicas: the per-key row in `flow_limits` is locked
(an upsert, which holds the row lock on PostgreSQL; SQLite has one writer) before slots are counted.
"""

from __future__ import annotations

from typing import Any

import orjson

from lockgate.store.base import Tx
from lockgate.store.operations import where_in

PARK_PREFIX = "flow:"


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


# -- concurrency ------------------------------------------------------------------------


def set_run_limits(tx: Tx, run_id: str, limits: list[list[Any]], priority_ms: int = 0) -> None:
    tx.execute(
        "INSERT INTO flow_runs (run_id, limits, priority_ms) VALUES (?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
        (run_id, _json(limits), priority_ms),
    )


def run_limits(tx: Tx, run_id: str) -> tuple[list[list[Any]], int] | None:
    """The run's concurrency limits and its priority shift, if it has either."""
    row = tx.one("SELECT limits, priority_ms FROM flow_runs WHERE run_id = ?", (run_id,))
    return None if row is None else (orjson.loads(row["limits"]), row["priority_ms"])


def runs_limits(tx: Tx, run_ids: list[str]) -> dict[str, tuple[list[list[Any]], int]]:
    """`run_limits` of several runs at once; runs without any are left out."""
    found: dict[str, tuple[list[list[Any]], int]] = {}
    for i in range(0, len(run_ids), 500):
        condition, params = where_in(tx, "run_id", run_ids[i:i + 500])
        for row in tx.all(f"SELECT run_id, limits, priority_ms FROM flow_runs WHERE {condition}", params):
            found[row["run_id"]] = (orjson.loads(row["limits"]), row["priority_ms"])
    return found


def lock_limit(tx: Tx, limit_key: str, capacity: int) -> None:
    """Create or lock the key's row; the capacity follows the function's latest config."""
    # The upsert locks the row on PostgreSQL until commit, whether it inserted or updated.
    tx.execute(
        "INSERT INTO flow_limits (limit_key, capacity) VALUES (?, ?)"
        " ON CONFLICT (limit_key) DO UPDATE SET capacity = excluded.capacity",
        (limit_key, capacity),
    )


def live_slots(tx: Tx, limit_key: str, now: int, *, excluding_job: str | None = None) -> int:
    """Calls holding a slot of this key right now: their job is still leased by the slot's owner."""
    row = tx.one(
        "SELECT COUNT(*) AS n FROM flow_slots s JOIN jobs j ON j.id = s.job_id AND j.lease_owner = s.owner"
        " WHERE s.limit_key = ? AND j.lease_expires_at >= ? AND s.job_id <> ?",
        (limit_key, now, excluding_job or ""),
    )
    return row["n"]


def take_slot(tx: Tx, limit_key: str, job_id: str, owner: str) -> None:
    tx.execute(
        "INSERT INTO flow_slots (limit_key, job_id, owner) VALUES (?, ?, ?)"
        " ON CONFLICT (limit_key, job_id) DO UPDATE SET owner = excluded.owner",
        (limit_key, job_id, owner),
    )


def park_job(tx: Tx, job_id: str, limit_key: str, until: int, priority_ms: int = 0) -> None:
    """Hold a call back until a slot of `limit_key` frees (or, as a safety net, until `until`).

    Parked calls come back in rank order; the run's priority shifts the rank of every call."""
    tx.execute(
        "UPDATE jobs SET lease_owner = ?, lease_expires_at = ?, rank_at = due_at - ? WHERE id = ?",
        (PARK_PREFIX + limit_key, until, priority_ms, job_id),
    )


def freed_limit_keys(tx: Tx, now: int) -> list[str]:
    """Delete slots whose call settled, failed or lost its lease; return the keys they freed."""
    rows = tx.all(
        "SELECT s.limit_key, s.job_id FROM flow_slots s LEFT JOIN jobs j ON j.id = s.job_id"
        " AND j.lease_owner = s.owner AND j.lease_expires_at >= ? WHERE j.id IS NULL",
        (now,),
    )
    if not rows:
        return []
    tx.executemany("DELETE FROM flow_slots WHERE limit_key = ? AND job_id = ?",
                   [(r["limit_key"], r["job_id"]) for r in rows])
    return sorted({r["limit_key"] for r in rows})


def limit_capacity(tx: Tx, limit_key: str) -> int | None:
    row = tx.one("SELECT capacity FROM flow_limits WHERE limit_key = ?", (limit_key,))
    return None if row is None else row["capacity"]


def unpark(tx: Tx, limit_key: str, count: int) -> int:
    """Make the first `count` parked calls of a key leasable again (queue order: rank_at)."""
    if count <= 0:
        return 0
    rows = tx.all(
        "SELECT id FROM jobs WHERE lease_owner = ? ORDER BY rank_at, created_at LIMIT ?",
        (PARK_PREFIX + limit_key, count),
    )
    tx.executemany("UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
                   [(r["id"],) for r in rows])
    return len(rows)


def parked_count(tx: Tx, limit_key: str) -> int:
    return tx.one("SELECT COUNT(*) AS n FROM jobs WHERE lease_owner = ?", (PARK_PREFIX + limit_key,))["n"]


def parked_limit_of_run(tx: Tx, run_id: str) -> str | None:
    """The limit key one of this run's calls is parked on, if any."""
    row = tx.one("SELECT lease_owner FROM jobs WHERE run_id = ? AND lease_owner LIKE ? LIMIT 1",
                 (run_id, PARK_PREFIX + "%"))
    return None if row is None else row["lease_owner"][len(PARK_PREFIX):]


def waits_of_run(tx: Tx, run_id: str) -> list[dict[str, Any]]:
    rows = tx.all("SELECT kind, event_name, display_name, expires_at FROM waits WHERE run_id = ? ORDER BY expires_at",
                  (run_id,))
    return [{"kind": r["kind"], "event_name": r["event_name"], "display_name": r["display_name"],
             "expires_at": r["expires_at"]} for r in rows]


# -- throttle and rate limit (GCRA) ----------------------------------------------------


# Reads that decide a write go through an upsert that RETURNs the row: on PostgreSQL the row is
# then locked until commit even if it did not exist before (a plain SELECT ... FOR UPDATE locks
# nothing when the row is missing, so two replicas could both act on "absent").


def bucket_tat(tx: Tx, bucket_key: str, now: int) -> int:
    """The key's theoretical arrival time (`now` for a new key), locked for this transaction."""
    row = tx.one(
        "INSERT INTO flow_buckets (bucket_key, tat) VALUES (?, ?)"
        " ON CONFLICT (bucket_key) DO UPDATE SET tat = flow_buckets.tat RETURNING tat",
        (bucket_key, now),
    )
    return row["tat"]


def set_bucket_tat(tx: Tx, bucket_key: str, tat: int) -> None:
    tx.execute(
        "INSERT INTO flow_buckets (bucket_key, tat) VALUES (?, ?) ON CONFLICT (bucket_key) DO UPDATE SET tat = excluded.tat",
        (bucket_key, tat),
    )


# -- debounce and batch windows --------------------------------------------------------


def _window(row: Any) -> dict[str, Any]:
    return {"function_id": row["function_id"], "kind": row["kind"], "events": orjson.loads(row["events"]),
            "first_at": row["first_at"]}


def open_window(tx: Tx, window_key: str, function_id: str, kind: str, now: int) -> dict[str, Any]:
    """The window of this key, locked; a new one (no events yet) opens at `now`."""
    row = tx.one(
        "INSERT INTO flow_windows (window_key, function_id, kind, events, first_at) VALUES (?, ?, ?, '[]', ?)"
        " ON CONFLICT (window_key) DO UPDATE SET kind = flow_windows.kind RETURNING *",
        (window_key, function_id, kind, now),
    )
    return _window(row)


def set_window_events(tx: Tx, window_key: str, events: list[Any]) -> None:
    tx.execute("UPDATE flow_windows SET events = ? WHERE window_key = ?", (_json(events), window_key))


def take_window(tx: Tx, window_key: str) -> dict[str, Any] | None:
    row = tx.one("DELETE FROM flow_windows WHERE window_key = ? RETURNING *", (window_key,))
    return None if row is None else _window(row)


def move_timer(tx: Tx, job_id: str, due_at: int) -> bool:
    """Push an unleased timer job to a new time; False if it does not exist (or is running)."""
    cur = tx.execute(
        "UPDATE jobs SET due_at = ?, rank_at = ? WHERE id = ? AND lease_owner IS NULL", (due_at, due_at, job_id)
    )
    return cur.rowcount == 1


def drop_timer(tx: Tx, job_id: str) -> None:
    """Remove a window's timer that is not running (a full batch flushes before its timeout)."""
    tx.execute("DELETE FROM jobs WHERE id = ? AND lease_owner IS NULL", (job_id,))


# -- singleton and skips ---------------------------------------------------------------


def singleton_run(tx: Tx, singleton_key: str) -> str | None:
    """The key's latest run id (None for a new key), locked for this transaction."""
    row = tx.one(
        "INSERT INTO flow_singletons (singleton_key, run_id) VALUES (?, '')"
        " ON CONFLICT (singleton_key) DO UPDATE SET run_id = flow_singletons.run_id RETURNING run_id",
        (singleton_key,),
    )
    return row["run_id"] or None


def set_singleton_run(tx: Tx, singleton_key: str, run_id: str) -> None:
    tx.execute(
        "INSERT INTO flow_singletons (singleton_key, run_id) VALUES (?, ?)"
        " ON CONFLICT (singleton_key) DO UPDATE SET run_id = excluded.run_id",
        (singleton_key, run_id),
    )


def record_skip(tx: Tx, event_internal_id: str, function_id: str, function_slug: str, reason: str, at: int) -> None:
    tx.execute(
        "INSERT INTO flow_skips (event_internal_id, function_id, function_slug, reason, at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (event_internal_id, function_id) DO NOTHING",
        (event_internal_id, function_id, function_slug, reason, at),
    )


def skips_of_event(tx: Tx, event_internal_id: str) -> list[dict[str, Any]]:
    rows = tx.all(
        "SELECT function_id, function_slug, reason, at FROM flow_skips WHERE event_internal_id = ? ORDER BY at",
        (event_internal_id,),
    )
    return [{"function_id": r["function_id"], "function_slug": r["function_slug"], "reason": r["reason"],
             "at": r["at"]} for r in rows]
