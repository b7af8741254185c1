"""The QStash surface's SQL, as small functions taking a transaction first (see operations.py)."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import orjson

from lockgate.qstash.models import FINAL_STATES, FlowControl, FlowKey, Message, PublishConfig, Queue, Schedule, UrlGroup
from lockgate.store.base import Tx


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def where(filters: dict[str, list[Any]]) -> tuple[str, list[Any]]:
    """AND across columns, OR within one: {"url": [a, b], "label": [c]}. Column names are ours, not input."""
    clauses, params = [], []
    for column, values in filters.items():
        if not values:
            continue
        clauses.append(f"{column} IN ({', '.join('?' for _ in values)})")
        params.extend(values)
    return (" AND ".join(clauses) or "1 = 1"), params


# -- messages -------------------------------------------------------------------------


def message_spec(msg: Message) -> dict[str, Any]:
    spec = dataclasses.asdict(msg)
    spec["body"] = _b64(msg.body)
    for runtime in ("state", "retried", "cancel_requested", "finished_at", "seq"):
        spec.pop(runtime)
    return spec


def message_from_spec(spec: dict[str, Any]) -> Message:
    spec = dict(spec)
    spec["body"] = base64.b64decode(spec["body"])
    flow = spec.get("flow_control")
    spec["flow_control"] = FlowControl(**flow) if flow else None
    return Message(**spec)


def _message_from_row(row: Any) -> Message:
    msg = message_from_spec(orjson.loads(row["spec"]))
    msg.state, msg.retried = row["state"], row["retried"]
    msg.cancel_requested, msg.finished_at, msg.seq = bool(row["cancel_requested"]), row["finished_at"], row["seq"]
    return msg


def insert_message(tx: Tx, msg: Message) -> None:
    tx.execute(
        "INSERT INTO qstash_messages (message_id, state, url, queue_name, topic_name, schedule_id, label,"
        " flow_control_key, caller_ip, not_before, created_at, spec) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (msg.message_id, msg.state, msg.url, msg.queue_name, msg.topic_name, msg.schedule_id, msg.label,
         msg.flow_control.key if msg.flow_control else None, msg.caller_ip, msg.not_before, msg.created_at,
         _json(message_spec(msg))),
    )


def get_message(tx: Tx, message_id: str, *, for_update: bool = False) -> Message | None:
    lock = " FOR UPDATE" if for_update and tx.dialect == "postgres" else ""
    row = tx.one(f"SELECT * FROM qstash_messages WHERE message_id = ?{lock}", (message_id,))
    return _message_from_row(row) if row else None


def recent_messages(tx: Tx, limit: int) -> list[Message]:
    """Messages still stored (pending, in delivery, or finished within the retention), newest first."""
    return [_message_from_row(r) for r in tx.all("SELECT * FROM qstash_messages ORDER BY seq DESC LIMIT ?", (limit,))]


def update_message(tx: Tx, message_id: str, **fields: Any) -> None:
    names = list(fields)
    tx.execute(
        f"UPDATE qstash_messages SET {', '.join(f'{n} = ?' for n in names)} WHERE message_id = ?",
        [int(v) if isinstance(v, bool) else v for v in fields.values()] + [message_id],
    )


def select_unfinished_ids(tx: Tx, filters: dict[str, list[Any]], *, from_ms: int | None, to_ms: int | None,
                          limit: int | None) -> list[str]:
    clause, params = where(filters)
    sql = f"SELECT message_id FROM qstash_messages WHERE {clause} AND state NOT IN (?, ?, ?)"
    params += list(FINAL_STATES)
    if from_ms is not None:
        sql += " AND created_at >= ?"
        params.append(from_ms)
    if to_ms is not None:
        sql += " AND created_at <= ?"
        params.append(to_ms)
    sql += " ORDER BY seq"
    if limit:
        sql += " LIMIT ?"
        params.append(limit)
    return [r["message_id"] for r in tx.all(sql, params)]


def active_count(tx: Tx, column: str, value: str) -> int:
    row = tx.one(f"SELECT COUNT(*) AS n FROM qstash_messages WHERE {column} = ? AND state = 'active'", (value,))
    return row["n"]


def earlier_pending_exists(tx: Tx, queue: str, seq: int, now: int) -> bool:
    row = tx.one(
        "SELECT 1 AS x FROM qstash_messages WHERE queue_name = ? AND state = 'pending' AND seq < ?"
        " AND not_before <= ? LIMIT 1",
        (queue, seq, now),
    )
    return row is not None


def next_pending(tx: Tx, column: str, value: str, limit: int) -> list[tuple[str, int]]:
    rows = tx.all(
        f"SELECT message_id, not_before FROM qstash_messages WHERE {column} = ? AND state = 'pending'"
        " ORDER BY seq LIMIT ?",
        (value, limit),
    )
    return [(r["message_id"], r["not_before"]) for r in rows]


def active_total(tx: Tx) -> int:
    return tx.one("SELECT COUNT(*) AS n FROM qstash_messages WHERE state = 'active'")["n"]


def _flow_from_row(row: Any) -> FlowKey:
    return FlowKey(key=row["flow_key"], parallelism=row["parallelism"], rate=row["rate"], period=row["period"],
                   paused=bool(row["paused"]), pinned_parallelism=bool(row["pinned_parallelism"]),
                   pinned_rate=bool(row["pinned_rate"]), rate_count=row["rate_count"],
                   rate_period_start=row["rate_period_start"])


def get_flow_key(tx: Tx, key: str, *, for_update: bool = False) -> FlowKey | None:
    lock = " FOR UPDATE" if for_update and tx.dialect == "postgres" else ""
    row = tx.one(f"SELECT * FROM qstash_flow_control WHERE flow_key = ?{lock}", (key,))
    return _flow_from_row(row) if row else None


def list_flow_keys(tx: Tx) -> list[FlowKey]:
    return [_flow_from_row(r) for r in tx.all("SELECT * FROM qstash_flow_control ORDER BY flow_key")]


def save_flow_key(tx: Tx, f: FlowKey) -> None:
    tx.execute(
        "INSERT INTO qstash_flow_control (flow_key, parallelism, rate, period, paused, pinned_parallelism,"
        " pinned_rate, rate_count, rate_period_start) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (flow_key)"
        " DO UPDATE SET parallelism = excluded.parallelism, rate = excluded.rate, period = excluded.period,"
        " paused = excluded.paused, pinned_parallelism = excluded.pinned_parallelism,"
        " pinned_rate = excluded.pinned_rate, rate_count = excluded.rate_count,"
        " rate_period_start = excluded.rate_period_start",
        (f.key, f.parallelism, f.rate, f.period, int(f.paused), int(f.pinned_parallelism), int(f.pinned_rate),
         f.rate_count, f.rate_period_start),
    )


def queue_lag(tx: Tx, name: str) -> int:
    row = tx.one(
        "SELECT COUNT(*) AS n FROM qstash_messages WHERE queue_name = ? AND state IN ('pending', 'active')", (name,)
    )
    return row["n"]


def waiting_count(tx: Tx, column: str, value: str) -> int:
    row = tx.one(f"SELECT COUNT(*) AS n FROM qstash_messages WHERE {column} = ? AND state = 'pending'", (value,))
    return row["n"]


# -- event log ------------------------------------------------------------------------


def add_event(tx: Tx, msg: Message, state: str, at: int, data: dict[str, Any]) -> None:
    tx.execute(
        "INSERT INTO qstash_events (message_id, state, logged_at, url, queue_name, topic_name, schedule_id, label, data)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (msg.message_id, state, at, msg.url, msg.queue_name, msg.topic_name, msg.schedule_id, msg.label,
         _json(data)),
    )


def list_events(tx: Tx, filters: dict[str, list[Any]], *, from_ms: int | None, to_ms: int | None,
                before_seq: int | None, count: int) -> list[tuple[int, dict[str, Any]]]:
    clause, params = where(filters)
    sql = f"SELECT seq, data FROM qstash_events WHERE {clause}"
    for cond, value in (("logged_at >= ?", from_ms), ("logged_at <= ?", to_ms), ("seq < ?", before_seq)):
        if value is not None:
            sql += f" AND {cond}"
            params.append(value)
    sql += " ORDER BY seq DESC LIMIT ?"
    params.append(count)
    return [(r["seq"], orjson.loads(r["data"])) for r in tx.all(sql, params)]


# -- DLQ ------------------------------------------------------------------------------


def insert_dlq(tx: Tx, dlq_id: str, msg: Message, status: int, at: int, data: dict[str, Any]) -> None:
    tx.execute(
        "INSERT INTO qstash_dlq (dlq_id, message_id, url, queue_name, topic_name, schedule_id, label,"
        " flow_control_key, caller_ip, response_status, created_at, data, spec)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (dlq_id, msg.message_id, msg.url, msg.queue_name, msg.topic_name, msg.schedule_id, msg.label,
         msg.flow_control.key if msg.flow_control else None, msg.caller_ip, status, at, _json(data),
         _json(message_spec(msg))),
    )


def get_dlq_message(tx: Tx, dlq_id: str) -> Message | None:
    row = tx.one("SELECT spec FROM qstash_dlq WHERE dlq_id = ?", (dlq_id,))
    return message_from_spec(orjson.loads(row["spec"])) if row else None


def dlq_count_at(tx: Tx, at: int) -> int:
    return tx.one("SELECT COUNT(*) AS n FROM qstash_dlq WHERE created_at = ?", (at,))["n"]


def get_dlq(tx: Tx, dlq_id: str) -> dict[str, Any] | None:
    row = tx.one("SELECT data FROM qstash_dlq WHERE dlq_id = ?", (dlq_id,))
    return orjson.loads(row["data"]) if row else None


def list_dlq(tx: Tx, filters: dict[str, list[Any]], *, from_ms: int | None, to_ms: int | None,
             after: tuple[int, str] | None, count: int, newest_first: bool) -> list[tuple[int, str, dict[str, Any]]]:
    clause, params = where(filters)
    sql = f"SELECT dlq_id, created_at, data FROM qstash_dlq WHERE {clause}"
    for cond, value in (("created_at >= ?", from_ms), ("created_at <= ?", to_ms)):
        if value is not None:
            sql += f" AND {cond}"
            params.append(value)
    if after is not None:
        op = "<" if newest_first else ">"
        sql += f" AND (created_at {op} ? OR (created_at = ? AND dlq_id {op} ?))"
        params += [after[0], after[0], after[1]]
    order = "DESC" if newest_first else "ASC"
    sql += f" ORDER BY created_at {order}, dlq_id {order} LIMIT ?"
    params.append(count)
    return [(r["created_at"], r["dlq_id"], orjson.loads(r["data"])) for r in tx.all(sql, params)]


def delete_dlq(tx: Tx, dlq_ids: list[str]) -> int:
    deleted = 0
    for dlq_id in dlq_ids:
        deleted += tx.execute("DELETE FROM qstash_dlq WHERE dlq_id = ?", (dlq_id,)).rowcount
    return deleted


# -- queues ---------------------------------------------------------------------------


def _queue_from_row(tx: Tx, row: Any) -> Queue:
    return Queue(name=row["name"], parallelism=row["parallelism"], paused=bool(row["paused"]),
                 created_at=row["created_at"], updated_at=row["updated_at"], lag=queue_lag(tx, row["name"]))


def get_queue(tx: Tx, name: str, *, for_update: bool = False) -> Queue | None:
    lock = " FOR UPDATE" if for_update and tx.dialect == "postgres" else ""
    row = tx.one(f"SELECT * FROM qstash_queues WHERE name = ?{lock}", (name,))
    return _queue_from_row(tx, row) if row else None


def list_queues(tx: Tx) -> list[Queue]:
    return [_queue_from_row(tx, r) for r in tx.all("SELECT * FROM qstash_queues ORDER BY name")]


def upsert_queue(tx: Tx, name: str, *, parallelism: int, paused: bool, now: int) -> None:
    tx.execute(
        "INSERT INTO qstash_queues (name, parallelism, paused, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET parallelism = excluded.parallelism, paused = excluded.paused,"
        " updated_at = excluded.updated_at",
        (name, parallelism, int(paused), now, now),
    )


def ensure_queue(tx: Tx, name: str, now: int) -> None:
    tx.execute(
        "INSERT INTO qstash_queues (name, parallelism, paused, created_at, updated_at) VALUES (?, 1, 0, ?, ?)"
        " ON CONFLICT (name) DO NOTHING",
        (name, now, now),
    )


def set_queue_paused(tx: Tx, name: str, paused: bool, now: int) -> bool:
    cur = tx.execute("UPDATE qstash_queues SET paused = ?, updated_at = ? WHERE name = ?", (int(paused), now, name))
    return cur.rowcount == 1


def delete_queue(tx: Tx, name: str) -> None:
    tx.execute("DELETE FROM qstash_queues WHERE name = ?", (name,))


# -- URL groups -----------------------------------------------------------------------


def _group_from_row(row: Any) -> UrlGroup:
    return UrlGroup(name=row["name"], endpoints=orjson.loads(row["endpoints"]), created_at=row["created_at"],
                    updated_at=row["updated_at"])


def get_url_group(tx: Tx, name: str) -> UrlGroup | None:
    row = tx.one("SELECT * FROM qstash_url_groups WHERE name = ?", (name,))
    return _group_from_row(row) if row else None


def list_url_groups(tx: Tx) -> list[UrlGroup]:
    return [_group_from_row(r) for r in tx.all("SELECT * FROM qstash_url_groups ORDER BY name")]


def save_url_group(tx: Tx, group: UrlGroup) -> None:
    tx.execute(
        "INSERT INTO qstash_url_groups (name, endpoints, created_at, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET endpoints = excluded.endpoints, updated_at = excluded.updated_at",
        (group.name, _json(group.endpoints), group.created_at, group.updated_at),
    )


def delete_url_group(tx: Tx, name: str) -> None:
    tx.execute("DELETE FROM qstash_url_groups WHERE name = ?", (name,))


# -- schedules ------------------------------------------------------------------------


def _schedule_from_row(row: Any) -> Schedule:
    spec = orjson.loads(row["spec"])
    config = spec["config"]
    flow = config.get("flow_control")
    config["flow_control"] = FlowControl(**flow) if flow else None
    return Schedule(
        schedule_id=row["schedule_id"], destination=spec["destination"], cron=spec["cron"],
        config=PublishConfig(**config), body=base64.b64decode(spec["body"]), created_at=row["created_at"],
        caller_ip=spec.get("caller_ip"), paused=bool(row["paused"]), last_schedule_time=row["last_time"],
        next_schedule_time=row["next_time"], last_states=orjson.loads(row["last_states"]),
    )


def save_schedule(tx: Tx, s: Schedule) -> None:
    spec = {"destination": s.destination, "cron": s.cron, "config": dataclasses.asdict(s.config),
            "body": _b64(s.body), "caller_ip": s.caller_ip}
    tx.execute(
        "INSERT INTO qstash_schedules (schedule_id, paused, created_at, last_time, next_time, last_states, spec)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (schedule_id) DO UPDATE SET paused = excluded.paused,"
        " next_time = excluded.next_time, spec = excluded.spec",
        (s.schedule_id, int(s.paused), s.created_at, s.last_schedule_time, s.next_schedule_time,
         _json(s.last_states), _json(spec)),
    )


def get_schedule(tx: Tx, schedule_id: str) -> Schedule | None:
    row = tx.one("SELECT * FROM qstash_schedules WHERE schedule_id = ?", (schedule_id,))
    return _schedule_from_row(row) if row else None


def list_schedules(tx: Tx) -> list[Schedule]:
    return [_schedule_from_row(r) for r in tx.all("SELECT * FROM qstash_schedules ORDER BY created_at")]


def set_schedule_paused(tx: Tx, schedule_id: str, paused: bool) -> bool:
    cur = tx.execute("UPDATE qstash_schedules SET paused = ? WHERE schedule_id = ?", (int(paused), schedule_id))
    return cur.rowcount == 1


def record_schedule_fire(tx: Tx, schedule_id: str, *, at: int, next_at: int, states: dict[str, str]) -> None:
    tx.execute(
        "UPDATE qstash_schedules SET last_time = ?, next_time = ?, last_states = ? WHERE schedule_id = ?",
        (at, next_at, _json(states), schedule_id),
    )


def delete_schedule(tx: Tx, schedule_id: str) -> None:
    tx.execute("DELETE FROM qstash_schedules WHERE schedule_id = ?", (schedule_id,))


# -- keys and deduplication -----------------------------------------------------------


def get_keys(tx: Tx, owner: str) -> tuple[str, str] | None:
    row = tx.one("SELECT current_key, next_key FROM qstash_keys WHERE owner = ?", (owner,))
    return (row["current_key"], row["next_key"]) if row else None


def set_keys(tx: Tx, owner: str, current: str, next_key: str) -> None:
    tx.execute(
        "INSERT INTO qstash_keys (owner, current_key, next_key) VALUES (?, ?, ?) ON CONFLICT (owner) DO UPDATE"
        " SET current_key = excluded.current_key, next_key = excluded.next_key",
        (owner, current, next_key),
    )


def claim_dedup(tx: Tx, key: str, message_id: str, *, now: int, expires_at: int) -> str | None:
    """Remember key → message id; returns the earlier message id when the key is still live."""
    row = tx.one("SELECT message_id, expires_at FROM qstash_dedup WHERE dedup_key = ?", (key,))
    if row and row["expires_at"] > now:
        return row["message_id"]
    tx.execute(
        "INSERT INTO qstash_dedup (dedup_key, message_id, expires_at) VALUES (?, ?, ?) ON CONFLICT (dedup_key)"
        " DO UPDATE SET message_id = excluded.message_id, expires_at = excluded.expires_at",
        (key, message_id, expires_at),
    )
    return None


# -- jobs -----------------------------------------------------------------------------


def set_job_due(tx: Tx, job_id: str, due_at: int) -> None:
    """Move an unleased job's due time (release a parked queue message, or park one)."""
    tx.execute(
        "UPDATE jobs SET due_at = ?, rank_at = ? WHERE id = ? AND lease_owner IS NULL", (due_at, due_at, job_id)
    )


def job_is_leased(tx: Tx, job_id: str) -> bool:
    row = tx.one("SELECT lease_owner FROM jobs WHERE id = ?", (job_id,))
    return row is not None and row["lease_owner"] is not None


def delete_job(tx: Tx, job_id: str) -> None:
    tx.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
