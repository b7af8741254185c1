"""Redis Streams broker (`--redis-uri`): one stream per channel, shared by every replica.

A publish is an XADD (the stream id is the message id, the same on every replica), trimmed to
the retention count and age. Each replica runs one reader that XREADs every channel it has
subscribers for, from the last id it delivered, so messages arrive in stream order and a
reader that was cut off resumes where it stopped. A resume is an XRANGE after the given id;
the stream's `max-deleted-entry-id` says whether retention already dropped part of what the
subscriber missed. If Redis goes away, publishes fail with a clear error, the log and
`lockgate doctor` say so, and the reader reconnects and catches up when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from lockgate.realtime.broker import Broker, BrokerUnavailable, History, RealtimeOptions
from lockgate.realtime.message import Draft, Message

log = logging.getLogger("lockgate.realtime")

KEY_PREFIX = "lockgate:rt:"
BLOCK_MS = 5000

# XADD that also stores the id of the entry before it ("p"), atomically: a resume compares the
# first entry it gets with its own last id and so knows whether retention dropped any between.
_APPEND = """
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = '0-0'
if #newest > 0 then prev = newest[1][1] end
return redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'm', ARGV[1], 'p', prev)
"""


def redact(uri: str) -> str:
    scheme, sep, rest = uri.partition("://")
    if "@" in rest:
        rest = "****@" + rest.split("@", 1)[1]
    return scheme + sep + rest


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBroker(Broker):
    name = "redis"

    def __init__(self, uri: str, options: RealtimeOptions | None = None) -> None:
        super().__init__(options)
        self.uri = uri
        # A pooled connection that died with a Redis restart fails its next command: retry it once
        # on a fresh connection rather than failing a publish after Redis is back.
        self._client = aioredis.Redis.from_url(uri, socket_connect_timeout=2, socket_timeout=10,
                                               retry=Retry(NoBackoff(), 1),
                                               retry_on_error=[RedisConnectionError, RedisTimeoutError])
        self._cursors: dict[str, str | None] = {}  # followed channel → last id delivered here
        self._reader: asyncio.Task | None = None
        self._reader_id: int | None = None  # the reader connection's CLIENT ID, to interrupt its XREAD
        self._followed = asyncio.Event()  # a channel became ready to follow

    def order_key(self, message_id: str) -> tuple[int, int]:
        ms, _, seq = message_id.partition("-")
        key = (int(ms), int(seq or 0))
        if key[0] < 0 or key[1] < 0:
            raise ValueError(message_id)
        return key

    async def start(self) -> None:
        await super().start()
        try:
            await self._client.ping()
        except RedisError as exc:
            self._trouble(exc)
        self._reader = asyncio.create_task(self._read_forever(), name="realtime-redis-reader")

    async def stop(self) -> None:
        if self._reader is None:
            return
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        self._reader = None
        await super().stop()
        await self._client.aclose()

    async def _append(self, drafts: list[Draft]) -> list[Message]:
        return await self._coalesced(drafts)

    async def _store_batch(self, drafts: list[Draft]) -> list[Message]:
        bodies = [d.body() for d in drafts]
        cutoff = int((time.time() - self.options.retention_s) * 1000)
        pipe = self._client.pipeline(transaction=False)
        for draft, body in zip(drafts, bodies):
            key = KEY_PREFIX + draft.channel
            pipe.eval(_APPEND, 1, key, orjson.dumps(body), self.options.retention_messages)
        for channel in {d.channel for d in drafts}:
            key = KEY_PREFIX + channel
            pipe.xtrim(key, minid=cutoff, approximate=True)
            pipe.pexpire(key, int(self.options.retention_s * 1000) + 60_000)  # idle channels vanish
        try:
            results = await pipe.execute()
        except RedisError as exc:
            self._trouble(exc)
            raise BrokerUnavailable(f"Redis at {redact(self.uri)} is unreachable ({exc.__class__.__name__}); "
                                    "the message was not published") from exc
        self._recovered()
        # Local subscribers get these through the reader, like every other replica's.
        return [Message(_text(i), b) for i, b in zip(results[: len(drafts)], bodies)]

    async def _history(self, channel: str, after: str) -> History:
        key = KEY_PREFIX + channel
        after_key = self.order_key(after)
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.xinfo_stream(key)
            pipe.xrange(key, min=f"({after_key[0]}-{after_key[1]}", count=self.options.retention_messages)
            info, entries = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            self._trouble(exc)
            raise BrokerUnavailable(f"Redis at {redact(self.uri)} is unreachable ({exc.__class__.__name__})") from exc
        if isinstance(info, ResponseError):  # no such stream: nothing held
            return History()
        if isinstance(entries, Exception):
            raise BrokerUnavailable(f"Redis refused XRANGE: {entries}")
        messages = [Message(_text(i), orjson.loads(f[b"m"])) for i, f in entries]
        last = self.order_key(_text(info.get("last-generated-id", b"0-0")))
        first = info.get("first-entry")
        if entries:
            lost = self.order_key(_text(entries[0][1].get(b"p", b"0-0"))) > after_key
        else:
            lost = last > after_key
        return History(messages, lost or after_key > last, _text(first[0]) if first else None)

    # -- the reader ---------------------------------------------------------------

    def _watch(self, channel: str) -> None:
        self._cursors.setdefault(channel, None)

    def _unwatch(self, channel: str) -> None:
        self._cursors.pop(channel, None)

    async def _ready(self, channel: str) -> None:
        if channel not in self._cursors or self._cursors[channel] is not None:
            return
        try:
            newest = await self._client.xrevrange(KEY_PREFIX + channel, count=1)
        except RedisError as exc:
            self._trouble(exc)
            raise BrokerUnavailable(f"Redis at {redact(self.uri)} is unreachable ({exc.__class__.__name__})") from exc
        if channel in self._cursors and self._cursors[channel] is None:
            self._cursors[channel] = _text(newest[0][0]) if newest else "0-0"
        self._followed.set()
        await self._interrupt_reader()

    async def _interrupt_reader(self) -> None:
        """Make the reader's blocked XREAD return, so it picks up a newly followed channel now."""
        if self._reader_id is not None:
            try:
                await self._client.client_unblock(self._reader_id)
            except RedisError:
                pass  # the reader notices within BLOCK_MS anyway

    async def _read_forever(self) -> None:
        while True:
            reader = aioredis.Redis.from_url(self.uri, socket_connect_timeout=2, socket_timeout=BLOCK_MS / 1000 + 5,
                                             single_connection_client=True)
            try:
                self._reader_id = int(await reader.client_id())
                self._recovered()
                while True:
                    await self._read_once(reader)
            except asyncio.CancelledError:
                raise
            except RedisError as exc:
                self._trouble(exc)
                await asyncio.sleep(1.0)
            finally:
                self._reader_id = None
                await reader.aclose()

    async def _read_once(self, reader: aioredis.Redis) -> None:
        streams = {KEY_PREFIX + c: cursor for c, cursor in self._cursors.items() if cursor is not None}
        if not streams:
            self._followed.clear()
            await self._followed.wait()
            return
        found = await reader.xread(streams, count=1000, block=BLOCK_MS)
        for key, entries in found or ():
            channel = _text(key)[len(KEY_PREFIX):]
            for raw_id, fields in entries:
                cursor = self._cursors.get(channel)
                message_id = _text(raw_id)
                if cursor is None or self.order_key(message_id) <= self.order_key(cursor):
                    continue
                self._cursors[channel] = message_id
                self._deliver(Message(message_id, orjson.loads(fields[b"m"])))

    # -- health -------------------------------------------------------------------

    def _trouble(self, exc: Exception) -> None:
        if self.problem is None:
            log.error("realtime: Redis at %s is unreachable (%s: %s); publishing fails until it is back, "
                      "retrying every second", redact(self.uri), exc.__class__.__name__, exc)
        self.problem = f"Redis at {redact(self.uri)} is unreachable ({exc.__class__.__name__})"

    def _recovered(self) -> None:
        if self.problem is not None:
            log.warning("realtime: Redis at %s is reachable again", redact(self.uri))
            self.problem = None
