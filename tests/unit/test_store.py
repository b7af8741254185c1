"""The store and queue primitives on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import logging

import psycopg
import pytest

from lockgate.engine.ingest import Handoff, ingest_in_tx, parse_events
from lockgate.engine.registry import Registry
from lockgate.models import Function, Job, JobKind, Run, RunStatus
from lockgate.store import health_operations, retention_operations
from lockgate.store import operations as ops
from lockgate.store.postgres import PostgresStore
from tests.conftest import wait_until


def _job(job_id: str, due: int, **kw) -> Job:
    return Job(id=job_id, kind=JobKind.CALL.value, due_at=due, created_at=due, **kw)


async def test_lease_takes_due_jobs_once_and_in_rank_order(store):
    await store.write(ops.enqueue, [_job("late", 2000), _job("early", 1000), _job("future", 10_000),
                                    _job("urgent", 1500, rank_at=500)])
    first = await store.write(lambda tx: ops.lease_due_jobs(tx, owner="a", now=3000, limit=10, lease_ms=1000))
    assert [j.id for j in first] == ["urgent", "early", "late"]
    again = await store.write(lambda tx: ops.lease_due_jobs(tx, owner="b", now=3500, limit=10, lease_ms=1000))
    assert again == []  # leased jobs are not handed out twice
    assert await store.read(ops.next_wakeup) == 4000  # the earliest lease expiry


async def test_expired_lease_is_taken_over_and_the_old_owner_is_fenced_off(store):
    await store.write(ops.enqueue, [_job("j", 0)])
    [mine] = await store.write(lambda tx: ops.lease_due_jobs(tx, owner="a", now=10, limit=1, lease_ms=100))
    [theirs] = await store.write(lambda tx: ops.lease_due_jobs(tx, owner="b", now=200, limit=1, lease_ms=100))
    assert theirs.id == "j"
    assert await store.write(ops.release_job, mine) is False  # stale owner cannot settle it
    assert await store.write(ops.release_job, theirs) is True
    assert await store.read(ops.queue_depth) == 0


async def test_enqueue_is_idempotent_by_job_id(store):
    await store.write(ops.enqueue, [_job("same", 0)])
    await store.write(ops.enqueue, [_job("same", 5)])
    assert await store.read(ops.queue_depth) == 1


async def test_unique_key_window(store):
    assert await store.write(lambda tx: ops.claim_unique_key(tx, "k", expires_at=100, now=0))
    assert not await store.write(lambda tx: ops.claim_unique_key(tx, "k", expires_at=150, now=50))
    assert await store.write(lambda tx: ops.claim_unique_key(tx, "k", expires_at=300, now=100))


async def test_a_failing_write_does_not_undo_its_neighbours_in_the_same_commit(store):
    def bad(tx):
        ops.enqueue(tx, [_job("from-bad", 0)])
        raise RuntimeError("boom")

    results = await asyncio.gather(
        store.write(ops.enqueue, [_job("a", 0)]),
        store.write(bad),
        store.write(ops.enqueue, [_job("b", 0)]),
        return_exceptions=True,
    )
    assert isinstance(results[1], RuntimeError)
    ids = {j.id for j in await store.write(lambda tx: ops.lease_due_jobs(tx, owner="x", now=1, limit=10, lease_ms=1))}
    assert ids == {"a", "b"}


async def test_a_write_that_breaks_the_shared_transaction_fails_alone(store):
    """Even a write whose error its savepoint cannot contain (here it ends the transaction) costs
    its neighbours nothing: the batch is applied again one write at a time."""
    def breaks_the_transaction(tx):
        tx.execute("ROLLBACK")
        raise ValueError("bad input")

    writes = [store.write(ops.enqueue, [_job(f"good{i}", 0)]) for i in range(20)]
    writes.insert(10, store.write(breaks_the_transaction))
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert isinstance(results[10], ValueError)
    assert [r for i, r in enumerate(results) if i != 10] == [None] * 20
    assert await store.read(ops.queue_depth) == 20


def _insert_key_twice(tx, key):
    """Two plain inserts of one primary key: the second fails in the database; nobody reads either
    result (on PostgreSQL both go out in the writer's pipeline, and the error arrives later)."""
    tx.execute("INSERT INTO unique_keys (key, expires_at) VALUES (?, 0)", (key,))
    tx.execute("INSERT INTO unique_keys (key, expires_at) VALUES (?, 0)", (key,))


async def test_a_write_whose_unread_statement_fails_fails_alone(store):
    def late_failure(tx):
        ops.enqueue(tx, [_job("from-failing", 0)])
        _insert_key_twice(tx, "twice")

    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        await store.write(late_failure)  # alone in its commit
    results = await asyncio.gather(
        *(store.write(ops.enqueue, [_job(f"n{i}", 0)]) for i in range(5)),
        store.write(late_failure),
        *(store.write(ops.enqueue, [_job(f"m{i}", 0)]) for i in range(5)),
        return_exceptions=True,
    )
    assert "unique" in str(results[5]).lower() or "duplicate" in str(results[5]).lower()
    assert [r for i, r in enumerate(results) if i != 5] == [None] * 10
    assert await store.read(ops.queue_depth) == 10  # nothing of the failing write, all of its neighbours
    assert await store.read(lambda tx: tx.one("SELECT COUNT(*) AS n FROM unique_keys")["n"]) == 0


async def test_a_savepoint_in_a_write_contains_the_errors_of_its_own_statements(store):
    """The dispatcher applies due timers under a savepoint and goes on when they fail: the error
    must show inside that `try`, not at a later statement of the write."""
    def contained(tx):
        ops.enqueue(tx, [_job("before", 0)])
        tx.execute("SAVEPOINT keys_part")
        try:
            _insert_key_twice(tx, "inner")  # nothing read: the error must still show in here
        except Exception:
            tx.execute("ROLLBACK TO SAVEPOINT keys_part")
            failed = True
        else:
            failed = False
        tx.execute("RELEASE SAVEPOINT keys_part")
        ops.enqueue(tx, [_job("after", 0)])
        return failed

    assert await store.write(contained) is True
    assert await store.read(ops.queue_depth) == 2
    assert await store.read(lambda tx: tx.one("SELECT COUNT(*) AS n FROM unique_keys")["n"]) == 0


async def test_statements_nobody_reads_share_a_round_trip_on_postgres(store, backend):
    if backend.name != "postgres":
        pytest.skip("SQLite runs in process: no round trips")

    def five_enqueues_and_a_count(tx):
        for i in range(5):
            ops.enqueue(tx, [_job(f"rt{i}", 0)])
        return tx.one("SELECT COUNT(*) AS n FROM jobs")["n"]  # waits for the five as well

    def count_then_enqueue(tx, job_id):
        n = tx.one("SELECT COUNT(*) AS n FROM jobs")["n"]
        ops.enqueue(tx, [_job(job_id, 0)])
        return n

    for _ in range(3):  # the statements are prepared on the connections once they are known
        await store.write(five_enqueues_and_a_count)
        await store.write(count_then_enqueue, "rt-warm")
    before = store.round_trips
    assert await store.write(five_enqueues_and_a_count) == 6
    # the count (with BEGIN and the five inserts), then COMMIT
    assert store.round_trips - before == 2

    before = store.round_trips
    assert await store.write(count_then_enqueue, "rt-late") == 6
    # the count; the insert goes with COMMIT
    assert store.round_trips - before == 2
    assert await store.read(ops.queue_depth) == 7


async def test_statements_run_often_keep_working_after_failed_writes(store):
    """On PostgreSQL the writes' statements get prepared on their connections after a few uses; a
    failed write (its transaction rolled back) must not take them away from the writes after it,
    and a statement that cannot be prepared (a value whose type nothing tells) still runs."""
    def untyped(tx, i):
        return tx.one("SELECT ? AS v", (f"value {i}",))["v"]

    def fails(tx, i):
        ops.enqueue(tx, [_job(f"doomed{i}", 0)])
        raise RuntimeError("boom")

    for i in range(6):
        await store.write(ops.enqueue, [_job(f"before{i}", 0)])
        assert await store.write(untyped, i) == f"value {i}"
        with pytest.raises(RuntimeError):
            await store.write(fails, i)
        await store.write(ops.enqueue, [_job(f"after{i}", 0)])
        assert await store.read(untyped, i) == f"value {i}"
    assert await store.read(ops.queue_depth) == 12


async def test_a_write_that_swallows_a_failed_statement_is_not_acknowledged(store, backend):
    """On PostgreSQL a failed statement aborts the transaction and its COMMIT rolls back: the write
    must fail, never be acknowledged as committed."""
    if backend.name != "postgres":
        pytest.skip("SQLite goes on after a failed statement")

    def swallows(tx, job_id, read_first):
        if read_first:
            tx.one("SELECT COUNT(*) AS n FROM jobs")
        tx.execute("INSERT INTO unique_keys (key, expires_at) VALUES (?, 0)", (job_id,))
        try:
            tx.one("SELECT 1 / 0 AS n")
        except Exception:
            pass

    for read_first in (False, True):
        with pytest.raises(psycopg.Error):
            await store.write(swallows, f"swallowed-{read_first}", read_first)
    assert await store.read(lambda tx: tx.one("SELECT COUNT(*) AS n FROM unique_keys")["n"]) == 0


async def test_writes_on_connections_the_database_closed_are_applied_once(store, backend):
    """A restart of the database closes every connection: a write that finds its connection gone
    must learn it before COMMIT is sent (so that it is known not applied) and be run again."""
    if backend.name != "postgres":
        pytest.skip("PostgreSQL connections only")
    def close_every_connection():
        with psycopg.connect(store.uri, autocommit=True) as admin:
            closed = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                   " WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall()
        assert closed  # the pool's connections

    def read_then_enqueue(tx, job_id):
        n = tx.one("SELECT COUNT(*) AS n FROM jobs")["n"]
        ops.enqueue(tx, [_job(job_id, 0)])
        return n

    for i in range(3):  # one at a time: each alone in its transaction
        await store.write(ops.enqueue, [_job(f"warm{i}", 0)])
        close_every_connection()
        await store.write(ops.enqueue, [_job(f"plain{i}", 0)])  # reads nothing: its first round trip commits
        close_every_connection()
        await store.write(read_then_enqueue, f"read{i}")
    close_every_connection()
    await asyncio.gather(*(store.write(ops.enqueue, [_job(f"burst{i}", 0)]) for i in range(5)))
    assert await store.read(ops.queue_depth) == 14


async def test_an_unflushed_write_is_committed_beside_the_group_commit(store, backend):
    """Run progress goes through `write_unflushed`: committed and visible like any write, but on
    PostgreSQL on its own connection, never in a writer thread's batch."""
    batches = store.commits
    await store.write_unflushed(ops.enqueue, [_job("progress", 0)])
    assert await store.read(ops.queue_depth) == 1
    if backend.name == "postgres":
        assert store.commits == batches


@pytest.mark.parametrize("application", ["lockgate", "psql"])
async def test_a_session_silent_inside_a_transaction_stops_holding_up_writes(backend, caplog, application):
    """A client paused inside a transaction keeps its row locks. Our own sessions sit idle in a
    transaction for postgres_idle_in_transaction_timeout at most (PostgreSQL ends them); a client
    paused between the statements of a pipeline stays `active`, which no PostgreSQL timeout ends,
    so the store whose write waits on it ends that session after the same time when it is one of
    lockgate's (another replica); anyone else's is named in the log and left alone."""
    if backend.name != "postgres":
        pytest.skip("SQLite has one writer, in this process")
    uri = backend.new_database()
    store = PostgresStore(uri, pool_size=2, idle_in_transaction_timeout=2)
    await store.open()
    store.listen({})
    stuck = psycopg.connect(uri, autocommit=True, application_name=application)
    stuck_pid = stuck.info.backend_pid
    try:
        setting = await store.read(lambda tx: tx.one("SHOW idle_in_transaction_session_timeout"))
        assert setting["idle_in_transaction_session_timeout"] == "2s"
        await store.write(ops.enqueue, [_job("held", 0)])
        pipeline = stuck.pipeline()
        pipeline.__enter__()
        stuck.execute("BEGIN")
        stuck.execute("UPDATE jobs SET attempt = 7 WHERE id = 'held'")  # no sync: the pipeline goes on later
        watcher = psycopg.connect(uri, autocommit=True)
        wait_until(lambda: watcher.execute("SELECT state, wait_event FROM pg_stat_activity WHERE pid = %s AND"
                                           " backend_xid IS NOT NULL", (stuck.info.backend_pid,)).fetchone()
                   == ("active", "ClientRead"), what="the paused pipeline to hold the row")
        watcher.close()
        with caplog.at_level(logging.WARNING, logger="lockgate.store.postgres"):
            write = asyncio.ensure_future(store.write(
                lambda tx: tx.execute("UPDATE jobs SET attempt = 1 WHERE id = 'held'").rowcount))
            if application != "lockgate":
                for _ in range(600):  # the listener looks every 2 s once a write has waited 5 s
                    if "not one of lockgate's sessions" in caplog.text:
                        break
                    await asyncio.sleep(0.1)
                else:
                    pytest.fail(f"the store never named the session holding up its write: {caplog.text}")
                assert not write.done()  # not ended by us: the write waits until its owner lets go
                stuck.close()
            count = await asyncio.wait_for(write, timeout=60)
        assert count == 1 and await store.read(lambda tx: tx.one("SELECT attempt FROM jobs")["attempt"]) == 1
        assert f"lock held by PostgreSQL session {stuck_pid}" in caplog.text
        assert "silent inside a transaction" in caplog.text
        assert ("ended it" in caplog.text) == (application == "lockgate")
    finally:
        stuck.close()
        await store.close()


async def test_concurrent_writes_are_group_committed(store):
    await asyncio.gather(*(store.write(ops.enqueue, [_job(f"j{i}", 0)]) for i in range(200)))
    assert await store.read(ops.queue_depth) == 200
    assert store.commits < 200  # many writes shared a commit


async def test_recorded_step_is_never_overwritten(store):
    from lockgate.models import Step

    first = Step("run", "s1", "StepRun", "completed", memo={"data": 1}, position=0)
    again = Step("run", "s1", "StepRun", "completed", memo={"data": 2}, position=1)
    assert await store.write(ops.record_step, first) is True
    assert await store.write(ops.record_step, again) is False
    assert await store.read(ops.completed_memos, "run") == {"s1": {"data": 1}}


def _fn(slug: str, event: str, expression: str | None = None) -> Function:
    trigger = {"event": event}
    if expression:
        trigger["expression"] = expression
    return Function(id=f"id-{slug}", slug=slug, app_name="app", name=slug, url="http://x/api?fnId=" + slug,
                    config={"id": slug, "triggers": [trigger]})


async def test_ingest_commits_events_runs_and_first_calls_together(store):
    registry = Registry.build([_fn("a", "shop/*"), _fn("b", "shop/order", "event.data.total > 10"),
                               _fn("c", "other/thing")])
    events = parse_events([{"name": "shop/order", "data": {"total": 20}}, {"name": "shop/order", "data": {"total": 5}}],
                          seed=None, now=1_700_000_000_000)
    handoff = Handoff(owner="me", lease_ms=1000, limit=1)
    result = await store.write(lambda tx: ingest_in_tx(tx, events, registry, now=1_700_000_000_000, handoff=handoff))
    assert len(result.run_ids) == 3  # a twice, b once
    assert len(result.leased) == 1  # only as many handed off as there were free slots
    assert await store.read(ops.queue_depth) == 3
    runs = await store.read(ops.runs_of_event, events[0].internal_id)
    assert sorted(r.function_slug for r in runs) == ["a", "b"]


class _Recording:
    """A transaction that runs every statement and keeps it, to be explained afterwards."""

    def __init__(self, tx) -> None:
        self.tx, self.dialect, self.sent = tx, tx.dialect, []

    def one(self, sql, params=()):
        self.sent.append((sql, params))
        return self.tx.one(sql, params)

    def all(self, sql, params=()):
        self.sent.append((sql, params))
        return self.tx.all(sql, params)

    def execute(self, sql, params=()):
        self.sent.append((sql, params))
        return self.tx.execute(sql, params)


async def test_queries_on_ended_and_invoked_runs_use_the_partial_indexes(store):
    """Migration 0012 indexes only runs that ended (runs_ended_set) and runs started by step.invoke
    (runs_correlation_set). Each query that needs them still gets them, and still answers right."""
    def run(run_id: str, status: RunStatus = RunStatus.RUNNING, **kw) -> Run:
        return Run(run_id, "f", "app-f", 1, status.value, [{"name": "a/b", "data": {}}], [], 1000, **kw)

    for r in (run("parent", RunStatus.COMPLETED, ended_at=5000),
              run("child", RunStatus.FAILED, correlation_id="parent.step-1", ended_at=4000),
              *(run(f"live{i}") for i in range(20))):
        await store.write(ops.insert_run, r)

    def use_and_explain(tx) -> dict[str, tuple[object, str]]:
        # Without sequential scans the planner shows which index can serve each statement at all.
        tx.execute("SET LOCAL enable_seqscan = off" if tx.dialect == "postgres" else "SELECT 1")
        explain = "EXPLAIN " if tx.dialect == "postgres" else "EXPLAIN QUERY PLAN "
        calls = {
            "child runs": lambda t: [c.run_id for c in ops.child_runs(t, "parent")],
            "change mark": lambda t: ops.runs_change_mark(t)[1],
            "throughput": lambda t: sorted(b["status"] for b in health_operations.throughput(t, since=0,
                                                                                            bucket_ms=60_000)),
            "retention": lambda t: retention_operations.delete_finished_runs(t, ended_before=4500, ended_from=0,
                                                                             limit=10),
        }
        found = {}
        for label, call in calls.items():
            recording = _Recording(tx)
            answer = call(recording)
            sql, params = next((sql, params) for sql, params in recording.sent
                               if "correlation_id >=" in sql or "ended_at" in sql)
            plan = " ".join(str(row[list(row.keys())[-1]]) for row in tx.all(explain + sql, params))
            found[label] = (answer, plan)
        return found

    found = await store.write(use_and_explain)
    assert found["child runs"][0] == ["child"]
    assert found["change mark"][0] == 5000
    assert found["throughput"][0] == ["Completed", "Failed"]
    assert found["retention"][0] == (1, 4000)  # the child ended before 4500; live runs are not touched
    assert "runs_correlation_set" in found["child runs"][1]
    # SQLite without statistics (lockgate never runs ANALYZE) takes runs_status_keyset for the
    # retention walk, as it did with 0004's full runs_ended: only PostgreSQL's choice is asserted there.
    ended = ["change mark", "throughput"] + (["retention"] if isinstance(store, PostgresStore) else [])
    for label in ended:
        assert "runs_ended_set" in found[label][1], (label, found[label][1])
