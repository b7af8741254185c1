"""The broker: channels with retention, fan-out to local subscribers, resume from an id.

One `Broker` per process. Backends (in-process, PostgreSQL, Redis) store messages and bring
every published message, in order per channel, to `_deliver` on every replica; the base class
fans it out to this process's subscribers. A `Subscription` replays what it missed (after a
resume id) and then follows live, dropping nothing and repeating nothing.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

from lockgate.realtime.message import CLOSING, LOST, Draft, Message, control

log = logging.getLogger("lockgate.realtime")


@dataclass(slots=True)
class RealtimeOptions:
    retention_s: float = 3600.0  # a channel keeps messages this long…
    retention_messages: int = 10_000  # …and at most this many
    max_message_bytes: int = 512 * 1024
    subscriber_buffer: int = 1000  # live messages a subscriber may fall behind before it is dropped
    token_ttl_s: float = 3600.0


class BrokerUnavailable(RuntimeError):
    """The backend cannot take or serve messages right now (the message says which and why)."""


@dataclass(slots=True)
class History:
    """What a channel still holds after a resume id."""

    messages: list[Message] = field(default_factory=list)
    lost: bool = False  # messages after the id were already dropped by retention
    oldest: str | None = None  # the oldest id still held


class Broker(abc.ABC):
    name = "broker"

    def __init__(self, options: RealtimeOptions | None = None) -> None:
        self.options = options or RealtimeOptions()
        self._subscribers: dict[str, set[Subscription]] = {}
        self._sweeper: asyncio.Task | None = None
        self.problem: str | None = None  # a backend outage, in words (for /health and doctor)
        self._queued: list[tuple[list[Draft], asyncio.Future]] = []  # publishes waiting for the next write
        self._writing: asyncio.Task | None = None

    # -- public API ---------------------------------------------------------------

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="realtime-sweeper")

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
            self._sweeper = None
        for subs in list(self._subscribers.values()):
            for sub in list(subs):
                sub._end("the server is shutting down; reconnect with the last id to resume")

    async def publish(self, channel: str, topic: str, data: Any, *, kind: str = "data", run_id: str | None = None,
                      fn_id: str | None = None, stream_id: str | None = None) -> Message:
        draft = Draft(channel, topic, data, kind, run_id, fn_id, stream_id)
        return (await self.publish_many([draft]))[0]

    async def publish_many(self, drafts: list[Draft]) -> list[Message]:
        """Store the drafts (one round trip where the backend allows) and deliver them everywhere."""
        now = int(time.time() * 1000)
        for draft in drafts:
            if not draft.created_at_ms:
                draft.created_at_ms = now
        return await self._append(drafts)

    def subscribe(self, channel: str, *, topics: Iterable[str] | None = None, after: str | None = None) -> "Subscription":
        """Follow a channel from this process. `after`: an id to resume from (replays what came
        later, within retention). Raises ValueError for an id this backend never hands out."""
        if after is not None:
            self.order_key(after)
        sub = Subscription(self, channel, None if topics is None else frozenset(topics), after)
        subs = self._subscribers.get(channel)
        if subs is None:
            subs = self._subscribers[channel] = set()
            self._watch(channel)
        subs.add(sub)
        return sub

    def followed(self, channel: str) -> bool:
        """Whether a subscriber, here or on another replica, may be waiting for `channel` right now
        (publishers that batch may wait a little longer when not). Backends that cannot tell say so."""
        return True

    def subscriber_count(self, channel: str | None = None) -> int:
        if channel is not None:
            return len(self._subscribers.get(channel, ()))
        return sum(len(s) for s in self._subscribers.values())

    # -- backend hooks ------------------------------------------------------------

    @abc.abstractmethod
    async def _append(self, drafts: list[Draft]) -> list[Message]:
        """Give each draft an id, store it, and see that `_deliver` gets it on every replica."""

    @abc.abstractmethod
    async def _history(self, channel: str, after: str) -> History: ...

    async def _store_batch(self, drafts: list[Draft]) -> list[Message]:
        """For `_coalesced`: store drafts in one round trip to the shared backend."""
        raise NotImplementedError

    async def _coalesced(self, drafts: list[Draft]) -> list[Message]:
        """Publishes arriving while a write is in flight share the next one: under load one
        round trip (one transaction, one pipeline) carries many messages, and the backend sees
        one writer per process, in publish order."""
        done = asyncio.get_running_loop().create_future()
        self._queued.append((drafts, done))
        if self._writing is None:
            self._writing = asyncio.create_task(self._write_queued())
        return await done

    async def _write_queued(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued[:200], self._queued[200:]
                try:
                    stored = await self._store_batch([d for part, _ in batch for d in part])
                except Exception as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                start = 0
                for part, done in batch:
                    if not done.done():
                        done.set_result(stored[start:start + len(part)])
                    start += len(part)
        finally:
            self._writing = None

    @abc.abstractmethod
    def order_key(self, message_id: str) -> Any:
        """A sortable key for an id; ValueError if it is not one of ours."""

    async def _ready(self, channel: str) -> None:
        """Called before a subscription reads history: live delivery for `channel` must cover
        everything published from now on."""

    def _watch(self, channel: str) -> None:
        """The first local subscriber of `channel` arrived."""

    def _unwatch(self, channel: str) -> None:
        """The last local subscriber of `channel` left."""

    async def _sweep(self) -> None:
        """Drop messages older than retention."""

    # -- internals ----------------------------------------------------------------

    def _deliver(self, message: Message) -> None:
        for sub in tuple(self._subscribers.get(message.channel, ())):
            sub._offer(message)

    def _forget(self, sub: "Subscription") -> None:
        subs = self._subscribers.get(sub.channel)
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        if not subs:
            del self._subscribers[sub.channel]
            self._unwatch(sub.channel)

    async def _sweep_forever(self) -> None:
        interval = max(1.0, min(60.0, self.options.retention_s / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                await self._sweep()
            except Exception as exc:  # the next round tries again
                log.warning("realtime: dropping expired messages failed: %s", exc)


class Subscription:
    """An async iterator of one channel's messages for one subscriber.

    Ends after a `closing` message when the subscriber falls too far behind or the server stops;
    a `lost` message comes first when the resume id is older than retention."""

    def __init__(self, broker: Broker, channel: str, topics: frozenset[str] | None, after: str | None) -> None:
        self.broker = broker
        self.channel = channel
        self.topics = topics
        self.after = after
        self._replay: deque[Message] = deque()
        self._live: deque[Message] = deque()
        self._wake = asyncio.Event()
        self._started = False
        self._ending = False  # a closing message is queued: nothing more is accepted
        self._done = False
        self._last_key: Any = None

    def __aiter__(self) -> "Subscription":
        return self

    async def __aenter__(self) -> "Subscription":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        self._done = True
        self._wake.set()
        self.broker._forget(self)

    @property
    def last_id(self) -> str | None:
        return self.after

    async def ready(self) -> None:
        """Wait until live delivery is set up (and history read): messages published after this
        returns are sure to arrive. Iterating does this by itself."""
        if not self._started:
            self._started = True
            await self._load_history()

    async def __anext__(self) -> Message:
        await self.ready()
        while True:
            if self._done:
                raise StopAsyncIteration
            message = self._replay.popleft() if self._replay else self._live.popleft() if self._live else None
            if message is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            if message.id is None:  # control
                if message.kind == CLOSING:
                    self._done = True
                    self.broker._forget(self)
                return message
            key = self.broker.order_key(message.id)
            if self._last_key is not None and key <= self._last_key:
                continue  # already had it (replay and live overlap)
            self._last_key = key
            self.after = message.id
            return message

    async def _load_history(self) -> None:
        await self.broker._ready(self.channel)
        if self.after is None:
            return
        history = await self.broker._history(self.channel, self.after)
        if history.lost:
            self._replay.append(control(LOST, self.channel, {"after": self.after, "oldest": history.oldest}))
        else:
            self._last_key = self.broker.order_key(self.after)
        self._replay.extend(m for m in history.messages if self._wants(m))

    def _wants(self, message: Message) -> bool:
        return self.topics is None or message.topic in self.topics

    def _offer(self, message: Message) -> None:
        if self._ending or self._done or not self._wants(message):
            return
        if len(self._live) >= self.broker.options.subscriber_buffer:
            self._end(f"subscriber fell more than {self.broker.options.subscriber_buffer} messages behind; "
                      "reconnect with the last id to resume")
            return
        self._live.append(message)
        self._wake.set()

    def _end(self, reason: str) -> None:
        """Queue a closing message after what is buffered, and accept nothing more."""
        if self._ending or self._done:
            return
        self._ending = True
        self._live.append(control(CLOSING, self.channel, {"reason": reason}))
        self._wake.set()
        self.broker._forget(self)
