"""The JSON shapes the QStash SDKs parse (spec §6). Empty fields are omitted, as the hosted service does."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from lockgate.qstash.models import Message, Queue, Schedule, UrlGroup


def _drop_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != {} and v != []}


def body_fields(body: bytes, text_key: str = "body", b64_key: str = "bodyBase64") -> dict[str, str]:
    try:
        return {text_key: body.decode("utf-8")} if body else {}
    except UnicodeDecodeError:
        return {b64_key: base64.b64encode(body).decode()}


def forwarded(config_headers: dict[str, str]) -> dict[str, list[str]]:
    prefix = "upstash-forward-"
    return {k[len(prefix):]: [v] for k, v in config_headers.items() if k.lower().startswith(prefix)}


def flow_fields(flow) -> dict[str, Any]:
    if flow is None:
        return {}
    return {"flowControlKey": flow.key, "parallelism": flow.parallelism, "rate": flow.rate, "period": flow.period}


def _redacted(value: bytes) -> str:
    return "REDACTED:" + hashlib.sha256(value).hexdigest()


def shown_headers(msg: Message) -> dict[str, list[str]]:
    """Headers as the API shows them: redacted ones become a hash; delivery still uses the originals."""
    every = "header" in msg.redact
    names = {r[len("header["):-1] for r in msg.redact if r.startswith("header[")}
    return {k: [_redacted(v.encode()) for v in vs] if every or k in names else vs for k, vs in msg.headers.items()}


def shown_body(msg: Message, b64: bool = False) -> dict[str, str]:
    if "body" in msg.redact and msg.body:
        return {"body": _redacted(msg.body)}
    if b64:
        return {"body": base64.b64encode(msg.body).decode()} if msg.body else {}
    return body_fields(msg.body)


def message_json(msg: Message) -> dict[str, Any]:
    out = {
        "messageId": msg.message_id,
        "url": msg.url,
        "method": msg.method,
        "maxRetries": msg.max_retries,
        "notBefore": msg.not_before,
        "createdAt": msg.created_at,
        "topicName": msg.topic_name,
        "endpointName": msg.endpoint_name,
        "queueName": msg.queue_name,
        "scheduleId": msg.schedule_id,
        "header": shown_headers(msg),
        **shown_body(msg),
        "callback": msg.callback,
        "failureCallback": msg.failure_callback,
        "callbackHeader": forwarded(msg.callback_headers),
        "failureCallbackHeader": forwarded(msg.failure_callback_headers),
        "callerIP": msg.caller_ip,
        "retryDelayExpression": msg.retry_delay_expr,
        "label": msg.label,
        "labels": msg.labels,
        "timeout": msg.timeout_s,
        **flow_fields(msg.flow_control),
    }
    return _drop_empty(out)


def event_json(msg: Message, state: str, at: int, **extra: Any) -> dict[str, Any]:
    """A log entry; the message's static fields ride on every one (the SDK tests read them from any entry)."""
    out = {
        "time": at,
        "messageId": msg.message_id,
        "state": state,
        "url": msg.url,
        "topicName": msg.topic_name,
        "endpointName": msg.endpoint_name,
        "queueName": msg.queue_name,
        "scheduleId": msg.schedule_id,
        "header": shown_headers(msg),
        **shown_body(msg, b64=True),
        "method": msg.method,
        "callback": msg.callback,
        "failureCallback": msg.failure_callback,
        "maxRetries": msg.max_retries,
        "retryDelayExpr": msg.retry_delay_expr,
        "retryDelayExpression": msg.retry_delay_expr,
        "label": msg.label,
        "labels": msg.labels,
        **flow_fields(msg.flow_control),
        **extra,
    }
    if "responseHeader" in out:
        out["responseHeaders"] = out["responseHeader"]
    return _drop_empty(out)


def schedule_json(s: Schedule) -> dict[str, Any]:
    cfg = s.config
    out = {
        "scheduleId": s.schedule_id,
        "destination": s.destination,
        "cron": s.cron,
        "createdAt": s.created_at,
        "method": cfg.method,
        "retries": cfg.retries,
        "isPaused": s.paused,
        **body_fields(s.body),
        "header": cfg.headers,
        "callback": cfg.callback,
        "failureCallback": cfg.failure_callback,
        "callbackHeader": forwarded(cfg.callback_headers),
        "failureCallbackHeader": forwarded(cfg.failure_callback_headers),
        "delay": cfg.delay_ms // 1000 if cfg.delay_ms else None,
        "timeout": cfg.timeout_s,
        "callerIP": s.caller_ip,
        "callerIp": s.caller_ip,
        "queueName": cfg.queue_name,
        "retryDelayExpression": cfg.retry_delay_expr,
        "label": cfg.labels[0] if cfg.labels else None,
        "labels": cfg.labels,
        "lastScheduleTime": s.last_schedule_time,
        "nextScheduleTime": s.next_schedule_time,
        "lastScheduleStates": s.last_states,
        **flow_fields(cfg.flow_control),
    }
    out = _drop_empty(out)
    out["isPaused"] = s.paused  # always sent, even when false
    return out


def queue_json(q: Queue) -> dict[str, Any]:
    return {"name": q.name, "parallelism": q.parallelism, "createdAt": q.created_at, "updatedAt": q.updated_at,
            "lag": q.lag, "paused": q.paused}


def group_json(g: UrlGroup) -> dict[str, Any]:
    return {"name": g.name, "createdAt": g.created_at, "updatedAt": g.updated_at,
            "endpoints": [_drop_empty(e) for e in g.endpoints]}
