"""The health figures (dashboard Health page, `/v1/stats`, `/metrics`): small indexed queries."""

from __future__ import annotations

from typing import Any

from lockgate.models import FINAL_STATUSES, RunStatus
from lockgate.store.base import Tx

_FINAL = tuple(sorted(FINAL_STATUSES))
_UNFINISHED = tuple(sorted(s.value for s in RunStatus if s.value not in FINAL_STATUSES))
_FINAL_MARKS = ", ".join("?" for _ in _FINAL)
# A range of runs_ended_set filtered on final statuses: written so that no index can serve the
# status test, or SQLite takes runs_status_keyset (every finished run: 5 s at 5 M runs) for a range
# of a few hundred rows.
_IS_FINAL = f"status || '' IN ({_FINAL_MARKS})"
_UNFINISHED_MARKS = ", ".join("?" for _ in _UNFINISHED)

def throughput(tx: Tx, *, since: int, bucket_ms: int) -> list[dict[str, Any]]:
    """Runs finished per bucket since `since`, by status, with their mean duration in ms."""
    rows = tx.all(
        "SELECT ended_at / ? AS bucket, status, COUNT(*) AS n, AVG(ended_at - created_at) AS mean_ms"
        " FROM runs WHERE ended_at >= ? GROUP BY bucket, status",
        (bucket_ms, since),
    )
    return [{"bucket": int(r["bucket"]) * bucket_ms, "status": r["status"], "n": r["n"],
             "mean_ms": float(r["mean_ms"] or 0)} for r in rows]


def runs_started_since(tx: Tx, since: int) -> int:
    return tx.one("SELECT COUNT(*) AS n FROM runs WHERE created_at >= ?", (since,))["n"]


def oldest_due_job(tx: Tx, now: int) -> int | None:
    """due_at of the oldest free job that is due (its lateness is now - due_at), or None."""
    row = tx.one("SELECT MIN(due_at) AS t FROM jobs WHERE lease_owner IS NULL AND due_at <= ?", (now,))
    return None if row is None or row["t"] is None else int(row["t"])


def due_job_count(tx: Tx, now: int) -> int:
    return tx.one("SELECT COUNT(*) AS n FROM jobs WHERE lease_owner IS NULL AND due_at <= ?", (now,))["n"]


# The counted range goes in as values, not as a subquery: PostgreSQL plans `ended_at >= (SELECT …)`
# for a third of the table (a bitmap scan of millions of rows), a value for the few rows it holds.
# The range is read again in the same statement (one snapshot with run_counts): if housekeeping
# moved it in between, the read is done again. Both ranges have two bounds (END_OF_TIME): with one,
# SQLite scanned a whole (function, status) index for the grouping's order (6 to 10 s at 5 M runs)
# instead of taking the few rows from runs_ended_set.
END_OF_TIME = 2**62
BY_FUNCTION_SQL = (
    "SELECT function_id, status, SUM(n) AS n FROM ("
    " SELECT function_id, status, n FROM run_counts"
    " UNION ALL"
    " SELECT function_id, status, COUNT(*) AS n FROM runs WHERE ended_at >= ? AND ended_at < ?"
    f"  AND {_IS_FINAL} GROUP BY function_id, status"  # runs_ended_set: since the last count
    " UNION ALL"
    " SELECT function_id, status, COUNT(*) AS n FROM runs WHERE ended_at >= ? AND ended_at < ?"
    f"  AND {_IS_FINAL} GROUP BY function_id, status"  # runs_ended_set: about to be deleted
    " UNION ALL"
    # Queued and running runs, found in runs_status_keyset (SQLite would otherwise scan all of
    # runs_function_status_keyset, which holds the function too, at many functions)
    " SELECT function_id, status, COUNT(*) AS n FROM runs WHERE run_id IN"
    f"  (SELECT run_id FROM runs WHERE status IN ({_UNFINISHED_MARKS})) GROUP BY function_id, status"
    ") c GROUP BY function_id, status"
    " UNION ALL SELECT '', '#range', ended_from FROM run_counts_range WHERE name = 'finished'"
    " UNION ALL SELECT '', '#range end', ended_before FROM run_counts_range WHERE name = 'finished'")


def by_function_params(ended_from: int, ended_before: int) -> tuple:
    return (ended_before, END_OF_TIME, *_FINAL, -END_OF_TIME, ended_from, *_FINAL, *_UNFINISHED)


def runs_by_function(tx: Tx) -> dict[str, dict[str, int]]:
    """{function id: {status: count}} over every stored run, exact, without reading them all:
    the finished runs counted in `run_counts` (0014) plus, in the same statement (one snapshot),
    a live count of the finished runs outside its range (the few that ended since housekeeping
    last counted, and those about to be deleted) and of the unfinished ones."""
    for _ in range(20):  # the range moves once a batch at most: a second try is rare, a third rarer
        ended_from, ended_before = counted_range(tx) or (0, 0)
        out: dict[str, dict[str, int]] = {}
        seen = {"#range": 0, "#range end": 0}
        for r in tx.all(BY_FUNCTION_SQL, by_function_params(ended_from, ended_before)):
            if r["status"] in seen and r["function_id"] == "":
                seen[r["status"]] = int(r["n"])
            elif r["n"]:
                out.setdefault(r["function_id"], {})[r["status"]] = int(r["n"])
        if (seen["#range"], seen["#range end"]) == (ended_from, ended_before):
            break
    return out


def total_by_status(by_function: dict[str, dict[str, int]]) -> dict[str, int]:
    """{status: count} over all functions, from `runs_by_function`'s answer."""
    out: dict[str, int] = {}
    for counts in by_function.values():
        for status, n in counts.items():
            out[status] = out.get(status, 0) + n
    return out


def runs_by_status(tx: Tx) -> dict[str, int]:
    return total_by_status(runs_by_function(tx))


# -- keeping run_counts (housekeeping) ---------------------------------------------------------


def counted_range(tx: Tx, *, lock: str = "") -> tuple[int, int] | None:
    """(ended_from, ended_before) of run_counts. `lock`: on PostgreSQL, "update" for housekeeping
    moving the range (one replica at a time: the others wait for the row) or "share" for a
    retention delete (it must not see the range move under it); SQLite has one writer."""
    suffix = f" FOR {lock.upper()}" if lock and tx.dialect == "postgres" else ""
    row = tx.one(f"SELECT ended_from, ended_before FROM run_counts_range WHERE name = 'finished'{suffix}")
    return None if row is None else (int(row["ended_from"]), int(row["ended_before"]))


def _batch_end(tx: Tx, start: int, end: int, limit: int) -> int:
    """Where a batch of at most about `limit` finished runs from `start` stops (exclusive), at most `end`."""
    edge = tx.one("SELECT ended_at FROM runs WHERE ended_at >= ? AND ended_at < ? ORDER BY ended_at"
                  " LIMIT 1 OFFSET ?", (start, end, limit))  # runs_ended_set
    if edge is None:
        return end
    return max(int(edge["ended_at"]), start + 1)  # many runs ending at the same millisecond: take them all


def _finished_between(tx: Tx, start: int, end: int) -> list[tuple[str, str, int]]:
    rows = tx.all("SELECT function_id, status, COUNT(*) AS n FROM runs WHERE ended_at >= ? AND ended_at < ?"
                  f" AND {_IS_FINAL} GROUP BY function_id, status", (start, end, *_FINAL))  # runs_ended_set
    return [(r["function_id"], r["status"], int(r["n"])) for r in rows]


def _add_counts(tx: Tx, counts: list[tuple[str, str, int]], sign: int) -> None:
    for function_id, status, n in counts:
        tx.execute("INSERT INTO run_counts (function_id, status, n) VALUES (?, ?, ?) ON CONFLICT (function_id, status)"
                   " DO UPDATE SET n = run_counts.n + excluded.n", (function_id, status, sign * n))
    if sign < 0 and counts:
        tx.execute("DELETE FROM run_counts WHERE n = 0")


def count_finished_runs(tx: Tx, *, ended_before: int, limit: int) -> int | None:
    """Raise the counted range's end towards `ended_before`, adding the finished runs that ended in
    between, at most about `limit` of them. Returns the new end while more is left, else None."""
    found = counted_range(tx, lock="update")
    if found is None or found[1] >= ended_before:
        return None
    start = found[1]
    end = _batch_end(tx, start, ended_before, limit)
    _add_counts(tx, _finished_between(tx, start, end), +1)
    tx.execute("UPDATE run_counts_range SET ended_before = ? WHERE name = 'finished'", (end,))
    return end if end < ended_before else None


def uncount_finished_runs(tx: Tx, *, ended_from: int, limit: int) -> int | None:
    """Raise the counted range's start towards `ended_from` (never past its end), taking away the
    finished runs that ended in between, at most about `limit` of them: they are counted live until
    retention deletes them. Returns the new start while more is left, else None."""
    found = counted_range(tx, lock="update")
    if found is None:
        return None
    start, stop = found[0], min(ended_from, found[1])
    if start >= stop:
        return None
    end = _batch_end(tx, start, stop, limit)
    _add_counts(tx, _finished_between(tx, start, end), -1)
    tx.execute("UPDATE run_counts_range SET ended_from = ? WHERE name = 'finished'", (end,))
    return end if end < stop else None


def uncount_deleted_runs(tx: Tx, deleted: list[dict[str, Any]], counted: tuple[int, int] | None) -> None:
    """Take the runs a retention batch deletes (function_id, status, ended_at) out of run_counts,
    those of them in the counted range. Same transaction as the delete, with the range read
    under a share lock (`counted_range(lock="share")`)."""
    if counted is None:
        return
    start, end = counted
    gone: dict[tuple[str, str], int] = {}
    for run in deleted:
        if start <= run["ended_at"] < end and run["status"] in FINAL_STATUSES:
            key = (run["function_id"], run["status"])
            gone[key] = gone.get(key, 0) + 1
    _add_counts(tx, [(f, s, n) for (f, s), n in gone.items()], -1)
