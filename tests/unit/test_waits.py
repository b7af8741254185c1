"""The wait index: which conditions give an equality key, matching through it, and lookback."""

from __future__ import annotations

import pytest

from lockgate.engine.waits import lookback_match, lookup, match_event, prepare, register_wait
from lockgate.models import Event, Run, RunStatus, Wait
from lockgate.store import operations as ops

TRIGGER = {"name": "a", "data": {"id": "abc", "n": 3}, "ts": 1_000_000}


def _wait(expression, *, run_id="r", created_at=0, trigger=TRIGGER) -> Wait:
    return Wait(id=f"{run_id}:s", run_id=run_id, step_id="s", kind="wait", event_name="go", expression=expression,
                trigger=trigger, created_at=created_at, expires_at=10**13)


@pytest.mark.parametrize(
    "expression, key",
    [
        ("async.data.id == event.data.id", ("data.id", "abc")),
        ("event.data.id == async.data.id", ("data.id", "abc")),
        ("async.data.id == 'x' && async.data.n > 2", ("data.id", "x")),
        ("async.data.n == 3", ("data.n", 3.0)),
        ("async.data.id == event.data.id || async.data.x == 1", None),  # a disjunction cannot be indexed
        ("async.data.id != 'x'", None),
        ("async.data.id == event.data.missing", None),  # null also matches a missing field: no key
        (None, None),
    ],
)
def test_prepare_picks_an_index_key(expression, key):
    wait = _wait(expression)
    assert prepare(wait) is True
    assert (None if wait.match_path is None else (wait.match_path, wait.match_value)) == key
    if expression:
        assert "event." not in (wait.expression or "")  # the trigger is baked in


def test_prepare_spots_conditions_that_can_never_hold():
    assert prepare(_wait("event.data.n > 5")) is False
    always = _wait("event.data.n == 3")
    assert prepare(always) is True and always.expression is None


def test_lookup_normalises_numbers_like_the_index():
    assert lookup({"data": {"a": {"b": 1}}}, "data.a.b") == (True, 1.0)
    assert lookup({"data": {}}, "data.a.b") == (False, None)


def _add_waiting_run(tx, run_id: str, wait: Wait) -> None:
    ops.insert_run(tx, Run(run_id, "f", "slug", 1, RunStatus.RUNNING.value, [wait.trigger], [], 0,
                           pending_steps=["s"]))
    assert prepare(wait)
    register_wait(tx, wait, now=wait.created_at)


async def test_one_event_resumes_only_its_indexed_waiter_among_many(store):
    def setup(tx):
        for i in range(2000):
            _add_waiting_run(tx, f"run{i}", _wait("async.data.id == event.data.id", run_id=f"run{i}",
                                                  trigger={"data": {"id": i}}))

    await store.write(setup)
    event = Event(internal_id="e", id="e", name="go", data={"id": 1234}, ts=5, received_at=5)
    jobs = await store.write(lambda tx: match_event(tx, event, now=5))
    assert [j.run_id for j in jobs] == ["run1234"]
    memos = await store.read(ops.completed_memos, "run1234")
    assert memos["s"]["data"] == {"id": 1234}
    # resolved once: the same event again finds nothing
    assert await store.write(lambda tx: match_event(tx, event, now=6)) == []


async def test_events_before_registration_do_not_count_without_lookback(store):
    await store.write(lambda tx: _add_waiting_run(tx, "r", _wait("async.data.id == 'abc'", created_at=100)))
    early = Event(internal_id="e1", id="e1", name="go", data={"id": "abc"}, ts=50, received_at=50)
    assert await store.write(lambda tx: match_event(tx, early, now=150)) == []


def _event(internal_id: str, *, received_at: int, ts: int | None = None, **data) -> Event:
    return Event(internal_id=internal_id, id=internal_id, name="go", data=data, ts=ts or received_at,
                 received_at=received_at)


async def test_lookback_finds_the_earliest_matching_event_inside_the_bound(store):
    now = 2_000_000
    await store.write(lambda tx: ops.insert_events(tx, [
        _event("too-old", received_at=TRIGGER["ts"] - 10_000, id="abc"),
        _event("other-id", received_at=TRIGGER["ts"] + 5, id="zzz"),
        _event("first", received_at=TRIGGER["ts"] + 10, id="abc", n=1),
        _event("second", received_at=TRIGGER["ts"] + 20, id="abc", n=2),
    ]))
    wait = _wait("async.data.id == event.data.id && async.ts >= event.ts - 1000")
    assert prepare(wait)
    found = await store.read(lambda tx: lookback_match(tx, wait, now=now, exclude=[]))
    assert found["id"] == "first"
    # the run's own trigger is never its answer
    found = await store.read(lambda tx: lookback_match(tx, wait, now=now, exclude=["first"]))
    assert found["id"] == "second"


async def test_no_lookback_without_a_lower_bound_on_async_ts(store):
    await store.write(lambda tx: ops.insert_events(tx, [_event("e", received_at=TRIGGER["ts"] + 10, id="abc")]))
    wait = _wait("async.data.id == event.data.id")
    assert prepare(wait)
    assert await store.read(lambda tx: lookback_match(tx, wait, now=TRIGGER["ts"] + 20, exclude=[])) is None


async def test_cancel_listeners_call_back_and_stay_registered(store):
    cancelled = []
    listener = Wait(id="r:cancel:0", run_id="r", step_id="cancel:0", kind="cancel", event_name="go",
                    expression="async.data.id == event.data.id", trigger=TRIGGER, created_at=0, expires_at=1000)
    await store.write(lambda tx: _add_waiting_run(tx, "r", listener))
    wrong = _event("e1", received_at=10, id="nope")
    right = _event("e2", received_at=20, id="abc")
    late = _event("e3", received_at=2000, id="abc")  # after the listener's timeout
    for event in (wrong, right, late):
        await store.write(lambda tx: match_event(tx, event, now=event.received_at,
                                                 cancel=lambda w, e: cancelled.append((w.run_id, e.id))))
    assert cancelled == [("r", "e2")]
    assert await store.read(lambda tx: ops.jobs_of_run(tx, "r")) == []  # listeners need no timeout job
