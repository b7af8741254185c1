"""In-process broker: one node (the SQLite dev server), messages kept in memory.

Ids start from the boot time in microseconds and only grow, so an id handed out before a
restart is older than every id after it (a resume then reports `lost` rather than waiting for
ids that will never come)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from lockgate.realtime.broker import Broker, History, RealtimeOptions
from lockgate.realtime.message import Draft, Message


@dataclass(slots=True)
class _Channel:
    last_id: int = 0
    # (id, previous id on this channel, created_at ms, message)
    held: deque[tuple[int, int, int, Message]] = field(default_factory=deque)


class InProcessBroker(Broker):
    name = "in-process"

    def __init__(self, options: RealtimeOptions | None = None) -> None:
        super().__init__(options)
        self._channels: dict[str, _Channel] = {}
        self._next_id = int(time.time() * 1_000_000)

    def order_key(self, message_id: str) -> int:
        return int(message_id)

    async def _append(self, drafts: list[Draft]) -> list[Message]:
        out = []
        for draft in drafts:
            self._next_id += 1
            channel = self._channels.get(draft.channel)
            if channel is None:
                channel = self._channels[draft.channel] = _Channel()
            message = Message(str(self._next_id), draft.body())
            channel.held.append((self._next_id, channel.last_id, draft.created_at_ms, message))
            channel.last_id = self._next_id
            if len(channel.held) > self.options.retention_messages:
                channel.held.popleft()
            out.append(message)
            self._deliver(message)
        return out

    async def _history(self, channel_name: str, after: str) -> History:
        after_key = int(after)
        channel = self._channels.get(channel_name)
        if channel is None:
            return History()
        self._expire(channel, int(time.time() * 1000))
        later = [entry for entry in channel.held if entry[0] > after_key]
        oldest = str(channel.held[0][0]) if channel.held else None
        lost = (later[0][1] > after_key) if later else channel.last_id > after_key
        return History([entry[3] for entry in later], lost or after_key > channel.last_id, oldest)

    def _expire(self, channel: _Channel, now_ms: int) -> None:
        cutoff = now_ms - self.options.retention_s * 1000
        while channel.held and channel.held[0][2] < cutoff:
            channel.held.popleft()

    async def _sweep(self) -> None:
        now = int(time.time() * 1000)
        # An emptied channel keeps its entry (its last id): enough to tell a resume it lost messages.
        for channel in self._channels.values():
            self._expire(channel, now)
