"""Flow-control store primitives on a real SQLite file: slots, parking, lapsed leases; config parsing."""

from __future__ import annotations

import pytest

from lockgate.engine.flow.concurrency import lease_call, lease_due
from lockgate.engine.flow.config import ConcurrencyLimit, FlowConfigError, parse_flow
from lockgate.models import Job, JobKind
from lockgate.store import flow_operations as fops
from lockgate.store import operations as ops


async def _calls(store, count: int, limits: list, *, prefix: str = "r", due: int = 0) -> list[Job]:
    jobs = [Job(id=f"{prefix}{i}:call:0", kind=JobKind.CALL.value, run_id=f"{prefix}{i}", step_id="step",
                due_at=due + i, created_at=due + i) for i in range(count)]

    def setup(tx):
        ops.enqueue(tx, jobs)
        for job in jobs:
            fops.set_run_limits(tx, job.run_id, limits)

    await store.write(setup)
    return jobs


def _lease(store, owner: str, now: int, limit: int = 10, lease_ms: int = 10_000):
    return store.write(lambda tx: lease_due(tx, owner=owner, now=now, limit=limit, lease_ms=lease_ms))


async def test_workers_together_never_exceed_the_limit(store):
    await _calls(store, 5, [["fn:x", 2, "limit 2"]])
    first = await _lease(store, "worker-a", 100)
    second = await _lease(store, "worker-b", 101)
    assert len(first) + len(second) == 2
    assert await store.read(fops.parked_count, "fn:x") == 3
    # One call settles: exactly one parked call comes back, in queue order.
    await store.write(ops.release_job, first[0])
    third = await _lease(store, "worker-b", 102)
    assert [j.id for j in third] == ["r2:call:0"]
    assert await store.read(fops.parked_count, "fn:x") == 2


async def test_a_lapsed_lease_frees_its_slot(store):
    await _calls(store, 4, [["fn:y", 2, "limit 2"]])
    crashed = await _lease(store, "dead-worker", 100, lease_ms=50)
    assert len(crashed) == 2
    taken_over = await _lease(store, "live-worker", 1000)
    assert sorted(j.id for j in taken_over) == ["r0:call:0", "r1:call:0"]  # FIFO: the lapsed calls first
    assert await store.read(lambda tx: fops.live_slots(tx, "fn:y", 1000)) == 2


async def test_every_limit_needs_room(store):
    await _calls(store, 1, [["fn:z", 5, "outer"], ["key:a", 1, "key a"]], prefix="a")
    await _calls(store, 1, [["fn:z", 5, "outer"], ["key:a", 1, "key a"]], prefix="b", due=10)
    await _calls(store, 1, [["fn:z", 5, "outer"], ["key:b", 1, "key b"]], prefix="c", due=20)
    leased = await _lease(store, "w", 100)
    assert sorted(j.run_id for j in leased) == ["a0", "c0"]
    assert await store.read(fops.parked_count, "key:a") == 1


async def test_hand_off_leasing_obeys_the_limit(store):
    jobs = await _calls(store, 2, [["fn:h", 1, "limit 1"]])
    assert await store.write(lambda tx: lease_call(tx, jobs[0], owner="w", now=100, lease_ms=1000))
    assert not await store.write(lambda tx: lease_call(tx, jobs[1], owner="w", now=100, lease_ms=1000))
    assert await store.read(fops.parked_count, "fn:h") == 1


async def test_parked_calls_return_in_rank_order(store):
    jobs = await _calls(store, 3, [["fn:p", 1, "limit 1"]])
    # The last run has a higher priority (300 s): its parked call ranks earlier.
    await store.write(lambda tx: tx.execute("UPDATE flow_runs SET priority_ms = 300000 WHERE run_id = ?",
                                            (jobs[2].run_id,)))
    order = []
    for now in (100, 200, 300):
        [job] = await _lease(store, "w", now)
        order.append(job.id)
        await store.write(ops.release_job, job)
    assert order == ["r0:call:0", "r2:call:0", "r1:call:0"]  # r0 was admitted before the others parked


def test_flow_config_parsing():
    flow = parse_flow({"concurrency": 3})
    assert flow.concurrency == (ConcurrencyLimit(limit=3, key=None, scope="fn"),)
    assert parse_flow({"concurrency": [{"limit": 0}]}).concurrency == ()  # 0 = unlimited
    flow = parse_flow({"throttle": {"limit": 2, "period": "1m"}, "debounce": {"period": "5s", "timeout": "1m"},
                       "timeouts": {"start": "10s", "finish": "1h"}, "priority": {"run": "event.data.p"}})
    assert (flow.throttle.period_ms, flow.throttle.burst) == (60_000, 1)
    assert (flow.debounce.period_ms, flow.debounce.timeout_ms) == (5000, 60_000)
    assert (flow.start_timeout_ms, flow.finish_timeout_ms) == (10_000, 3_600_000)
    for bad, message in [
        ({"concurrency": [{"limit": -1}]}, "concurrency[0].limit"),
        ({"concurrency": [{"limit": 1, "scope": "planet"}]}, "scope"),
        ({"batchEvents": {"maxSize": 0, "timeout": "1s"}}, "maxSize"),
        ({"batchEvents": {"maxSize": 2, "timeout": "1s"}, "debounce": {"period": "1s"}}, "debounce"),
        ({"debounce": {"period": "8d"}}, "at most"),
        ({"priority": {"run": "event.data.("}}, "priority.run"),
    ]:
        with pytest.raises(FlowConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_flow(bad)


async def test_a_retried_call_keeps_its_priority(store):
    urgent = Job(id="u:call:0", kind=JobKind.CALL.value, run_id="u", step_id="step", due_at=1000, rank_at=1000 - 60_000,
                 created_at=1000)
    await store.write(lambda tx: ops.enqueue(tx, [urgent]))
    (leased,) = await store.write(lambda tx: ops.lease_due_jobs(tx, owner="w", now=1000, limit=5, lease_ms=10_000))
    assert await store.write(lambda tx: ops.retry_job(tx, leased, due_at=5000, attempt=1))
    (row,) = await store.read(lambda tx: ops.jobs_of_run(tx, "u"))
    assert (row.due_at, row.rank_at, row.attempt) == (5000, 5000 - 60_000, 1)
