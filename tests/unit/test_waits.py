"""The wait index: which conditions give an equality key, and matching through it."""

from __future__ import annotations

import pytest

from lockgate.engine.waits import equality_key, lookup, match_event, register_wait
from lockgate.models import Event, Run, RunStatus, Wait
from lockgate.store import operations as ops
from lockgate.store.sqlite import SQLiteStore

TRIGGER = {"name": "a", "data": {"id": "abc", "n": 3}}


@pytest.mark.parametrize(
    "expression, key",
    [
        ("async.data.id == event.data.id", ("data.id", "abc")),
        ("event.data.id == async.data.id", ("data.id", "abc")),
        ("async.data.id == 'x' && async.data.n > 2", ("data.id", "x")),
        ('async.data.n == 3.0', ("data.n", 3)),
        ("async.data.id == event.data.id || async.data.x == 1", None),  # a disjunction cannot be indexed
        ("async.data.id != 'x'", None),
        ("async.data.id == event.data.missing", None),
        (None, None),
    ],
)
def test_equality_key(expression, key):
    assert equality_key(expression, TRIGGER) == key


def test_lookup_walks_paths():
    assert lookup({"data": {"a": {"b": 1.0}}}, "data.a.b") == (True, 1)
    assert lookup({"data": {}}, "data.a.b") == (False, None)


async def test_one_event_resumes_only_its_indexed_waiter_among_many(tmp_path):
    store = SQLiteStore(str(tmp_path))
    await store.open()
    try:
        def setup(tx):
            for i in range(2000):
                run_id = f"run{i}"
                ops.insert_run(tx, Run(run_id, "f", "slug", 1, RunStatus.RUNNING.value, [{"data": {"id": i}}], [],
                                       0, pending_steps=["s"]))
                register_wait(tx, Wait(id=f"{run_id}:s", run_id=run_id, step_id="s", kind="wait", event_name="go",
                                       expression="async.data.id == event.data.id", trigger={"data": {"id": i}},
                                       created_at=0, expires_at=10**12), now=0)

        await store.write(setup)
        event = Event(internal_id="e", id="e", name="go", data={"id": 1234}, ts=5, received_at=5)
        jobs = await store.write(lambda tx: match_event(tx, event, now=5))
        assert [j.run_id for j in jobs] == ["run1234"]
        memos = await store.read(ops.completed_memos, "run1234")
        assert memos["s"]["data"] == {"id": 1234}
        # resolved once: the same event again finds nothing
        assert await store.write(lambda tx: match_event(tx, event, now=6)) == []
    finally:
        await store.close()
