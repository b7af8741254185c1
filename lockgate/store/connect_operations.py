"""SQL for Connect: gateways (replicas), their connected workers, and calls relayed between replicas."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lockgate.store.base import Tx
from lockgate.store.operations import notify_replicas

CONNECT_CHANNEL = "lockgate_connect"  # a relayed call or its reply is waiting in connect_requests


@dataclass(slots=True)
class WorkerRow:
    connection_id: str
    app_name: str
    gateway_id: str
    instance_id: str | None
    app_version: str | None
    sdk_language: str | None
    sdk_version: str | None
    status: str
    max_concurrency: int | None
    connected_at: int
    last_heartbeat_at: int


# -- gateways ----------------------------------------------------------------------------


def beat_gateway(tx: Tx, gateway_id: str, endpoint: str, draining: bool, now: int) -> None:
    tx.execute(
        "INSERT INTO connect_gateways (gateway_id, endpoint, draining, heartbeat_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (gateway_id) DO UPDATE SET endpoint = excluded.endpoint, draining = excluded.draining,"
        " heartbeat_at = excluded.heartbeat_at",
        (gateway_id, endpoint, int(draining), now),
    )


def live_gateways(tx: Tx, fresh_after: int) -> dict[str, str]:
    """gateway id → endpoint, for replicas that beat recently and are not draining."""
    rows = tx.all("SELECT gateway_id, endpoint FROM connect_gateways WHERE heartbeat_at > ? AND draining = 0",
                  (fresh_after,))
    return {r["gateway_id"]: r["endpoint"] for r in rows}


def gateway_alive(tx: Tx, gateway_id: str, fresh_after: int) -> bool:
    return tx.one("SELECT 1 FROM connect_gateways WHERE gateway_id = ? AND heartbeat_at > ?",
                  (gateway_id, fresh_after)) is not None


def remove_gateway(tx: Tx, gateway_id: str) -> None:
    tx.execute("DELETE FROM connect_workers WHERE gateway_id = ?", (gateway_id,))
    tx.execute("DELETE FROM connect_gateways WHERE gateway_id = ?", (gateway_id,))


# -- workers -----------------------------------------------------------------------------


def upsert_workers(tx: Tx, rows: list[WorkerRow]) -> None:
    tx.executemany(
        "INSERT INTO connect_workers (connection_id, app_name, gateway_id, instance_id, app_version, sdk_language,"
        " sdk_version, status, max_concurrency, connected_at, last_heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (connection_id, app_name) DO UPDATE SET gateway_id = excluded.gateway_id,"
        " status = excluded.status, last_heartbeat_at = excluded.last_heartbeat_at",
        [(r.connection_id, r.app_name, r.gateway_id, r.instance_id, r.app_version, r.sdk_language, r.sdk_version,
          r.status, r.max_concurrency, r.connected_at, r.last_heartbeat_at) for r in rows],
    )


def beat_workers(tx: Tx, connection_ids: list[str], statuses: list[str], now: int) -> None:
    tx.executemany("UPDATE connect_workers SET last_heartbeat_at = ?, status = ? WHERE connection_id = ?",
                   [(now, status, cid) for cid, status in zip(connection_ids, statuses)])


def remove_worker(tx: Tx, connection_id: str) -> None:
    tx.execute("DELETE FROM connect_workers WHERE connection_id = ?", (connection_id,))


def list_workers(tx: Tx, fresh_after: int) -> list[WorkerRow]:
    rows = tx.all("SELECT * FROM connect_workers WHERE last_heartbeat_at > ? ORDER BY connected_at", (fresh_after,))
    return [WorkerRow(**{k: r[k] for k in WorkerRow.__slots__}) for r in rows]


def gateways_with_ready_worker(tx: Tx, app_name: str, exclude: str, fresh_after: int) -> list[str]:
    rows = tx.all(
        "SELECT DISTINCT w.gateway_id FROM connect_workers w JOIN connect_gateways g ON g.gateway_id = w.gateway_id"
        " WHERE w.app_name = ? AND w.status = 'ready' AND w.gateway_id <> ? AND w.last_heartbeat_at > ?"
        " AND g.heartbeat_at > ? AND g.draining = 0",
        (app_name, exclude, fresh_after, fresh_after),
    )
    return [r["gateway_id"] for r in rows]


# -- relayed calls -----------------------------------------------------------------------


def relay_request(tx: Tx, request_id: str, origin_id: str, gateway_id: str, app_name: str, request: str,
                  now: int) -> None:
    tx.execute(
        "INSERT INTO connect_requests (request_id, origin_id, gateway_id, app_name, request, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (request_id, origin_id, gateway_id, app_name, request, now),
    )
    notify_replicas(tx, CONNECT_CHANNEL)


def claim_requests(tx: Tx, gateway_id: str, now: int) -> list[tuple[str, str]]:
    """Relayed calls addressed to this gateway and not yet handed to a worker: (request id, base64 request)."""
    rows = tx.all("SELECT request_id, request FROM connect_requests WHERE gateway_id = ? AND claimed_at IS NULL"
                  " AND request IS NOT NULL", (gateway_id,))
    claimed = []
    for r in rows:  # conditional per row: two claims racing on one replica hand each call out once
        cur = tx.execute("UPDATE connect_requests SET claimed_at = ? WHERE request_id = ? AND claimed_at IS NULL",
                         (now, r["request_id"]))
        if cur.rowcount:
            claimed.append((r["request_id"], r["request"]))
    return claimed


def record_reply(tx: Tx, request_id: str, reply: str, now: int) -> None:
    """A reply that reached a replica not waiting for it: park it for whoever is."""
    cur = tx.execute("UPDATE connect_requests SET reply = ? WHERE request_id = ? AND reply IS NULL",
                     (reply, request_id))
    if not cur.rowcount:
        tx.execute("INSERT INTO connect_requests (request_id, reply, created_at) VALUES (?, ?, ?)"
                   " ON CONFLICT (request_id) DO NOTHING", (request_id, reply, now))
    notify_replicas(tx, CONNECT_CHANNEL)


def record_lease(tx: Tx, request_id: str, until: int, now: int) -> None:
    """A lease extension that reached a replica not running the call: the call is still alive."""
    cur = tx.execute("UPDATE connect_requests SET lease_expires_at = ? WHERE request_id = ?", (until, request_id))
    if not cur.rowcount:
        tx.execute("INSERT INTO connect_requests (request_id, lease_expires_at, created_at) VALUES (?, ?, ?)"
                   " ON CONFLICT (request_id) DO NOTHING", (request_id, until, now))


def relayed_state(tx: Tx, request_ids: list[str]) -> dict[str, tuple[str | None, int | None]]:
    """request id → (base64 reply or None, lease expiry or None) for rows that exist."""
    if not request_ids:
        return {}
    marks = ", ".join("?" for _ in request_ids)
    rows = tx.all(f"SELECT request_id, reply, lease_expires_at FROM connect_requests WHERE request_id IN ({marks})",
                  request_ids)
    return {r["request_id"]: (r["reply"], r["lease_expires_at"]) for r in rows}


def forget_requests(tx: Tx, request_ids: list[str]) -> None:
    tx.executemany("DELETE FROM connect_requests WHERE request_id = ?", [(rid,) for rid in request_ids])


def prune_requests(tx: Tx, older_than: int) -> int:
    return tx.execute("DELETE FROM connect_requests WHERE created_at < ?", (older_than,)).rowcount


def worker_summary(rows: list[WorkerRow]) -> dict[str, Any]:
    """What the apps list shows about one app's connected workers."""
    return {
        "count": len(rows),
        "versions": sorted({r.app_version for r in rows if r.app_version}),
        "last_heartbeat_at": max((r.last_heartbeat_at for r in rows), default=None),
        "workers": [
            {"connection_id": r.connection_id, "instance_id": r.instance_id, "status": r.status,
             "sdk": f"{r.sdk_language}:{r.sdk_version}", "app_version": r.app_version,
             "connected_at": r.connected_at, "last_heartbeat_at": r.last_heartbeat_at}
            for r in rows
        ],
    }
