"""Delivering one QStash message: admit it (queue FIFO, parallelism), call it, settle the outcome.

Admission and settlement run in store transactions, so queue parallelism holds however many
processes share the store: a message counts as `active` from its first attempt until it is final,
which also keeps its queue slot through its retries. A message that is not admitted is parked
(its job moved an hour ahead); the message that frees a slot moves the next ones back to now.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from yarl import URL

from lockgate.models import Job
from lockgate.protocol.qstash_signing import sign
from lockgate.protocol.text import first_line
from lockgate.qstash import flow
from lockgate.qstash.config import parse_config
from lockgate.qstash.models import LogState, Message, MessageState
from lockgate.qstash.publish import delivery_job_id, new_message_id, store_message
from lockgate.qstash.render import event_json, message_json
from lockgate.qstash.retry import next_retry_delay_ms
from lockgate.store import operations as ops
from lockgate.store import qstash_operations as qops
from lockgate.store.base import Tx

PARK_MS = 3_600_000  # a safety net only: freeing a slot un-parks explicitly
MAX_RESPONSE_BODY = 1_048_576


@dataclass(slots=True)
class Outcome:
    status: int = 0  # 0: no HTTP response (timeout, connection refused)
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def non_retryable(self) -> bool:
        flag = [v.lower() for v in self.headers.get("Upstash-Nonretryable-Error", [])]
        return self.status == 489 and "true" in flag


def _admission(tx: Tx, msg: Message, now: int) -> tuple[bool, int | None, int]:
    """(admitted, retry_at, at); retry_at None means: wait until a finishing message frees a slot; `at` is
    when it was admitted (see flow.admit)."""
    if msg.queue_name:
        queue = qops.get_queue(tx, msg.queue_name, for_update=True)
        if queue is not None:
            if queue.paused or qops.active_count(tx, "queue_name", msg.queue_name) >= queue.parallelism:
                return False, None, now
            if msg.seq is not None and qops.earlier_pending_exists(tx, msg.queue_name, msg.seq, now):
                return False, None, now
    if msg.flow_control is not None:
        return flow.admit(tx, msg.flow_control.key, now)
    return True, None, now


def claim(tx: Tx, job: Job, *, now: int) -> Message | None:
    """Lease-holder's first step: returns the message to call now, or None (finished, parked)."""
    msg = qops.get_message(tx, job.payload["message_id"], for_update=True)
    if msg is None or MessageState(msg.state).is_final:
        ops.release_job(tx, job)
        return None
    if msg.state == MessageState.PENDING.value:
        admitted, retry_at, now = _admission(tx, msg, now)
        if not admitted:
            ops.retry_job(tx, job, due_at=retry_at or now + PARK_MS, attempt=job.attempt)
            return None
        qops.update_message(tx, msg.message_id, state=MessageState.ACTIVE.value)
        msg.state = MessageState.ACTIVE.value
    qops.add_event(tx, msg, LogState.ACTIVE.value, now, event_json(msg, LogState.ACTIVE.value, now))
    return msg


def request_headers(msg: Message, key: str) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for name, values in msg.headers.items():
        headers.extend((name, v) for v in values)
    headers += [
        ("User-Agent", "Upstash-QStash"),
        ("Upstash-Signature", sign(key, url=msg.url, body=msg.body)),
        ("Upstash-Message-Id", msg.message_id),
        ("Upstash-Retried", str(msg.retried)),
    ]
    for name, value in (("Upstash-Topic-Name", msg.topic_name), ("Upstash-Schedule-Id", msg.schedule_id),
                        ("Upstash-Caller-Ip", msg.caller_ip), ("Upstash-Label", ",".join(msg.labels) or None)):
        if value:
            headers.append((name, value))
    return headers


async def call(session: aiohttp.ClientSession, msg: Message, *, key: str, max_timeout_s: float) -> Outcome:
    headers = request_headers(msg, key)
    skip = [] if "Content-Type" in msg.headers else ["Content-Type"]
    timeout = aiohttp.ClientTimeout(total=msg.timeout_s or max_timeout_s, sock_connect=10)
    try:
        async with session.request(
            msg.method, URL(msg.url, encoded=True), data=msg.body, headers=headers, timeout=timeout,
            allow_redirects=False, skip_auto_headers=skip,
        ) as response:
            body = await response.content.read(MAX_RESPONSE_BODY)
            found: dict[str, list[str]] = {}
            for name, value in response.headers.items():
                found.setdefault("-".join(p.capitalize() for p in name.split("-")), []).append(value)
            return Outcome(status=response.status, headers=found, body=body)
    except asyncio.TimeoutError:
        return Outcome(error=f"request timed out after {msg.timeout_s or max_timeout_s:g}s")
    except aiohttp.ClientError as exc:
        return Outcome(error=f"{exc.__class__.__name__}: {exc}")


def _response_fields(outcome: Outcome) -> dict[str, Any]:
    out: dict[str, Any] = {"responseStatus": outcome.status, "responseHeader": outcome.headers or None}
    if outcome.body:
        out["responseBody"] = base64.b64encode(outcome.body).decode()
    if outcome.error:
        out["error"] = outcome.error
    return out


def _callback_body(msg: Message, outcome: Outcome, *, dlq_id: str | None = None) -> bytes:
    body: dict[str, Any] = {
        "status": outcome.status,
        "header": outcome.headers,
        "body": base64.b64encode(outcome.body).decode(),
        "maxRetries": msg.max_retries,
        "sourceMessageId": msg.message_id,
        "url": msg.url,
        "method": msg.method,
        "sourceHeader": msg.headers,
        "sourceBody": base64.b64encode(msg.body).decode(),
        "notBefore": msg.not_before,
        "createdAt": msg.created_at,
        "callerIP": msg.caller_ip,
    }
    if msg.retried:
        body["retried"] = msg.retried  # omitted on the first attempt, as the hosted service does
    for key, value in (("topicName", msg.topic_name), ("endpointName", msg.endpoint_name),
                       ("scheduleId", msg.schedule_id), ("dlqId", dlq_id)):
        if value:
            body[key] = value
    return orjson.dumps(body)


def _publish_callback(tx: Tx, msg: Message, url: str, config_headers: dict[str, str], body: bytes, now: int) -> None:
    headers = dict(config_headers)
    if not any(k.lower() == "upstash-retries" for k in headers):
        headers["Upstash-Retries"] = str(msg.max_retries)
    cfg = parse_config(headers.items(), now_ms=now)
    cfg.headers.setdefault("Content-Type", ["application/json"])
    store_message(tx, Message(
        message_id=new_message_id(), url=url, method=cfg.method, headers=cfg.headers, body=body,
        max_retries=cfg.retries, not_before=now, created_at=now, retry_delay_expr=cfg.retry_delay_expr,
        timeout_s=cfg.timeout_s, callback=cfg.callback, failure_callback=cfg.failure_callback,
        callback_headers=cfg.callback_headers, failure_callback_headers=cfg.failure_callback_headers,
        caller_ip=msg.caller_ip,
    ), now=now)


def free_slot(tx: Tx, msg: Message, now: int) -> None:
    """A message reached a final state: move the next waiting ones of its queue / key back to due."""
    lanes = []
    if msg.queue_name:
        queue = qops.get_queue(tx, msg.queue_name)
        if queue is not None and not queue.paused:
            lanes.append(("queue_name", msg.queue_name, queue.parallelism))
    key = qops.get_flow_key(tx, msg.flow_control.key) if msg.flow_control is not None else None
    if key is not None and not key.paused:
        lanes.append(("flow_control_key", key.key, key.parallelism or 1))
    for column, value, width in lanes:
        release_waiting(tx, column, value, width, now)


def release_waiting(tx: Tx, column: str, value: str, width: int, now: int) -> None:
    """Move the oldest waiting messages of a queue / flow-control key back to due (never before their time)."""
    for message_id, not_before in qops.next_pending(tx, column, value, width):
        qops.set_job_due(tx, delivery_job_id(message_id), max(now, not_before))


def _finish(tx: Tx, job: Job, msg: Message, state: MessageState, log_state: LogState, now: int,
            **extra: Any) -> None:
    qops.update_message(tx, msg.message_id, state=state.value, finished_at=now)
    qops.add_event(tx, msg, log_state.value, now, event_json(msg, log_state.value, now, **extra))
    ops.release_job(tx, job)
    free_slot(tx, msg, now)
    if msg.schedule_id:
        schedule = qops.get_schedule(tx, msg.schedule_id)
        if schedule is not None and msg.message_id in schedule.last_states:
            schedule.last_states[msg.message_id] = "SUCCESS" if state == MessageState.DELIVERED else "FAIL"
            qops.record_schedule_fire(tx, msg.schedule_id, at=schedule.last_schedule_time,
                                      next_at=schedule.next_schedule_time, states=schedule.last_states)


def failure_text(outcome: Outcome) -> str:
    """A failed delivery in words: the transport error, or the status and the answer's first line."""
    if outcome.error:
        return f"no answer ({outcome.error})"
    line = first_line(outcome.body.decode("utf-8", "replace"), 200)
    return f"HTTP {outcome.status}" + (f": {line}" if line else "")


def settle(tx: Tx, job: Job, sent: Message, outcome: Outcome, *, now: int, backoff_scale: float) -> str | None:
    """Record one delivery attempt; answers what became of the message ("delivered", "dlq", "retry at <ms>",
    "cancelled"), or None when it had already ended."""
    msg = qops.get_message(tx, sent.message_id, for_update=True)
    if msg is None or MessageState(msg.state).is_final:
        ops.release_job(tx, job)
        return None
    response = _response_fields(outcome)
    if msg.callback:
        _publish_callback(tx, msg, msg.callback, msg.callback_headers, _callback_body(msg, outcome), now)
    if outcome.ok:
        _finish(tx, job, msg, MessageState.DELIVERED, LogState.DELIVERED, now, **response)
        return "delivered"
    qops.add_event(tx, msg, LogState.ERROR.value, now, event_json(msg, LogState.ERROR.value, now, **response))
    if msg.cancel_requested:
        _finish(tx, job, msg, MessageState.CANCELED, LogState.CANCELED, now)
        return "cancelled"
    if outcome.non_retryable or msg.retried >= msg.max_retries:
        dlq_id = f"{now}-{qops.dlq_count_at(tx, now)}"
        entry = {**message_json(msg), "dlqId": dlq_id, "responseStatus": outcome.status,
                 "responseHeader": outcome.headers or None, "error": outcome.error}
        try:
            entry["responseBody"] = outcome.body.decode("utf-8")
        except UnicodeDecodeError:
            entry["responseBodyBase64"] = base64.b64encode(outcome.body).decode()
        qops.insert_dlq(tx, dlq_id, msg, outcome.status, now, {k: v for k, v in entry.items() if v is not None})
        _finish(tx, job, msg, MessageState.FAILED, LogState.FAILED, now, **response)
        if msg.failure_callback:
            _publish_callback(tx, msg, msg.failure_callback, msg.failure_callback_headers,
                              _callback_body(msg, outcome, dlq_id=dlq_id), now)
        return "dlq"
    delay = next_retry_delay_ms(msg.retried + 1, response_headers=outcome.headers, expression=msg.retry_delay_expr,
                                now_ms=now, backoff_scale=backoff_scale)
    qops.update_message(tx, msg.message_id, retried=msg.retried + 1)
    qops.add_event(tx, msg, LogState.RETRY.value, now,
                   event_json(msg, LogState.RETRY.value, now, nextDeliveryTime=now + delay))
    ops.retry_job(tx, job, due_at=now + delay, attempt=msg.retried + 1)
    return f"retry at {now + delay}"


def cancel_in_tx(tx: Tx, message_ids: list[str], *, now: int) -> int:
    """Cancel unfinished messages; one being called right now finishes its attempt, then stops."""
    cancelled = 0
    for message_id in message_ids:
        msg = qops.get_message(tx, message_id, for_update=True)
        if msg is None or MessageState(msg.state).is_final or msg.cancel_requested:
            continue
        cancelled += 1
        qops.add_event(tx, msg, LogState.CANCEL_REQUESTED.value, now,
                       event_json(msg, LogState.CANCEL_REQUESTED.value, now))
        job_id = delivery_job_id(message_id)
        if qops.job_is_leased(tx, job_id):
            qops.update_message(tx, message_id, cancel_requested=True)
            continue
        qops.delete_job(tx, job_id)
        qops.update_message(tx, message_id, state=MessageState.CANCELED.value, finished_at=now)
        qops.add_event(tx, msg, LogState.CANCELED.value, now, event_json(msg, LogState.CANCELED.value, now))
        free_slot(tx, msg, now)
    return cancelled
