"""The QStash side of the engine: what the QStash router calls, and the handler for its jobs."""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp

from lockgate.models import Job, JobKind, now_ms
from lockgate.outbound import OutboundPolicy
from lockgate.protocol.cron import parse_cron
from lockgate.protocol.qstash_signing import new_signing_key, random_b58
from lockgate.qstash import delivery
from lockgate.qstash.config import ConfigError, classify_destination, parse_config
from lockgate.qstash.models import PublishConfig, Schedule
from lockgate.qstash.publish import NotFound, PublishRequest, batch_in_tx, publish_in_tx
from lockgate.store import operations as ops
from lockgate.store import qstash_operations as qops
from lockgate.store.base import Store, Tx

log = logging.getLogger("lockgate.qstash")

OWNER = "default"


@dataclass(slots=True)
class QStashOptions:
    token: str | None
    current_signing_key: str
    next_signing_key: str
    backoff_scale: float = 1.0
    max_timeout_s: float = 900.0
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)  # where deliveries may go


def schedule_job_id(schedule_id: str) -> str:
    return f"qstash-schedule:{schedule_id}"


class QStash:
    def __init__(self, store: Store, options: QStashOptions, wake: Callable[[], None]) -> None:
        self.store = store
        self.options = options
        self.wake = wake
        self._keys: tuple[str, str] | None = None

    # -- keys ----------------------------------------------------------------------

    async def keys(self) -> tuple[str, str]:
        if self._keys is None:
            def load(tx: Tx) -> tuple[str, str]:
                found = qops.get_keys(tx, OWNER)
                if found is None:
                    found = (self.options.current_signing_key, self.options.next_signing_key)
                    qops.set_keys(tx, OWNER, *found)
                return found

            self._keys = await self.store.write(load)
        return self._keys

    async def rotate_keys(self) -> tuple[str, str]:
        _, next_key = await self.keys()
        pair = (next_key, new_signing_key())
        await self.store.write(qops.set_keys, OWNER, *pair)
        self._keys = pair
        return pair

    # -- publishing ----------------------------------------------------------------

    def _refuse_forbidden(self, destination: str, cfg: PublishConfig) -> None:
        """A destination or callback the outbound policy refuses is a 400 now, not a failure per delivery."""
        for what, url in (("destination url", destination), ("callback url", cfg.callback),
                          ("failure callback url", cfg.failure_callback)):
            problem = url and self.options.outbound.url_problem(url)
            if problem:
                raise ConfigError(f"invalid {what}: refused by lockgate's outbound policy: {problem}")

    async def publish(self, req: PublishRequest) -> Any:
        self._refuse_forbidden(req.destination, req.config)
        result = await self.store.write(lambda tx: publish_in_tx(tx, req, now=now_ms()))
        self.wake()
        return result

    async def batch(self, requests: list[PublishRequest]) -> list[Any]:
        for req in requests:
            self._refuse_forbidden(req.destination, req.config)
        result = await self.store.write(lambda tx: batch_in_tx(tx, requests, now=now_ms()))
        self.wake()
        return result

    async def cancel(self, message_ids: list[str]) -> int:
        n = await self.store.write(lambda tx: delivery.cancel_in_tx(tx, message_ids, now=now_ms()))
        self.wake()
        return n

    async def cancel_matching(self, filters: dict[str, list[Any]], *, from_ms: int | None, to_ms: int | None,
                              limit: int | None) -> int:
        def run(tx: Tx) -> int:
            ids = qops.select_unfinished_ids(tx, filters, from_ms=from_ms, to_ms=to_ms, limit=limit)
            return delivery.cancel_in_tx(tx, ids, now=now_ms())

        n = await self.store.write(run)
        self.wake()
        return n

    async def retry_dlq(self, dlq_ids: list[str], overrides: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Re-publish DLQ entries as new messages; headers sent with the retry override the stored ones."""
        now = now_ms()
        extra = parse_config(overrides, now_ms=now) if overrides else None

        def run(tx: Tx) -> list[dict[str, Any]]:
            out = []
            for dlq_id in dlq_ids:
                msg = qops.get_dlq_message(tx, dlq_id)  # the message row itself may be purged by now
                if msg is None:
                    continue
                cfg = PublishConfig(
                    method=msg.method, headers=msg.headers, retries=msg.max_retries,
                    retry_delay_expr=msg.retry_delay_expr, timeout_s=msg.timeout_s, callback=msg.callback,
                    failure_callback=msg.failure_callback, callback_headers=msg.callback_headers,
                    failure_callback_headers=msg.failure_callback_headers, labels=msg.labels,
                    flow_control=msg.flow_control,
                )
                if extra is not None:
                    for name, _ in overrides:
                        low = name.lower()
                        if low == "upstash-retries":
                            cfg.retries = extra.retries
                        elif low == "upstash-retry-delay":
                            cfg.retry_delay_expr = extra.retry_delay_expr
                        elif low in ("upstash-delay", "upstash-not-before"):
                            cfg.delay_ms, cfg.not_before_ms = extra.delay_ms, extra.not_before_ms
                        elif low == "upstash-method":
                            cfg.method = extra.method
                        elif low == "upstash-timeout":
                            cfg.timeout_s = extra.timeout_s
                result = publish_in_tx(tx, PublishRequest(
                    destination=msg.url, body=msg.body, config=cfg, queue=msg.queue_name,
                    caller_ip=msg.caller_ip, schedule_id=msg.schedule_id), now=now)
                qops.delete_dlq(tx, [dlq_id])
                out.append({"messageId": result["messageId"]})
            return out

        result = await self.store.write(run)
        self.wake()
        return result

    # -- schedules -----------------------------------------------------------------

    async def upsert_schedule(self, destination: str, body: bytes, cfg: PublishConfig, caller_ip: str | None) -> str:
        if not cfg.cron:
            raise ConfigError("Upstash-Cron header is required to create a schedule")
        try:
            cron = parse_cron(cfg.cron)
        except ValueError as exc:
            raise ConfigError(f"invalid Upstash-Cron: {exc}") from None
        now = now_ms()
        schedule_id = cfg.schedule_id or "scd_" + random_b58(24)
        classify_destination(destination)
        self._refuse_forbidden(destination, cfg)

        def run(tx: Tx) -> None:
            existing = qops.get_schedule(tx, schedule_id)
            next_at = cron.next_after(now)
            schedule = Schedule(schedule_id=schedule_id, destination=destination, cron=cfg.cron, config=cfg,
                                body=body, created_at=existing.created_at if existing else now, caller_ip=caller_ip,
                                paused=existing.paused if existing else False, next_schedule_time=next_at)
            qops.save_schedule(tx, schedule)
            qops.delete_job(tx, schedule_job_id(schedule_id))
            ops.enqueue(tx, [Job(id=schedule_job_id(schedule_id), kind=JobKind.QSTASH_SCHEDULE.value,
                                 due_at=next_at, created_at=now, payload={"schedule_id": schedule_id})])

        await self.store.write(run)
        self.wake()
        return schedule_id

    async def delete_schedule(self, schedule_id: str) -> None:
        def run(tx: Tx) -> None:
            qops.delete_schedule(tx, schedule_id)
            qops.delete_job(tx, schedule_job_id(schedule_id))

        await self.store.write(run)

    # -- jobs ----------------------------------------------------------------------

    async def handle_job(self, job: Job, session: aiohttp.ClientSession) -> None:
        if job.kind == JobKind.QSTASH_SCHEDULE.value:
            await self.store.write(lambda tx: _fire_schedule(tx, job, now=now_ms()))
            return
        msg = await self.store.write(lambda tx: delivery.claim(tx, job, now=now_ms()))
        if msg is None:
            return
        current, _ = await self.keys()
        outcome = await delivery.call(session, msg, key=current, max_timeout_s=self.options.max_timeout_s)
        became = await self.store.write(lambda tx: delivery.settle(tx, job, msg, outcome, now=now_ms(),
                                                                   backoff_scale=self.options.backoff_scale))
        _log_delivery(msg, outcome, became)


def _log_delivery(msg: Any, outcome: delivery.Outcome, became: str | None) -> None:
    """One terminal line per attempt, as for runs: a failed delivery is never silent."""
    fields = {"message_id": msg.message_id, "url": msg.url}
    if became == "delivered":
        log.info("qstash message %s delivered to %s (HTTP %s)", msg.message_id, msg.url, outcome.status,
                 extra=fields)
    elif became == "dlq":
        log.warning("qstash message %s to %s failed: %s; no retry left (%d retried), moved to the DLQ"
                    " (dashboard: QStash → DLQ, or GET /v2/dlq)", msg.message_id, msg.url,
                    delivery.failure_text(outcome), msg.retried, extra=fields)
    elif became and became.startswith("retry at "):
        at = datetime.datetime.fromtimestamp(int(became.split()[-1]) / 1000, datetime.timezone.utc)
        log.warning("qstash message %s to %s failed: %s; retry %d of %d at %s", msg.message_id, msg.url,
                    delivery.failure_text(outcome), msg.retried + 1, msg.max_retries,
                    at.isoformat(timespec="seconds").replace("+00:00", "Z"), extra=fields)


def _fire_schedule(tx: Tx, job: Job, *, now: int) -> None:
    schedule = qops.get_schedule(tx, job.payload["schedule_id"])
    if schedule is None:
        ops.release_job(tx, job)
        return
    states: dict[str, str] = schedule.last_states
    if not schedule.paused:
        try:
            result = publish_in_tx(tx, PublishRequest(
            destination=schedule.destination, body=schedule.body, config=schedule.config,
            queue=schedule.config.queue_name, caller_ip=schedule.caller_ip, schedule_id=schedule.schedule_id,
            ), now=now)
        except NotFound:  # its URL group is gone: skip this tick, keep the schedule
            result = []
        states = {r["messageId"]: "IN_PROGRESS" for r in (result if isinstance(result, list) else [result])}
    next_at = parse_cron(schedule.cron).next_after(max(now, job.due_at))
    qops.record_schedule_fire(tx, schedule.schedule_id, at=now if not schedule.paused else schedule.last_schedule_time,
                              next_at=next_at, states=states)
    ops.retry_job(tx, job, due_at=next_at, attempt=0)
