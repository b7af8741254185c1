"""JS v4 async checkpoints on a real SQLite store: saved once, in order, fenced by run and queue item."""

from __future__ import annotations

import pytest

from lockgate.engine.checkpoint import CheckpointError, save_checkpoint
from lockgate.models import Job, JobKind, Run, RunStatus
from lockgate.store import operations as ops
from lockgate.store.sqlite import SQLiteStore

FN = "fn-uuid"


@pytest.fixture
async def store(tmp_path):
    store = SQLiteStore(str(tmp_path))
    await store.open()
    store_run = Run("r1", FN, "app-fn", 1, RunStatus.RUNNING.value, [{"name": "a/b", "data": {}}], [], 0)
    await store.write(ops.insert_run, store_run)
    await store.write(ops.enqueue, [Job(id="r1:call:1", kind=JobKind.CALL.value, run_id="r1", step_id="step",
                                        due_at=0, created_at=0)])
    yield store
    await store.close()


def _body(*ops_: dict, qi_id: str = "r1:call:1") -> dict:
    return {"run_id": "r1", "fn_id": FN, "qi_id": qi_id, "steps": list(ops_), "ts": 1}


def _step_run(step_id: str, data) -> dict:
    return {"op": "StepRun", "id": step_id, "displayName": step_id, "data": data}


async def test_steps_are_saved_in_order_and_only_once(store):
    saved = await store.write(lambda tx: save_checkpoint(tx, "r1", _body(_step_run("a", 1), _step_run("b", {"x": 2})),
                                                         now=10))
    assert saved == 2
    # the SDK repeats a step in its final 206 or retries a checkpoint: nothing changes
    again = await store.write(lambda tx: save_checkpoint(tx, "r1", _body(_step_run("a", 99)), now=20))
    assert again == 0
    run = await store.read(ops.get_run, "r1")
    assert run.stack == ["a", "b"]
    assert await store.read(ops.completed_memos, "r1") == {"a": {"data": 1}, "b": {"data": {"x": 2}}}
    # no discovery call was queued: the SDK is still running the function
    assert [j.id for j in await store.read(ops.jobs_of_run, "r1")] == ["r1:call:1"]


async def test_lazy_ops_are_accepted_and_ignored(store):
    body = _body({"op": "DeferAdd", "id": "d", "opts": {"fn_slug": "x", "input": {}}}, _step_run("a", None))
    assert await store.write(lambda tx: save_checkpoint(tx, "r1", body, now=10)) == 1


@pytest.mark.parametrize("run_id, body, status", [
    ("r1", [], 400),
    ("r1", {"steps": "nope"}, 400),
    ("r1", {"steps": [{"op": "StepRun", "data": 1}]}, 400),  # no step id
    ("r1", {"fn_id": "other-fn", "steps": []}, 400),
    ("nope", {"steps": []}, 404),
    ("r1", {"qi_id": "r1:call:gone", "steps": [{"op": "StepRun", "id": "a", "data": 1}]}, 409),
])
async def test_bad_or_stale_checkpoints_are_refused_and_save_nothing(store, run_id, body, status):
    with pytest.raises(CheckpointError) as caught:
        await store.write(lambda tx: save_checkpoint(tx, run_id, body, now=10))
    assert caught.value.status == status
    assert await store.read(ops.completed_memos, "r1") == {}


async def test_a_run_that_ended_answers_409(store):
    await store.write(lambda tx: ops.update_run(tx, "r1", status=RunStatus.CANCELLED.value, ended_at=5))
    with pytest.raises(CheckpointError) as caught:
        await store.write(lambda tx: save_checkpoint(tx, "r1", _body(_step_run("a", 1)), now=10))
    assert caught.value.status == 409


async def test_a_checkpoint_resets_the_attempts_of_the_call_in_flight(store):
    # The call is a retry (attempt 2) and the SDK checkpoints a step in it: progress was made, so a
    # step failing later in this call must get the function's full retries again.
    from lockgate.engine.interpreter import _lease_still_ours

    await store.write(lambda tx: tx.execute("UPDATE jobs SET attempt = 2, lease_owner = 'w' WHERE id = 'r1:call:1'"))
    in_flight = Job(id="r1:call:1", kind=JobKind.CALL.value, run_id="r1", step_id="step", due_at=0, created_at=0,
                    attempt=2, lease_owner="w")
    assert await store.write(lambda tx: save_checkpoint(tx, "r1", _body(_step_run("a", 1)), now=10)) == 1
    assert await store.write(lambda tx: _lease_still_ours(tx, in_flight))
    assert in_flight.attempt == 0  # what the call is settled with
    # a checkpoint that saves nothing new changes nothing
    await store.write(lambda tx: tx.execute("UPDATE jobs SET attempt = 1 WHERE id = 'r1:call:1'"))
    assert await store.write(lambda tx: save_checkpoint(tx, "r1", _body(_step_run("a", 1)), now=11)) == 0
    assert await store.write(lambda tx: _lease_still_ours(tx, in_flight)) and in_flight.attempt == 1
