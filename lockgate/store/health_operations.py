"""The health figures (dashboard Health page, `/v1/stats`, `/metrics`): small indexed queries."""

from __future__ import annotations

from typing import Any

from lockgate.store.base import Tx

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


def runs_by_function(tx: Tx) -> dict[str, dict[str, int]]:
    """{function id: {status: count}} over every stored run (read from an index)."""
    out: dict[str, dict[str, int]] = {}
    for r in tx.all("SELECT function_id, status, COUNT(*) AS n FROM runs GROUP BY function_id, status"):
        out.setdefault(r["function_id"], {})[r["status"]] = r["n"]
    return out
