"""The one realtime message shape: what the SDKs parse, plus an `id` for resuming."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

# Kinds the server itself emits to a subscriber (never stored, never carry an id).
CLOSING = "closing"
LOST = "lost"

RESERVED_PREFIX = "lockgate:"  # channels only the server may publish to


@dataclass(slots=True)
class Draft:
    """A message before the broker gives it an id."""

    channel: str
    topic: str
    data: Any
    kind: str = "data"
    run_id: str | None = None
    fn_id: str | None = None
    stream_id: str | None = None
    created_at_ms: int = 0

    def body(self) -> dict[str, Any]:
        """The wire fields except `id`; absent ones are left out (the JS SDK rejects nulls)."""
        out: dict[str, Any] = {"channel": self.channel, "topic": self.topic, "kind": self.kind, "data": self.data}
        if self.run_id:
            out["run_id"] = self.run_id
        if self.fn_id:
            out["fn_id"] = self.fn_id
        if self.stream_id:
            out["stream_id"] = self.stream_id
        out["created_at"] = iso_ms(self.created_at_ms)
        return out


@dataclass(slots=True, frozen=True)
class Message:
    """A stored (or control) message. `id` is None only for control kinds (closing, lost)."""

    id: str | None
    body: dict[str, Any]

    @property
    def channel(self) -> str:
        return self.body.get("channel", "")

    @property
    def topic(self) -> str:
        return self.body.get("topic", "")

    @property
    def kind(self) -> str:
        return self.body.get("kind", "data")

    @property
    def data(self) -> Any:
        return self.body.get("data")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, **self.body} if self.id is not None else dict(self.body)

    def dumps(self) -> bytes:
        return orjson.dumps(self.to_json())


def control(kind: str, channel: str, data: Any) -> Message:
    return Message(None, {"channel": channel, "kind": kind, "data": data,
                          "created_at": iso_ms(None)})


def iso_ms(ms: int | None) -> str:
    return _iso_of_ms(int(datetime.now(timezone.utc).timestamp() * 1000) if not ms else ms)


@functools.lru_cache(maxsize=512)  # a run's progress goes to two channels with one time
def _iso_of_ms(ms: int) -> str:
    when = datetime.fromtimestamp(ms / 1000, timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
