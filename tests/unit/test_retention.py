"""Retention and expiry sweeps on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import asyncio

import pytest

from lockgate.engine.retention import BUSY_SHARE, MAX_BUSY_PACE, PACE, Housekeeping, Retention, may_go_on
from lockgate.models import Event, Job, Run, Step, Wait, now_ms
from lockgate.store import connect_operations as cops
from lockgate.store import flow_operations as fops
from lockgate.store import operations as ops
from lockgate.store import qstash_operations as qops
from lockgate.store import retention_operations as rops

DAY_MS = 86_400_000


def _seed(tx, prefix: str, *, status: str, at: int, ended: bool) -> None:
    """One event, the run it started and one recorded step, all at time `at`."""
    internal = f"{prefix}-event"
    ops.insert_events(tx, [Event(internal_id=internal, id=internal, name="shop/order", data={"n": 1}, ts=at,
                                 received_at=at)])
    ops.insert_run(tx, Run(run_id=prefix, function_id="f", function_slug="app-f", function_version=1,
                           status=status, events=[{"name": "shop/order"}], event_ids=[internal], created_at=at,
                           started_at=at, ended_at=at + 10 if ended else None))
    ops.record_step(tx, Step(run_id=prefix, step_id="s1", op="StepRun", status="completed", memo={"ok": True},
                             started_at=at, ended_at=at + 5))
    fops.set_run_limits(tx, prefix, [["k", 1, "fn"]])


async def _sizes(store) -> dict[str, int]:
    return await store.read(lambda tx: rops.table_sizes(
        tx, ["runs", "steps", "run_triggers", "flow_runs", "events", "unique_keys", "qstash_dedup", "flow_buckets"]))


async def test_sweep_deletes_old_finished_runs_and_unneeded_events_in_batches(store):
    now = now_ms()
    old, young = now - 3 * DAY_MS, now - 60_000

    def seed(tx) -> None:
        for i in range(23):  # more than a few batches' worth
            _seed(tx, f"old-done-{i}", status="Completed", at=old, ended=True)
        _seed(tx, "old-failed", status="Failed", at=old, ended=True)
        _seed(tx, "old-live", status="Running", at=old, ended=False)  # a long sleep: kept, with its event
        ops.insert_events(tx, [Event(internal_id=f"lonely-{i}", id=f"lonely-{i}", name="x", data={}, ts=old,
                                     received_at=old) for i in range(9)])  # matched no function
        _seed(tx, "young-done", status="Completed", at=young, ended=True)

    await store.write(seed)
    housekeeping = Housekeeping(store, Retention(seconds=DAY_MS / 1000), batch=5, pause_s=0)
    totals = await housekeeping.sweep()
    assert (totals.runs, totals.events) == (24, 33)
    activity = housekeeping.activity.describe()
    assert (activity["runs_deleted"], activity["events_deleted"]) == (24, 33)
    kept = {r["run_id"] for r in await store.read(lambda tx: tx.all("SELECT run_id FROM runs"))}
    assert kept == {"old-live", "young-done"}
    assert await _sizes(store) == {"runs": 2, "steps": 2, "run_triggers": 2, "flow_runs": 2, "events": 2,
                                   "unique_keys": 0, "qstash_dedup": 0, "flow_buckets": 0}
    assert await store.read(ops.get_event, "old-live-event") is not None
    assert await store.read(ops.get_steps, "old-live")  # a live run keeps its recorded steps
    assert (await housekeeping.sweep()).runs == 0  # nothing left to do


async def test_zero_retention_keeps_runs_forever_but_windows_still_expire(store):
    now = now_ms()

    def seed(tx) -> None:
        _seed(tx, "ancient", status="Completed", at=now - 400 * DAY_MS, ended=True)
        for i in range(12):
            ops.claim_unique_key(tx, f"idem-{i}", expires_at=now - 1 if i < 8 else now + DAY_MS, now=now - DAY_MS)
            qops.claim_dedup(tx, f"dedup-{i}", f"msg-{i}", now=now - DAY_MS,
                             expires_at=now - 1 if i < 10 else now + DAY_MS)
            fops.set_bucket_tat(tx, f"bucket-{i}", now - 1 if i < 11 else now + 60_000)

    await store.write(seed)
    totals = await Housekeeping(store, Retention(seconds=0), batch=5, pause_s=0).sweep()
    assert totals.runs == 0
    assert {t: totals.expired[t] for t in rops.EXPIRING_TABLES} == {"unique_keys": 8, "qstash_dedup": 10,
                                                                      "flow_buckets": 11}
    sizes = await _sizes(store)
    assert sizes["runs"] == 1 and sizes["events"] == 1
    assert (sizes["unique_keys"], sizes["qstash_dedup"], sizes["flow_buckets"]) == (4, 2, 1)
    # A still-live key keeps doing its job after the sweep.
    assert not await store.write(lambda tx: ops.claim_unique_key(tx, "idem-11", expires_at=now + 5, now=now))
    assert await store.write(lambda tx: ops.claim_unique_key(tx, "idem-0", expires_at=now + 5, now=now))


def _wait(run_id: str, event_name: str, path: str | None, now: int) -> Wait:
    return Wait(id=f"{run_id}:w", run_id=run_id, step_id="w", kind="wait", event_name=event_name,
                expression=None, trigger={}, created_at=now, expires_at=now + DAY_MS, match_path=path,
                match_value="x" if path else None)


def _keys(rows) -> set:
    values = [tuple(r[k] for k in r.keys()) for r in rows]  # sqlite3.Row and dict rows alike
    return {v if len(v) > 1 else v[0] for v in values}


async def test_keys_nobody_uses_are_deleted_and_keys_in_use_kept(store):
    """Wait keys, concurrency keys and singleton keys go once no wait, call or live run uses them."""
    now = now_ms()

    def seed(tx) -> None:
        _seed(tx, "live", status="Running", at=now, ended=False)
        _seed(tx, "done", status="Completed", at=now, ended=True)
        ops.insert_wait(tx, _wait("live", "shop/paid", "data.id", now))  # pending: its key stays
        for name, path in (("shop/shipped", None), ("shop/refund", "data.order")):  # resolved: keys unused
            ops.insert_wait(tx, _wait(f"gone-{name}", name, path, now))
            ops.take_wait(tx, f"gone-{name}:w")
        for key in ("idle", "slot", "parked"):
            fops.lock_limit(tx, key, 1)
        ops.enqueue(tx, [Job(id="call-1", kind="call", due_at=now, run_id="live", created_at=now),
                         Job(id="call-2", kind="call", due_at=now, run_id="live", created_at=now)])
        fops.take_slot(tx, "slot", "call-1", "worker-a")
        fops.park_job(tx, "call-2", "parked", now + 60_000)
        fops.set_singleton_run(tx, "fn:live", "live")
        fops.set_singleton_run(tx, "fn:done", "done")
        fops.set_singleton_run(tx, "fn:deleted", "no-such-run")
        fops.singleton_run(tx, "fn:never-started")  # a key whose run was not created
        cops.beat_gateway(tx, "gw-dead", "ws://dead", False, now - 2 * rops.CONNECT_SILENT_MS)
        cops.beat_gateway(tx, "gw-live", "ws://live", False, now)
        cops.upsert_workers(tx, [cops.WorkerRow(f"conn-{n}", "app", f"gw-{n}", None, None, "py", "0.5", "ready", None,
                                                at, at)
                                 for n, at in (("dead", now - 2 * rops.CONNECT_SILENT_MS), ("live", now))])

    await store.write(seed)
    totals = await Housekeeping(store, Retention(seconds=0), batch=2, pause_s=0).sweep()
    assert {t: totals.expired[t] for t in rops.IN_USE_TABLES} == {"wait_keys": 2, "flow_limits": 1,
                                                                  "flow_singletons": 3}
    assert totals.expired["connect"] == 2

    def left(tx) -> dict:
        return {"wait_keys": _keys(tx.all("SELECT event_name, match_path FROM wait_keys")),
                "flow_limits": _keys(tx.all("SELECT limit_key FROM flow_limits")),
                "flow_singletons": _keys(tx.all("SELECT singleton_key FROM flow_singletons")),
                "gateways": _keys(tx.all("SELECT gateway_id FROM connect_gateways")),
                "workers": _keys(tx.all("SELECT connection_id FROM connect_workers"))}

    assert await store.read(left) == {"wait_keys": {("shop/paid", "data.id")}, "flow_limits": {"slot", "parked"},
                                      "flow_singletons": {"fn:live"}, "gateways": {"gw-live"},
                                      "workers": {"conn-live"}}
    # What is left still works: the pending wait is found by its key, the live singleton is active.
    assert await store.read(ops.wait_paths, "shop/paid") == ["data.id"]
    assert await store.write(fops.singleton_run, "fn:live") == "live"
    assert await store.write(fops.singleton_run, "fn:done") is None  # a deleted key reads as new


async def test_a_key_being_registered_is_not_deleted_under_it(store, backend):
    """PostgreSQL runs the sweep beside the hot path: a wait registered (not yet committed) on a key
    row that looks unused must keep that row. (SQLite has one writer: the two cannot interleave.)"""
    if backend.name != "postgres":
        pytest.skip("SQLite serialises every write: no interleaving to test")
    import psycopg
    from psycopg.rows import dict_row

    from lockgate.store.postgres import PostgresTx

    now = now_ms()
    await store.write(lambda tx: (ops.insert_wait(tx, _wait("old", "shop/paid", "data.id", now)),
                                  ops.take_wait(tx, "old:w")))  # an unused key row, committed
    with psycopg.connect(store.uri, autocommit=False, row_factory=dict_row) as conn:
        ops.insert_wait(PostgresTx(conn), _wait("new", "shop/paid", "data.id", now))  # in flight
        totals = await Housekeeping(store, Retention(seconds=0), pause_s=0).sweep()
        assert totals.expired["wait_keys"] == 0  # the row is held: left alone
        conn.commit()
    await Housekeeping(store, Retention(seconds=0), pause_s=0).sweep()  # now in use: kept
    assert await store.read(ops.wait_paths, "shop/paid") == ["data.id"]


async def test_finished_qstash_messages_and_old_logs_go_in_batches(store):
    now = now_ms()
    message = ("INSERT INTO qstash_messages (message_id, state, url, not_before, created_at, finished_at, spec)"
               " VALUES (?, ?, 'http://x', 0, ?, ?, '{}')")
    log_entry = "INSERT INTO qstash_events (message_id, state, logged_at, url, data) VALUES (?, 'DELIVERED', ?, 'http://x', '{}')"

    def seed(tx) -> None:
        for i in range(7):
            tx.execute(message, (f"done-{i}", "delivered", now - DAY_MS, now - 10 * 60_000))  # grace over
        tx.execute(message, ("done-just-now", "failed", now - 60_000, now - 30_000))  # still readable
        tx.execute(message, ("pending", "pending", now - DAY_MS, None))
        for i in range(12):
            tx.execute(log_entry, (f"m-{i}", now - 8 * DAY_MS))  # older than the 7 days logs are kept
        tx.execute(log_entry, ("m-young", now - DAY_MS))
        tx.execute(log_entry, ("m-old-after-young", now - 8 * DAY_MS))  # out of order: left for later

    await store.write(seed)
    totals = await Housekeeping(store, Retention(seconds=0), batch=5, pause_s=0).sweep()
    assert (totals.expired["qstash_messages"], totals.expired["qstash_events"]) == (7, 12)
    left = await store.read(lambda tx: (_keys(tx.all("SELECT message_id FROM qstash_messages")),
                                        _keys(tx.all("SELECT message_id FROM qstash_events"))))
    assert left == ({"done-just-now", "pending"}, {"m-young", "m-old-after-young"})


def test_pacing_under_load_is_a_share_of_the_hot_paths_cpu_and_never_stops():
    batch = 0.010
    first = PACE * batch  # pauses are checked after at least this long
    # Nobody wrote during the pause: catch up at once.
    assert may_go_on(batch_s=batch, waited_s=first, hot_path_wrote=False, hot_cpu_s=0) == "idle"
    # Writes flow: the next batch waits until the hot path has used batch / BUSY_SHARE of CPU...
    earned = batch / BUSY_SHARE
    assert may_go_on(batch_s=batch, waited_s=first, hot_path_wrote=True, hot_cpu_s=earned * 0.9) is None
    assert may_go_on(batch_s=batch, waited_s=first, hot_path_wrote=True, hot_cpu_s=earned * 1.01) == "earned"
    # ...however long that takes, up to MAX_BUSY_PACE batches' time, then it goes on regardless.
    longest = MAX_BUSY_PACE * batch
    assert may_go_on(batch_s=batch, waited_s=longest * 0.99, hot_path_wrote=True, hot_cpu_s=0) is None
    assert may_go_on(batch_s=batch, waited_s=longest, hot_path_wrote=True, hot_cpu_s=0) == "waited longest"
    assert BUSY_SHARE <= 0.05 and MAX_BUSY_PACE * BUSY_SHARE > 1  # a few percent; the cap never binds first


def _seed_backlog(tx, count: int) -> None:
    old = now_ms() - 3 * DAY_MS
    for i in range(count):
        _seed(tx, f"old-{i}", status="Completed", at=old, ended=True)


async def test_an_idle_store_backlog_is_deleted_without_waiting_for_the_hot_path(store):
    await store.write(_seed_backlog, 9)
    housekeeping = Housekeeping(store, Retention(seconds=DAY_MS / 1000), batch=3, pause_s=0.001)
    assert (await housekeeping.sweep()).runs == 9
    activity = housekeeping.activity.describe()
    assert activity["runs_deleted"] == 9 and activity["batches"] >= 4
    assert set(activity["pauses_ended"]) == {"idle"}  # every pause as short as the idle pace allows


async def test_while_writes_flow_housekeeping_paces_itself_and_still_finishes(store):
    await store.write(_seed_backlog, 9)
    housekeeping = Housekeeping(store, Retention(seconds=DAY_MS / 1000), batch=3, pause_s=0.05)
    done = asyncio.Event()
    written = 0

    async def hot_path() -> None:  # writes back to back, as a busy server does
        nonlocal written
        while not done.is_set():
            await store.write(lambda tx, i=written: ops.claim_unique_key(
                tx, f"busy-{i}", expires_at=now_ms() + DAY_MS, now=now_ms()))
            written += 1

    writer = asyncio.create_task(hot_path())
    try:
        totals = await housekeeping.sweep()
    finally:
        done.set()
        await writer
    assert totals.runs == 9 and written > 0
    assert await store.read(lambda tx: tx.one("SELECT COUNT(*) AS n FROM runs")["n"]) == 0
    ended = housekeeping.activity.went_on
    # Pauses the hot path wrote through waited for its CPU budget (or the longest pause), not the idle pace.
    assert ended.get("earned", 0) + ended.get("waited longest", 0) >= 1, ended


async def test_sweep_gathers_sqlite_planner_statistics(store, backend):
    if backend.name != "sqlite":
        pytest.skip("SQLite never gathers statistics on its own; PostgreSQL's case is the next test")
    now = now_ms()
    await store.write(lambda tx: [_seed(tx, f"r{i}", status="Completed", at=now, ended=True) for i in range(50)])
    housekeeping = Housekeeping(store, Retention(seconds=0), pause_s=0)
    housekeeping.analyze_from_runs = 51  # a nearly empty store's statistics would mislead the planner later
    await housekeeping.sweep()
    assert housekeeping.activity.tables_analyzed == 0
    housekeeping.analyze_from_runs = 50
    await housekeeping.sweep()
    stats = await store.read(lambda tx: tx.all("SELECT tbl, idx, stat FROM sqlite_stat1 WHERE tbl = 'runs'"))
    assert {row["idx"] for row in stats} >= {"runs_ended_set"}, stats  # the retention walk's index is measured
    assert housekeeping.activity.describe()["tables_analyzed"] == 1
    await housekeeping.sweep()  # not again within the hour, nor before the store's commits have doubled
    assert housekeeping.activity.tables_analyzed == 1


async def test_sweep_vacuums_tables_autovacuum_leaves_alone(store, backend):
    if backend.name != "postgres":
        pytest.skip("PostgreSQL only: SQLite reuses deleted pages by itself")
    # This table's rows turn over and autovacuum is told to leave it (as when it is off server-wide).
    await store.read(lambda tx: tx.execute("ALTER TABLE events SET (autovacuum_enabled = false)"))
    now = now_ms()
    await store.write(lambda tx: ops.insert_events(tx, [
        Event(internal_id=f"e{i}", id=f"e{i}", name="x", data={}, ts=now, received_at=now) for i in range(3000)]))
    await store.write(lambda tx: tx.execute("DELETE FROM events"))

    def dead_rows(tx) -> int:
        tx.execute("SELECT pg_stat_force_next_flush()")
        row = tx.one("SELECT n_dead_tup, last_vacuum FROM pg_stat_user_tables"
                     " WHERE relname = 'events' AND schemaname = current_schema()")
        return row["n_dead_tup"]

    for _ in range(100):  # statistics reach the shared counters within a second or so
        if await store.read(dead_rows) >= 3000:
            break
        await asyncio.sleep(0.1)
    assert ("events", "vacuum") in await store.read(rops.tables_left_to_us)

    housekeeping = Housekeeping(store, Retention(seconds=0), pause_s=0)
    await housekeeping.sweep()
    vacuumed = await store.read(lambda tx: tx.one(
        "SELECT last_vacuum IS NOT NULL AS vacuumed, last_analyze IS NOT NULL AS analyzed FROM pg_stat_user_tables"
        " WHERE relname = 'events' AND schemaname = current_schema()"))
    assert vacuumed["vacuumed"] and vacuumed["analyzed"]
    assert housekeeping.activity.describe()["tables_vacuumed"] >= 1
    assert ("events", "vacuum") not in await store.read(rops.tables_left_to_us)
