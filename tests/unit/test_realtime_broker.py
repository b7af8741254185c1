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
from lockgate.realtime.postgres import NOTIFY_CHANNEL, SINGLE_NOTIFY_CHANNEL, PostgresBroker
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


# -- PostgreSQL: in-process delivery, NOTIFY only between replicas -------------------------------


async def _postgres_replica(make_broker):
    broker = await make_broker()
    if not isinstance(broker, PostgresBroker):
        pytest.skip("PostgreSQL replicas only")
    return broker


async def _notifications(uri: str):
    """A plain LISTEN connection on the brokers' NOTIFY channels (not a replica itself)."""
    import psycopg

    conn = await psycopg.AsyncConnection.connect(uri, autocommit=True)
    for channel in (NOTIFY_CHANNEL, SINGLE_NOTIFY_CHANNEL):
        await conn.execute(f"LISTEN {channel}")
    return conn


async def _drain(conn, seconds: float = 0.3) -> list[str]:
    return [n.payload async for n in conn.notifies(timeout=seconds)]


async def test_a_lone_postgresql_replica_delivers_in_process_and_notifies_once_a_peer_listens(make_broker):
    a = await _postgres_replica(make_broker)
    spy = await _notifications(a.uri)
    try:
        c = fresh()
        on_a = a.subscribe(c)
        await on_a.ready()
        alone = [await a.publish(c, "t", {"i": i}) for i in range(5)]
        assert [m.id for m in await take(on_a, 5)] == [m.id for m in alone]
        assert await _drain(spy) == []  # nobody else listens: no NOTIFY at all
        b = await make_broker()
        on_b = b.subscribe(c)
        await on_b.ready()
        shared = [await a.publish(c, "t", {"i": i}) for i in range(5, 10)]
        assert [m.id for m in await take(on_b, 5)] == [m.id for m in shared]
        assert [m.id for m in await take(on_a, 5)] == [m.id for m in shared]
        assert await _drain(spy) != []  # now B depends on them
    finally:
        await spy.close()


async def test_a_replica_joining_during_a_stream_of_publishes_misses_nothing_after_it_subscribed(make_broker):
    a = await _postgres_replica(make_broker)
    c = fresh()
    total = 300
    sent: list = []

    async def publish_all() -> None:
        for i in range(total):
            sent.append(await a.publish(c, "t", {"i": i}))

    publishing = asyncio.create_task(publish_all())
    await asyncio.sleep(0.05)
    b = await make_broker()  # starts listening while A publishes without NOTIFY
    on_b = b.subscribe(c)
    await on_b.ready()
    first_after = len(sent)
    await publishing
    assert first_after < total, "the stream ended before the second replica joined"
    got = [m async for m in _until(on_b, total - 1)]
    ids = [m.id for m in got]
    # From some message no later than the first one published after ready(), every one, once, in order.
    assert ids == [m.id for m in sent[sent.index(next(m for m in sent if m.id == ids[0])):]]
    assert got[0].data["i"] <= first_after


async def test_two_replicas_publishing_to_one_channel_deliver_the_same_sequence_on_both(make_broker):
    a = await _postgres_replica(make_broker)
    b = await make_broker()
    c = fresh()
    on_a, on_b = a.subscribe(c), b.subscribe(c)
    await on_a.ready()
    await on_b.ready()

    async def publish(broker, offset: int) -> list:
        return [await broker.publish(c, "t", {"i": offset + i}) for i in range(100)]

    from_a, from_b = await asyncio.gather(publish(a, 0), publish(b, 1000))
    everything = sorted((m for m in from_a + from_b), key=lambda m: a.order_key(m.id))
    expected = [m.id for m in everything]
    assert [m.id for m in await take(on_a, 200)] == expected
    assert [m.id for m in await take(on_b, 200)] == expected
    for sub in (on_a, on_b):
        with pytest.raises(asyncio.TimeoutError):  # and nothing twice
            await asyncio.wait_for(sub.__anext__(), 0.3)
