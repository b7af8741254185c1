"""What one retention batch costs on PostgreSQL, and what made it dearer.

    LOCKGATE_TEST_DB_TAG=ops .venv/bin/python bench/retention_batches.py --runs 200000

Fills a fresh database with finished runs (two steps and a trigger link each, inside the
database), then times 150 delete batches of 100 runs three ways, taking turns batch by batch: the loop retention used before
(every batch starts again at the oldest entry of `runs_ended`, commit waits for the WAL flush),
the loop it uses now (each batch resumes where the last stopped), and the same with
`synchronous_commit = off`, as housekeeping's own connection commits. The database is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lockgate.models import FINAL_STATUSES  # noqa: E402
from lockgate.store import retention_operations as rops  # noqa: E402
from lockgate.store.postgres import PostgresStore, PostgresTx  # noqa: E402
from tests import pgtools  # noqa: E402

BATCH = 100
FINAL = tuple(sorted(FINAL_STATUSES))


def fill(uri: str, runs: int) -> None:
    store = PostgresStore(uri, pool_size=2)  # opening it applies the schema
    asyncio.run(store.open())
    asyncio.run(store.close())
    run_id = "'r' || lpad(i::text, 20, '0')"
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(f"INSERT INTO runs (run_id, function_id, function_slug, function_version, status, events,"
                     f" event_ids, created_at, started_at, ended_at) SELECT {run_id}, 'f' || (i % 3), 'app-f', 1,"
                     f" 'Completed', '[{{\"name\":\"x\"}}]', '[\"e\"]', 1000 + i, 1000 + i, 1000 + i"
                     f" FROM generate_series(1, {runs}) i")
        conn.execute(f"INSERT INTO steps (run_id, step_id, op, status, memo) SELECT {run_id}, md5(i::text || s::text),"
                     f" 'StepRun', 'completed', '{{\"data\":1}}' FROM generate_series(1, {runs}) i,"
                     f" generate_series(1, 2) s")
        conn.execute(f"INSERT INTO run_triggers (event_internal_id, run_id) SELECT 'e' || i, {run_id}"
                     f" FROM generate_series(1, {runs}) i")
        conn.execute("VACUUM ANALYZE")


def delete_from_the_start(tx: PostgresTx) -> None:
    """The loop before: the oldest finished runs, found from the start of `runs_ended` every time."""
    marks = ", ".join("?" for _ in FINAL)
    rows = tx.all(f"SELECT run_id FROM runs WHERE ended_at < ? AND status IN ({marks}) LIMIT ?",
                  (10**13, *FINAL, BATCH))
    ids = [row["run_id"] for row in rows]
    id_marks = ", ".join("?" for _ in ids)
    for table in ("steps", "run_triggers", "flow_runs", "jobs", "runs"):
        tx.execute(f"DELETE FROM {table} WHERE run_id IN ({id_marks})", ids)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--batches", type=int, default=150, help="timed batches per loop")
    args = parser.parse_args()
    uri = pgtools.create_database()
    try:
        fill(uri, args.runs)
        conn = psycopg.connect(uri, autocommit=False, row_factory=dict_row)
        tx = PostgresTx(conn)
        cursor = [0]

        def resume_where_stopped(tx: PostgresTx) -> None:
            _, last = rops.delete_finished_runs(tx, ended_before=10**13, ended_from=cursor[0], limit=BATCH)
            cursor[0] = last or cursor[0]

        loops = (
            ("before: from the start of runs_ended, synchronous commit", delete_from_the_start, "on"),
            ("now: from where the last batch stopped, synchronous commit", resume_where_stopped, "on"),
            ("now, synchronous_commit = off (housekeeping's connection)", resume_where_stopped, "off"),
        )
        print(f"{args.runs:,} finished runs; {args.batches} batches of {BATCH} per loop, the loops taking turns"
              f" batch by batch so the machine's load falls on each alike (shared machine)")
        times: dict[str, list[float]] = {label: [] for label, _, _ in loops}
        for _ in range(args.batches):
            for label, batch, sync in loops:
                started = time.perf_counter()
                conn.execute(f"SET LOCAL synchronous_commit = {sync}")
                batch(tx)
                conn.commit()
                times[label].append((time.perf_counter() - started) * 1000)
        for label, took in times.items():
            print(f"  {label:<60} first 10 p50 {statistics.median(took[:10]):5.1f} ms, last 10 p50"
                  f" {statistics.median(took[-10:]):5.1f} ms, mean {statistics.mean(took):5.1f} ms")
        conn.close()
    finally:
        pgtools.drop_database(uri)


if __name__ == "__main__":
    main()
