"""The data model, shared by every layer: learn these records once.

Times are integers in milliseconds since the Unix epoch. JSON-shaped fields hold
plain Python values (dict/list/str/...); the store serialises them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from lockgate.protocol.backoff import DEFAULT_RETRIES, clamp_retries


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class RunStatus(StrEnum):
    QUEUED = "Queued"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def is_final(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


FINAL_STATUSES = (RunStatus.COMPLETED.value, RunStatus.FAILED.value, RunStatus.CANCELLED.value)


class JobKind(StrEnum):
    """What a queue item asks the engine to do when it comes due."""

    CALL = "call"  # POST the app: discovery (step_id == "step") or one planned step
    WAKE = "wake"  # a step.sleep is over: record null for the step, then discover
    CRON = "cron"  # a cron tick: create the scheduled.timer event and its run
    WAIT_TIMEOUT = "wait_timeout"  # a waitForEvent or invoke gave up: resume with null / an error
    STEP_REQUEST = "step_request"  # a request the server makes for a step (step.ai.infer, step.fetch)
    QSTASH_DELIVERY = "qstash_delivery"  # deliver (or retry) one QStash message
    QSTASH_SCHEDULE = "qstash_schedule"  # a QStash schedule's cron tick


DISCOVERY_STEP = "step"


@dataclass(slots=True)
class Event:
    internal_id: str
    id: str
    name: str
    data: dict[str, Any]
    ts: int
    received_at: int
    user: dict[str, Any] = field(default_factory=dict)
    v: str | None = None
    started_nothing: str | None = None  # why no function ran for it, recorded at ingest

    def payload(self) -> dict[str, Any]:
        """The event as SDKs and expressions see it."""
        body: dict[str, Any] = {
            "name": self.name,
            "data": self.data,
            "id": self.id,
            "ts": self.ts,
            "user": self.user,
        }
        if self.v is not None:
            body["v"] = self.v
        return body


@dataclass(slots=True)
class App:
    name: str
    url: str
    sdk: str | None = None
    framework: str | None = None
    checksum: str | None = None
    error: str | None = None
    synced_at: int | None = None
    created_at: int = 0


@dataclass(slots=True)
class Function:
    id: str  # internal uuid
    slug: str  # "<app id>-<function id>"
    app_name: str
    name: str
    url: str  # runtime url, already carrying fnId and stepId=step
    config: dict[str, Any]
    version: int = 1
    archived: bool = False

    @property
    def triggers(self) -> list[dict[str, Any]]:
        return list(self.config.get("triggers") or [])

    @property
    def retries(self) -> int:
        step = (self.config.get("steps") or {}).get("step") or {}
        attempts = (step.get("retries") or {}).get("attempts")
        if attempts is None:
            attempts = self.config.get("retries")
        return clamp_retries(DEFAULT_RETRIES if attempts is None else int(attempts))


@dataclass(slots=True)
class Run:
    run_id: str
    function_id: str
    function_slug: str
    function_version: int
    status: str
    events: list[dict[str, Any]]  # trigger payloads as sent to the SDK
    event_ids: list[str]  # internal ids of the triggering events
    created_at: int
    started_at: int | None = None
    ended_at: int | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    reason: str | None = None  # why it is not running / why it ended
    request_version: int = -1
    disable_immediate: bool = False
    pending_steps: list[str] = field(default_factory=list)  # parallel steps still out
    stack: list[str] = field(default_factory=list)  # completed step ids, in order
    cron: str | None = None
    correlation_id: str | None = None  # set when started by step.invoke
    has_output: bool = False
    # Read-time only (filled in by engine.flow.explain, never stored): when the run next moves
    # by itself (sleep over, retry, wait expiry) and its start/finish timeout deadlines.
    wakes_at: int | None = None
    deadlines: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Step:
    run_id: str
    step_id: str  # hashed id
    op: str
    status: str  # completed | failed | sleeping | planned
    display_name: str | None = None
    memo: Any = None  # value sent back to the SDK in `steps`
    position: int | None = None
    attempts: int = 0
    started_at: int | None = None
    ended_at: int | None = None


@dataclass(slots=True)
class Wait:
    """A run paused until an event arrives (waitForEvent) or a child run finishes (invoke)."""

    id: str
    run_id: str
    step_id: str
    kind: str  # "wait" | "invoke"
    event_name: str
    expression: str | None
    trigger: dict[str, Any]
    created_at: int
    expires_at: int
    match_path: str | None = None
    match_value: Any = None
    display_name: str | None = None


@dataclass(slots=True)
class Job:
    """One queue item: due work, leased by one worker at a time."""

    id: str
    kind: str
    due_at: int
    run_id: str | None = None
    step_id: str | None = None
    attempt: int = 0
    rank_at: int | None = None  # queue order; defaults to due_at, priority shifts it
    payload: dict[str, Any] | None = None
    lease_owner: str | None = None
    lease_expires_at: int | None = None
    created_at: int = 0


@dataclass(slots=True)
class RunFilter:
    """Which runs a list, a count or a bulk action covers (SQL-side filters; see engine.run_search)."""

    statuses: list[str] = field(default_factory=list)
    function_ids: list[str] = field(default_factory=list)  # internal ids, resolved from slugs or apps
    created_from: int | None = None  # ms, inclusive
    created_to: int | None = None  # ms, exclusive
    events_contain: list[str] = field(default_factory=list)  # substrings of the stored trigger JSON (a pre-filter)
