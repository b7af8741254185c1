"""The store and queue primitives on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import logging

import psycopg
import pytest

from lockgate.engine.ingest import Handoff, ingest_in_tx, parse_events
from lockgate.engine.registry import Registry
from lockgate.models import Function, Job, JobKind
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
    before = store.round_trips

    def five_enqueues_and_a_count(tx):
        for i in range(5):
            ops.enqueue(tx, [_job(f"rt{i}", 0)])
        return tx.one("SELECT COUNT(*) AS n FROM jobs")["n"]  # waits for the five as well

    assert await store.write(five_enqueues_and_a_count) == 5
    # the count (with the five inserts), the sync that ends the pipeline, COMMIT
    assert store.round_trips - before == 3


async def test_an_unflushed_write_is_committed_beside_the_group_commit(store, backend):
    """Run progress goes through `write_unflushed`: committed and visible like any write, but on
    PostgreSQL on its own connection, never in a writer thread's batch."""
    batches = store.commits
    await store.write_unflushed(ops.enqueue, [_job("progress", 0)])
    assert await store.read(ops.queue_depth) == 1
    if backend.name == "postgres":
        assert store.commits == batches


async def test_a_session_silent_inside_a_transaction_stops_holding_up_writes(backend, caplog):
    """A client paused inside a transaction keeps its row locks. Our own sessions sit idle in a
    transaction for postgres_idle_in_transaction_timeout at most (PostgreSQL ends them); a client
    paused between the statements of a pipeline stays `active`, which no PostgreSQL timeout ends,
    so the store whose write waits on it ends that session after the same time."""
    if backend.name != "postgres":
        pytest.skip("SQLite has one writer, in this process")
    uri = backend.new_database()
    store = PostgresStore(uri, pool_size=2, idle_in_transaction_timeout=2)
    await store.open()
    store.listen({})
    stuck = psycopg.connect(uri, autocommit=True)
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
            count = await asyncio.wait_for(store.write(
                lambda tx: tx.execute("UPDATE jobs SET attempt = 1 WHERE id = 'held'").rowcount), timeout=60)
        assert count == 1 and await store.read(lambda tx: tx.one("SELECT attempt FROM jobs")["attempt"]) == 1
        assert f"lock held by PostgreSQL session {stuck.info.backend_pid}" in caplog.text
        assert "silent inside a transaction" in caplog.text and "ended it" in caplog.text
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
