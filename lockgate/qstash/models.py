"""QStash records: messages, log events, DLQ entries, schedules, queues, URL groups."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class MessageState(StrEnum):
    PENDING = "pending"  # accepted, no attempt yet
    ACTIVE = "active"  # attempted at least once, or holding its queue slot while it retries
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        return self in (MessageState.DELIVERED, MessageState.FAILED, MessageState.CANCELED)


FINAL_STATES = (MessageState.DELIVERED.value, MessageState.FAILED.value, MessageState.CANCELED.value)
FINISHED_KEPT_MS = 5 * 60_000  # finished messages stay readable this long (housekeeping deletes them after)
LOGS_KEPT_MS = 7 * 86_400_000  # message log entries


class LogState(StrEnum):
    """Event-log states, spelled exactly as the SDKs parse them (CANCELED with one L)."""

    CREATED = "CREATED"
    ACTIVE = "ACTIVE"
    RETRY = "RETRY"
    ERROR = "ERROR"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    CANCELED = "CANCELED"


@dataclass(slots=True)
class FlowControl:
    key: str
    parallelism: int | None = None
    rate: int | None = None
    period: int = 1  # seconds


@dataclass(slots=True)
class FlowKey:
    """A flow-control key's live state (spec §3.6, §6.7)."""

    key: str
    parallelism: int | None = None
    rate: int | None = None
    period: int = 1
    paused: bool = False
    pinned_parallelism: bool = False
    pinned_rate: bool = False
    rate_count: int = 0
    rate_period_start: int = 0  # ms


@dataclass(slots=True)
class PublishConfig:
    """Everything a publish request's headers configure, validated."""

    method: str = "POST"
    headers: dict[str, list[str]] = field(default_factory=dict)  # delivered to the destination
    delay_ms: int = 0
    not_before_ms: int | None = None
    retries: int = 3
    retry_delay_expr: str | None = None
    timeout_s: int | None = None
    callback: str | None = None
    failure_callback: str | None = None
    callback_headers: dict[str, str] = field(default_factory=dict)  # Upstash-Callback-* as Upstash-*
    failure_callback_headers: dict[str, str] = field(default_factory=dict)
    dedup_id: str | None = None
    content_based_dedup: bool = False
    flow_control: FlowControl | None = None
    labels: list[str] = field(default_factory=list)
    redact: list[str] = field(default_factory=list)  # "body", "header", "header[Name]"
    # schedule create only
    cron: str | None = None
    schedule_id: str | None = None
    queue_name: str | None = None


@dataclass(slots=True)
class Message:
    message_id: str
    url: str
    method: str
    headers: dict[str, list[str]]
    body: bytes
    max_retries: int
    not_before: int
    created_at: int
    retry_delay_expr: str | None = None
    timeout_s: int | None = None
    callback: str | None = None
    failure_callback: str | None = None
    callback_headers: dict[str, str] = field(default_factory=dict)
    failure_callback_headers: dict[str, str] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    redact: list[str] = field(default_factory=list)
    flow_control: FlowControl | None = None
    queue_name: str | None = None
    topic_name: str | None = None
    endpoint_name: str | None = None
    schedule_id: str | None = None
    caller_ip: str | None = None
    # runtime
    state: str = MessageState.PENDING.value
    retried: int = 0
    cancel_requested: bool = False
    finished_at: int | None = None
    seq: int | None = None

    @property
    def label(self) -> str | None:
        return self.labels[0] if self.labels else None


@dataclass(slots=True)
class Schedule:
    schedule_id: str
    destination: str
    cron: str
    config: PublishConfig
    body: bytes
    created_at: int
    caller_ip: str | None = None
    paused: bool = False
    last_schedule_time: int | None = None
    next_schedule_time: int | None = None
    last_states: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Queue:
    name: str
    parallelism: int
    paused: bool
    created_at: int
    updated_at: int
    lag: int = 0


@dataclass(slots=True)
class UrlGroup:
    name: str
    endpoints: list[dict[str, str]]
    created_at: int
    updated_at: int
