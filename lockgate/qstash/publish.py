"""Accepting messages: one store write commits the messages, their log entries and their delivery jobs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from lockgate.models import Job, JobKind
from lockgate.protocol.qstash_signing import random_b58
from lockgate.qstash import flow
from lockgate.qstash.config import ConfigError, classify_destination, due_at
from lockgate.qstash.models import LogState, Message, PublishConfig
from lockgate.qstash.render import event_json
from lockgate.store import operations as ops
from lockgate.store import qstash_operations as qops
from lockgate.store.base import Tx

DEDUP_WINDOW_MS = 10 * 60_000


class NotFound(LookupError):
    pass


@dataclass(slots=True)
class PublishRequest:
    destination: str
    body: bytes
    config: PublishConfig
    queue: str | None = None
    caller_ip: str | None = None
    schedule_id: str | None = None
    extra_headers: dict[str, list[str]] = field(default_factory=dict)


def new_message_id() -> str:
    return "msg_" + random_b58(26)


def delivery_job_id(message_id: str) -> str:
    return f"qstash:{message_id}"


def _dedup_key(req: PublishRequest, url: str) -> str | None:
    cfg = req.config
    if cfg.dedup_id:
        return f"id:{url if req.destination != url else ''}:{cfg.dedup_id}"
    if cfg.content_based_dedup:
        digest = hashlib.sha256()
        digest.update(url.encode() + b"\0" + req.body + b"\0")
        digest.update(orjson.dumps(cfg.headers, option=orjson.OPT_SORT_KEYS))
        return "content:" + digest.hexdigest()
    return None


def store_message(tx: Tx, msg: Message, *, now: int) -> None:
    """Insert a message, its CREATED entry and its delivery job (due at its not-before)."""
    qops.insert_message(tx, msg)
    extra = {"nextDeliveryTime": msg.not_before} if msg.not_before > now else {}
    qops.add_event(tx, msg, LogState.CREATED.value, now, event_json(msg, LogState.CREATED.value, now, **extra))
    ops.enqueue(tx, [Job(id=delivery_job_id(msg.message_id), kind=JobKind.QSTASH_DELIVERY.value,
                         due_at=msg.not_before, created_at=now, payload={"message_id": msg.message_id})])


def publish_in_tx(tx: Tx, req: PublishRequest, *, now: int) -> list[dict[str, Any]] | dict[str, Any]:
    """Returns the SDK response body: an object for a URL, a list for a URL group."""
    kind, target = classify_destination(req.destination)
    if kind == "group":
        group = qops.get_url_group(tx, target)
        if group is None or not group.endpoints:
            raise NotFound(f"url group {target!r} not found")
        endpoints = [(e["url"], e.get("name")) for e in group.endpoints]
    else:
        endpoints = [(target, None)]
    if req.queue:
        qops.ensure_queue(tx, req.queue, now)
    cfg = req.config
    if cfg.flow_control is not None:
        flow.note(tx, cfg.flow_control)
    results = []
    for url, endpoint_name in endpoints:
        headers = {k: list(v) for k, v in cfg.headers.items()}
        for k, v in req.extra_headers.items():
            headers.setdefault(k, v)
        msg = Message(
            message_id=new_message_id(), url=url, method=cfg.method, headers=headers, body=req.body,
            max_retries=cfg.retries, not_before=due_at(cfg, now), created_at=now,
            retry_delay_expr=cfg.retry_delay_expr, timeout_s=cfg.timeout_s, callback=cfg.callback,
            failure_callback=cfg.failure_callback, callback_headers=dict(cfg.callback_headers),
            failure_callback_headers=dict(cfg.failure_callback_headers), labels=list(cfg.labels),
            redact=list(cfg.redact),
            flow_control=cfg.flow_control, queue_name=req.queue, topic_name=target if kind == "group" else None,
            endpoint_name=endpoint_name, schedule_id=req.schedule_id, caller_ip=req.caller_ip,
        )
        result: dict[str, Any] = {"messageId": msg.message_id}
        key = _dedup_key(req, url)
        earlier = key and qops.claim_dedup(tx, key, msg.message_id, now=now, expires_at=now + DEDUP_WINDOW_MS)
        if earlier:
            result = {"messageId": earlier, "deduplicated": True}
        else:
            store_message(tx, msg, now=now)
        if kind == "group":
            result["url"] = url
        results.append(result)
    return results if kind == "group" else results[0]


def is_deduplicated(result: list[dict[str, Any]] | dict[str, Any]) -> bool:
    items = result if isinstance(result, list) else [result]
    return bool(items) and all(r.get("deduplicated") for r in items)


def batch_in_tx(tx: Tx, requests: list[PublishRequest], *, now: int) -> list[Any]:
    return [publish_in_tx(tx, req, now=now) for req in requests]


__all__ = ["ConfigError", "NotFound", "PublishRequest", "publish_in_tx", "batch_in_tx", "store_message"]
