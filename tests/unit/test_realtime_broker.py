"""The broker's contract, on the in-process backend: order, resume without gaps or duplicates,
retention reported as `lost`, topic filtering, slow subscribers dropped with `closing`."""

from __future__ import annotations

import asyncio

import pytest

from lockgate.realtime import CLOSING, LOST, RealtimeOptions
from lockgate.realtime.memory import InProcessBroker


async def take(sub, n: int, timeout: float = 5.0) -> list:
    return [await asyncio.wait_for(sub.__anext__(), timeout) for _ in range(n)]


async def test_live_messages_arrive_in_order_with_increasing_ids():
    broker = InProcessBroker()
    sub = broker.subscribe("c")
    sent = [await broker.publish("c", "t", {"i": i}) for i in range(5)]
    got = await take(sub, 5)
    assert [m.data["i"] for m in got] == list(range(5))
    assert [m.id for m in got] == [m.id for m in sent]
    assert [int(m.id) for m in got] == sorted(int(m.id) for m in got)
    assert got[0].to_json()["created_at"].endswith("Z") and "run_id" not in got[0].to_json()


async def test_resume_replays_what_was_missed_then_follows_live_without_duplicates():
    broker = InProcessBroker()
    sent = [await broker.publish("c", "t", {"i": i}) for i in range(10)]
    sub = broker.subscribe("c", after=sent[3].id)
    first = await sub.__anext__()  # replay is read now; publish more while it is being drained
    later = [await broker.publish("c", "t", {"i": i}) for i in range(10, 13)]
    rest = await take(sub, 8)
    assert [m.data["i"] for m in [first, *rest]] == list(range(4, 13))
    assert rest[-1].id == later[-1].id


async def test_resume_older_than_retention_says_lost_then_continues_from_the_oldest_held():
    broker = InProcessBroker(RealtimeOptions(retention_messages=3))
    sent = [await broker.publish("c", "t", {"i": i}) for i in range(6)]
    sub = broker.subscribe("c", after=sent[0].id)
    lost, *rest = await take(sub, 4)
    assert lost.kind == LOST and lost.id is None
    assert lost.data == {"after": sent[0].id, "oldest": sent[3].id}
    assert [m.data["i"] for m in rest] == [3, 4, 5]
    # Resuming from the last dropped id loses nothing: no `lost` event.
    exact = broker.subscribe("c", after=sent[2].id)
    assert [m.data["i"] for m in await take(exact, 3)] == [3, 4, 5]


async def test_topics_filter_and_unknown_channels_are_just_empty():
    broker = InProcessBroker()
    sub = broker.subscribe("c", topics={"wanted"})
    await broker.publish("c", "other", 1)
    await broker.publish("c", "wanted", 2)
    assert [m.data for m in await take(sub, 1)] == [2]
    empty = broker.subscribe("nobody-publishes-here", after="1")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(empty.__anext__(), 0.2)


async def test_a_slow_subscriber_is_dropped_with_closing_and_memory_stays_bounded():
    broker = InProcessBroker(RealtimeOptions(subscriber_buffer=5))
    slow = broker.subscribe("c")
    for i in range(50):
        await broker.publish("c", "t", i)
    got = [m async for m in slow]
    assert [m.data for m in got[:-1]] == [0, 1, 2, 3, 4]
    assert got[-1].kind == CLOSING and "behind" in got[-1].data["reason"]
    assert broker.subscriber_count("c") == 0


async def test_an_id_this_backend_never_gave_is_refused():
    with pytest.raises(ValueError):
        InProcessBroker().subscribe("c", after="not-an-id")
