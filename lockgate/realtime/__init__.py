"""Realtime broker: channels, retention, fan-out and resume.

    broker = build_broker(store, redis_uri=None, options=RealtimeOptions())
    await broker.start()
    async with broker.subscribe("lockgate:runs", topics={"progress"}, after=None) as sub:
        async for message in sub: ...        # lockgate.realtime.Message
    await broker.publish("chat:1", "tokens", {"text": "hi"})

Backends: in-process (SQLite, one node), PostgreSQL (table + LISTEN/NOTIFY, several replicas),
Redis Streams (with `--redis-uri`). The wire shape is documented in docs/realtime.md.
"""

from __future__ import annotations

from typing import Any

from lockgate.realtime.broker import Broker, BrokerUnavailable, History, RealtimeOptions, Subscription
from lockgate.realtime.message import CLOSING, LOST, RESERVED_PREFIX, Draft, Message

__all__ = ["Broker", "BrokerUnavailable", "History", "RealtimeOptions", "Subscription", "Draft", "Message", "CLOSING", "LOST",
           "RESERVED_PREFIX", "build_broker", "run_channel", "RUNS_CHANNEL", "PROGRESS_TOPIC"]

RUNS_CHANNEL = "lockgate:runs"
PROGRESS_TOPIC = "progress"


def run_channel(run_id: str) -> str:
    return f"lockgate:run:{run_id}"


def build_broker(store: Any, *, redis_uri: str | None = None, options: RealtimeOptions | None = None) -> Broker:
    """Redis when configured, else PostgreSQL when the store is, else in-process."""
    if redis_uri:
        from lockgate.realtime.redis_streams import RedisBroker

        return RedisBroker(redis_uri, options)
    from lockgate.store.postgres import PostgresStore

    if isinstance(store, PostgresStore):
        from lockgate.realtime.postgres import PostgresBroker

        return PostgresBroker(store, options)
    from lockgate.realtime.memory import InProcessBroker

    return InProcessBroker(options)
