"""Run counts by function and status (Health page, /v1/stats, /metrics, Functions page, run counts)
stay exact while runs finish, housekeeping counts and uncounts, retention deletes and writes go on,
on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import asyncio

import pytest

from lockgate.engine import health_snapshot, run_search
from lockgate.engine.retention import LATE_COMMIT_MS, Housekeeping, Retention
from lockgate.models import Run, RunFilter, now_ms
from lockgate.store import health_operations as hops
from lockgate.store import operations as ops
from lockgate.store import retention_operations as rops
from lockgate.store.postgres import PostgresStore
from lockgate.store.sqlite import SQLiteStore

DAY_MS = 86_400_000


async def _open(tmp_path, backend, uri=None):
    if backend.name == "postgres":
        s = PostgresStore(uri or backend.new_database(), pool_size=4)
    else:
        s = SQLiteStore(str(tmp_path))
    await s.open()
    return s


@pytest.fixture
async def store(tmp_path, backend):
    s = await _open(tmp_path, backend)
    yield s
    await s.close()


def _run(run_id: str, function_id: str, status: str, at: int, ended: bool = True) -> Run:
    return Run(run_id=run_id, function_id=function_id, function_slug=f"app-{function_id}", function_version=1,
               status=status, events=[{"name": "e"}], event_ids=[], created_at=at, started_at=at,
               ended_at=at + 10 if ended else None)


def _seed(tx, prefix: str, at: int, n: int) -> None:
    """n runs per function of f1 and f2 at `at`, cycling through the statuses."""
    statuses = ["Completed", "Completed", "Failed", "Cancelled", "Running", "Queued"]
    for fn in ("f1", "f2"):
        for i in range(n):
            status = statuses[i % len(statuses)]
            ops.insert_run(tx, _run(f"{prefix}-{fn}-{i}", fn, status, at + i, ended=status not in ("Running", "Queued")))


def _truth(tx) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in tx.all("SELECT function_id, status, COUNT(*) AS n FROM runs GROUP BY function_id, status"):
        out.setdefault(r["function_id"], {})[r["status"]] = r["n"]
    return out


async def _assert_exact(store) -> dict[str, dict[str, int]]:
    counted, truth = await store.read(lambda tx: (hops.runs_by_function(tx), _truth(tx)))
    assert counted == truth
    snapshot = await store.read(health_snapshot._read, now_ms())
    by_status: dict[str, int] = {}
    for counts in truth.values():
        for status, n in counts.items():
            by_status[status] = by_status.get(status, 0) + n
    assert snapshot["runs"] == by_status
    assert {f["function_id"]: f["runs"] for f in snapshot["functions"]} == truth
    return truth


async def _stored(store) -> tuple[int, tuple[int, int]]:
    """Runs held in run_counts, and its counted range."""
    return await store.read(lambda tx: (tx.one("SELECT COALESCE(SUM(n), 0) AS n FROM run_counts")["n"],
                                        hops.counted_range(tx)))


async def test_counts_stay_exact_through_finishing_counting_and_deleting(store):
    now = now_ms()
    await store.write(lambda tx: (_seed(tx, "old", now - 3 * DAY_MS, 12), _seed(tx, "mid", now - 3_600_000, 12),
                                  _seed(tx, "new", now - 1000, 6)))
    await _assert_exact(store)  # nothing counted yet: every run counted live
    assert await _stored(store) == (0, (0, 0))

    # Housekeeping counts the finished runs up to a minute ago, in batches, and (retention 1 day) takes
    # away those within the lead of the cutoff again: they go next.
    housekeeping = Housekeeping(store, Retention(seconds=DAY_MS / 1000), batch=5, pause_s=0)
    housekeeping.count_batch = 3
    await housekeeping.keep_run_counts(now)
    held, (ended_from, ended_before) = await _stored(store)
    assert ended_before == now - LATE_COMMIT_MS
    assert now - DAY_MS < ended_from <= now - DAY_MS + 10 * 60_000
    assert held == 16  # the hour-old finished runs: 8 per function
    await _assert_exact(store)

    # Runs finish (after the counted range): counted live until the range moves past them.
    await store.write(lambda tx: ops.update_run(tx, "mid-f1-4", status="Completed", ended_at=now_ms()))
    await store.write(lambda tx: ops.update_run(tx, "new-f2-5", status="Failed", ended_at=now_ms()))
    await _assert_exact(store)
    later = now_ms() + 1
    while await store.write(lambda tx: hops.count_finished_runs(tx, ended_before=later, limit=2)) is not None:
        await _assert_exact(store)
    assert (await _stored(store))[0] == 16 + 2 + 8  # the two that finished and the new finished runs
    await _assert_exact(store)

    # Retention deletes runs inside the counted range (its cutoff past the range's start): taken away
    # in the delete's own transaction.
    cutoff = now - 1800_000
    deleted, _ = await store.write(lambda tx: rops.delete_finished_runs(tx, ended_before=cutoff, ended_from=0,
                                                                       limit=1000))
    assert deleted == 16 + 16  # the old finished runs (counted live) and the hour-old ones (counted)
    await _assert_exact(store)

    # A sweep of the previous release deletes runs without touching run_counts: below the range's
    # start, as the lead keeps them, the counts stay right.
    await store.write(lambda tx: _seed(tx, "older", now - 5 * DAY_MS, 6))
    await _assert_exact(store)
    await store.write(lambda tx: tx.execute("DELETE FROM runs WHERE run_id LIKE 'older-%' AND ended_at IS NOT NULL"))
    await _assert_exact(store)

    # A full sweep: everything past retention goes, counts exact.
    await housekeeping.sweep()
    await _assert_exact(store)


async def test_counts_used_by_the_runs_and_function_pages(store, monkeypatch):
    now = now_ms()
    await store.write(lambda tx: _seed(tx, "r", now - 3_600_000, 12))
    await Housekeeping(store, Retention(seconds=0), pause_s=0).keep_run_counts(now)
    assert (await _stored(store))[0] == 16

    def count(run_filter: RunFilter):
        return store.read(lambda tx: run_search.count_runs(tx, run_search.RunQuery(run_filter)))

    assert (await count(RunFilter())).by_status == {"Completed": 8, "Failed": 4, "Cancelled": 4, "Running": 4,
                                                   "Queued": 4}
    assert (await count(RunFilter(function_ids=["f1"], statuses=["Failed", "Running"]))).by_status == {
        "Failed": 2, "Running": 2}
    # A time range has no stored count: it counts the newest matching runs, and says when it stopped.
    ranged = await count(RunFilter(created_from=now - 3_600_000 + 6))
    assert ranged.complete and ranged.total == 12
    monkeypatch.setattr(run_search, "COUNT_SCAN_LIMIT", 5)
    ranged = await count(RunFilter(created_from=now - 3_600_000 + 6))
    assert not ranged.complete and ranged.total == 5


async def test_counts_stay_exact_with_two_replicas_sweeping_beside_writes(store, tmp_path, backend):
    """Two housekeepers (two stores on one PostgreSQL database; on SQLite, two on one store) count,
    uncount and delete while runs are created and finish; the counts are exact at the end."""
    now = now_ms()
    await store.write(lambda tx: (_seed(tx, "old", now - 3 * DAY_MS, 30), _seed(tx, "edge", now - DAY_MS + 60_000, 30),
                                  _seed(tx, "mid", now - 3_600_000, 30)))
    other = store
    if backend.name == "postgres":
        other = PostgresStore(store.uri, pool_size=2)
        await other.open()
    try:
        keepers = [Housekeeping(s, Retention(seconds=DAY_MS / 1000), batch=4, pause_s=0) for s in (store, other)]
        for k in keepers:
            k.count_batch = 5
        stop = asyncio.Event()

        async def writer(n: int) -> None:
            i = 0
            while not stop.is_set() or i < 20:
                at = now_ms()
                await store.write(lambda tx: ops.insert_run(tx, _run(f"w{n}-{i}", "f1", "Running", at, ended=False)))
                await store.write(lambda tx: ops.update_run(tx, f"w{n}-{i}", status="Completed", ended_at=now_ms()))
                if n == 0 and i in (1, 2):  # an hour-old run, counted live, finishes
                    await store.write(lambda tx: ops.update_run(tx, f"mid-f2-{i + 3}", status="Failed",
                                                                ended_at=now_ms()))
                i += 1

        async def sweeper(k: Housekeeping) -> None:
            for _ in range(3):
                await k.sweep()
                await asyncio.sleep(0)

        writers = [asyncio.create_task(writer(n)) for n in range(2)]
        await asyncio.gather(*(sweeper(k) for k in keepers))
        stop.set()
        await asyncio.gather(*writers)
        truth = await _assert_exact(store)
        assert await store.read(lambda tx: tx.one("SELECT COUNT(*) AS n FROM runs WHERE run_id LIKE 'old-%'"
                                                  " AND ended_at IS NOT NULL")["n"]) == 0  # retention deleted them
        assert truth["f1"]["Completed"] >= 40
        assert (await _stored(store))[0] > 0
    finally:
        if other is not store:
            await other.close()


class _Recording:
    """A transaction that notes each statement it runs, to explain them afterwards."""

    def __init__(self, tx) -> None:
        self.tx, self.dialect, self.sent = tx, tx.dialect, []

    def all(self, sql, params=()):
        self.sent.append((sql, params))
        return self.tx.all(sql, params)

    def one(self, sql, params=()):
        self.sent.append((sql, params))
        return self.tx.one(sql, params)

    def execute(self, sql, params=()):
        self.sent.append((sql, params))
        return self.tx.execute(sql, params)


async def test_counting_reads_ranges_of_ended_runs_not_every_run(store):
    """With statistics (housekeeping gathers them), counting and reading take runs_ended_set's small
    ranges: a status or (function, status) index would read every finished run."""
    now = now_ms()

    def seed(tx) -> None:
        for i in range(3000):
            ops.insert_run(tx, _run(f"r{i}", f"f{i % 3}", "Completed" if i % 10 else "Failed", now - 3_600_000 + i))
        for i in range(20):
            ops.insert_run(tx, _run(f"live{i}", "f1", "Running", now, ended=False))

    await store.write(seed)
    if isinstance(store, PostgresStore):
        await store.read(lambda tx: tx.execute("ANALYZE runs"))
    else:
        await store.write(rops.analyze_sqlite)

    def count_and_explain(tx) -> list[str]:
        # PostgreSQL rightly reads a table this small whole: without sequential scans it shows which
        # index can serve each part.
        tx.execute("SET LOCAL enable_seqscan = off" if tx.dialect == "postgres" else "SELECT 1")
        recording = _Recording(tx)
        hops.count_finished_runs(recording, ended_before=now - 3_600_000 + 50, limit=1000)
        hops.runs_by_function(recording)
        explain = "EXPLAIN " if tx.dialect == "postgres" else "EXPLAIN QUERY PLAN "
        return [" ".join(str(row[list(row.keys())[-1]]) for row in tx.all(explain + sql, params))
                for sql, params in recording.sent if "GROUP BY" in sql]

    plans = await store.write(count_and_explain)
    assert len(plans) == 2
    for plan in plans:
        assert "runs_ended_set" in plan, plan
        assert "SCAN runs " not in plan + " " and "Seq Scan on runs " not in plan + " ", plan
