"""The broker's contract on every backend (in-process, PostgreSQL, Redis Streams): order, resume
without gaps or duplicates, retention reported as `lost`, topic filtering, slow subscribers
dropped with `closing`, and delivery between two brokers sharing a backend (two replicas)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis

from lockgate.realtime import CLOSING, LOST, Draft, RealtimeOptions
from lockgate.realtime.memory import InProcessBroker
from lockgate.realtime.postgres import PostgresBroker
from lockgate.realtime.redis_streams import RedisBroker
from lockgate.store.postgres import PostgresStore

REDIS_URI = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["store", "redis"])
async def make_broker(request, backend):
    """A factory of started brokers; every broker it makes shares one backend (like replicas)."""
    made, stores = [], []
    if request.param == "redis":
        if backend.name != "sqlite":
            pytest.skip("Redis brokers do not depend on the store backend: run once")
        try:
            redis.Redis.from_url(REDIS_URI, socket_connect_timeout=1).ping()
        except redis.RedisError as exc:
            pytest.skip(f"Redis is unreachable at {REDIS_URI}: {exc}")
    database = backend.new_database() if backend.name == "postgres" and request.param == "store" else None

    async def make(options: RealtimeOptions | None = None):
        if request.param == "redis":
            broker = RedisBroker(REDIS_URI, options)
        elif database is not None:
            store = PostgresStore(database, pool_size=2)
            await store.open()
            stores.append(store)
            broker = PostgresBroker(store, options)
        else:
            if made:
                pytest.skip("the in-process broker has no replicas")
            broker = InProcessBroker(options)
        await broker.start()
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.stop()
    for store in stores:
        await store.close()


@pytest.fixture
async def broker(make_broker):
    return await make_broker()


def fresh() -> str:
    return "t-" + uuid.uuid4().hex[:10]


async def take(sub, n: int, timeout: float = 5.0) -> list:
    return [await asyncio.wait_for(sub.__anext__(), timeout) for _ in range(n)]


async def test_live_messages_arrive_in_order_with_increasing_ids(broker):
    c = fresh()
    sub = broker.subscribe(c)
    await sub.ready()
    sent = [await broker.publish(c, "t", {"i": i}) for i in range(5)]
    got = await take(sub, 5)
    assert [m.data["i"] for m in got] == list(range(5))
    assert [m.id for m in got] == [m.id for m in sent]
    keys = [broker.order_key(m.id) for m in got]
    assert keys == sorted(set(keys))
    assert got[0].to_json()["created_at"].endswith("Z") and "run_id" not in got[0].to_json()


async def test_resume_replays_what_was_missed_then_follows_live_without_duplicates(broker):
    c = fresh()
    sent = [await broker.publish(c, "t", {"i": i}) for i in range(10)]
    sub = broker.subscribe(c, after=sent[3].id)
    first = await sub.__anext__()  # replay is read now; publish more while it is being drained
    later = [await broker.publish(c, "t", {"i": i}) for i in range(10, 13)]
    rest = await take(sub, 8)
    assert [m.data["i"] for m in [first, *rest]] == list(range(4, 13))
    assert rest[-1].id == later[-1].id


async def test_resume_older_than_retention_says_lost_then_continues_from_the_oldest_held(make_broker):
    broker = await make_broker(RealtimeOptions(retention_messages=3))
    c = fresh()
    sent = [await broker.publish(c, "t", {"i": i}) for i in range(40)]
    sub = broker.subscribe(c, after=sent[0].id)
    lost = await sub.__anext__()
    assert lost.kind == LOST and lost.id is None and lost.data["after"] == sent[0].id
    rest = [m.data["i"] async for m in _until(sub, 39)]
    # Retention keeps the last 3 (PostgreSQL trims in steps, so it may hold a few more), in order.
    assert rest == list(range(rest[0], 40)) and rest[0] <= 37 and rest[0] > 1
    assert lost.data["oldest"] == sent[rest[0]].id
    # Resuming from just before the oldest held message loses nothing: no `lost` event.
    exact = broker.subscribe(c, after=sent[rest[0] - 1].id)
    assert (await exact.__anext__()).data["i"] == rest[0]


async def test_topics_filter_and_unknown_channels_are_just_empty(broker):
    c = fresh()
    sub = broker.subscribe(c, topics={"wanted"})
    await sub.ready()
    await broker.publish(c, "other", 1)
    await broker.publish(c, "wanted", 2)
    assert [m.data for m in await take(sub, 1)] == [2]
    empty = broker.subscribe(fresh(), after="1")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(empty.__anext__(), 0.2)


async def test_a_slow_subscriber_is_dropped_with_closing_and_memory_stays_bounded(make_broker):
    broker = await make_broker(RealtimeOptions(subscriber_buffer=5))
    c = fresh()
    slow = broker.subscribe(c)
    await slow.ready()
    await broker.publish_many([Draft(c, "t", i) for i in range(50)])
    got = [m async for m in slow]
    assert [m.data for m in got[:-1]] == [0, 1, 2, 3, 4]
    assert got[-1].kind == CLOSING and "behind" in got[-1].data["reason"]
    assert broker.subscriber_count(c) == 0


async def test_a_second_replica_receives_in_order_with_the_same_ids_and_resumes_from_them(make_broker):
    a, b = await make_broker(), await make_broker()
    c = fresh()
    on_b = b.subscribe(c)
    await on_b.ready()
    sent = [await a.publish(c, "t", {"i": i}) for i in range(20)]
    got = await take(on_b, 20)
    assert [m.id for m in got] == [m.id for m in sent]
    assert [m.data["i"] for m in got] == list(range(20))
    # Reconnect to the other replica with the last id seen: the rest, no gap, no repeat.
    await on_b.close()
    more = [await b.publish(c, "t", {"i": i}) for i in range(20, 25)]
    on_a = a.subscribe(c, after=got[9].id)
    assert [m.data["i"] for m in await take(on_a, 15)] == list(range(10, 25))
    assert more[-1].id == sent[-1].id or b.order_key(more[-1].id) > b.order_key(sent[-1].id)


async def test_an_id_this_backend_never_gave_is_refused(broker):
    with pytest.raises(ValueError):
        broker.subscribe("c", after="not-an-id")


async def _until(sub, last_i: int):
    async for message in sub:
        yield message
        if message.data["i"] == last_i:
            return
