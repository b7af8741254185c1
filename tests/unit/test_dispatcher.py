"""The dispatcher on a real SQLite file and a real PostgreSQL database: what it leases, and when."""

from __future__ import annotations

import asyncio

import pytest

from lockgate.engine.dispatcher import Dispatcher
from lockgate.models import Job, JobKind, now_ms
from lockgate.store import operations as ops


def _call(job_id: str, due: int, **kw) -> Job:
    return Job(id=job_id, kind=JobKind.CALL.value, due_at=due, created_at=due, **kw)


async def _until(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
async def dispatcher(store):
    done: list[tuple[str, int]] = []

    async def handle(job: Job, state: object) -> None:
        assert await store.write(ops.release_job, job)
        done.append((job.id, now_ms()))

    d = Dispatcher(store, handle, workers=4, lease_ms=60_000, owner="me")
    d.done = done
    await d.start()
    yield d
    await d.stop(grace_s=1)


async def test_an_idle_dispatcher_woken_with_nothing_due_commits_nothing(store, dispatcher):
    await store.write(ops.enqueue, [_call("now", now_ms())])
    dispatcher.wake()
    await _until(lambda: dispatcher.done)
    while True:  # until the round after the job ended is over
        rounds = dispatcher.rounds
        await asyncio.sleep(0.2)
        if dispatcher.rounds == rounds:
            break
    commits = store.commits
    for _ in range(20):  # runs ending, slots freeing: each wakes the dispatcher
        dispatcher.wake()
        await asyncio.sleep(0.02)
    assert store.commits == commits
    # ... and it still leases what comes due.
    await store.write(ops.enqueue, [_call("next", now_ms())])
    dispatcher.wake()
    await _until(lambda: len(dispatcher.done) == 2)


async def test_an_idle_dispatcher_sleeps_until_the_next_job_comes_due(store, dispatcher):
    await store.write(ops.enqueue, [_call("first", now_ms())])
    dispatcher.wake()
    await _until(lambda: dispatcher.done)
    due = now_ms() + 400
    await store.write(ops.enqueue, [_call("later", due)])
    dispatcher.wake()  # looks, finds nothing due yet, and sleeps until `due`
    await _until(lambda: len(dispatcher.done) == 2)
    assert dispatcher.done[1][0] == "later" and dispatcher.done[1][1] >= due


async def test_an_idle_dispatcher_takes_over_a_lease_that_lapses(store, dispatcher):
    await store.write(ops.enqueue, [_call("first", now_ms())])
    dispatcher.wake()
    await _until(lambda: dispatcher.done)
    lapses = now_ms() + 400  # held by a replica that died
    await store.write(ops.enqueue, [_call("orphan", 0, lease_owner="dead", lease_expires_at=lapses)])
    dispatcher.wake()
    await _until(lambda: len(dispatcher.done) == 2)
    assert dispatcher.done[1][0] == "orphan" and dispatcher.done[1][1] >= lapses
