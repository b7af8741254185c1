"""SQL of replica membership (lockgate/engine/replicas.py): heartbeats, takeovers, lease extension."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lockgate.store import operations as ops
from lockgate.store.base import Tx


@dataclass(slots=True)
class Takeover:
    """Leased jobs of a replica that is gone, handed back to the queue."""

    owner: str
    name: str
    host: str
    pid: int
    silent_ms: int  # how long it had not been seen
    jobs: int


def extend_leases(tx: Tx, owner: str, job_ids: list[str], until: int) -> None:
    if not job_ids:
        return
    if tx.dialect == "postgres":
        # One statement for any number of jobs. A row a writer holds locked is being settled right
        # now: skipping it (instead of waiting) keeps heartbeats and writers from deadlocking.
        tx.execute("UPDATE jobs SET lease_expires_at = ? WHERE id IN (SELECT id FROM jobs WHERE lease_owner = ?"
                   " AND id = ANY(?) ORDER BY id FOR UPDATE SKIP LOCKED)", (until, owner, job_ids))
    else:
        tx.executemany("UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND lease_owner = ?",
                       [(until, jid, owner) for jid in job_ids])


def _hand_back(tx: Tx, row: Any, now: int) -> Takeover:
    """`row` was just deleted from replicas: its process is gone, its leased jobs go back to the queue."""
    count = ops.release_leases_of(tx, row["owner"])
    return Takeover(owner=row["owner"], name=row["name"], host=row["host"], pid=row["pid"],
                    silent_ms=now - row["last_seen_at"], jobs=count)


def register(tx: Tx, *, owner: str, name: str, host: str, pid: int, now: int,
             is_alive: Any = None) -> tuple[list[Takeover], list[Any]]:
    """Add this process; hand back the leases of earlier incarnations of the same replica name.

    Returns (previous incarnations taken over, same-name rows left alone because `is_alive(row)`
    says that process still runs)."""
    taken, alive = [], []
    for row in tx.all("SELECT * FROM replicas WHERE name = ? AND owner <> ?", (name, owner)):
        if is_alive is not None and is_alive(row):
            alive.append(row)
        else:
            unregister(tx, row["owner"])
            taken.append(_hand_back(tx, row, now))
    tx.execute(
        "INSERT INTO replicas (owner, name, host, pid, started_at, last_seen_at) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (owner) DO UPDATE SET last_seen_at = excluded.last_seen_at",
        (owner, name, host, pid, now, now),
    )
    return taken, alive


def heartbeat(tx: Tx, *, owner: str, now: int) -> bool:
    """Mark this process as alive; False when its row was gone (peers declared it dead)."""
    return tx.execute("UPDATE replicas SET last_seen_at = ? WHERE owner = ?", (now, owner)).rowcount == 1


def take_over_silent(tx: Tx, *, owner: str, silent_since: int, now: int) -> list[Takeover]:
    """Hand back the leases of every other replica not seen since `silent_since`."""
    taken = []
    for row in tx.all("SELECT * FROM replicas WHERE last_seen_at < ? AND owner <> ?", (silent_since, owner)):
        # Re-checked under the row lock: of two peers noticing the same death, one takes over.
        gone = tx.one("DELETE FROM replicas WHERE owner = ? AND last_seen_at < ? RETURNING *",
                      (row["owner"], silent_since))
        if gone is not None:
            taken.append(_hand_back(tx, gone, now))
    return taken


def unregister(tx: Tx, owner: str) -> None:
    tx.execute("DELETE FROM replicas WHERE owner = ?", (owner,))


def list_replicas(tx: Tx) -> list[dict[str, Any]]:
    return [dict(r) for r in tx.all("SELECT * FROM replicas ORDER BY name, started_at")]
