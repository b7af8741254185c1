"""The app's own SQLite file: batches, their shots, and the money ledger.

The ledger is what makes settlement exactly-once: a shot has one `reserve` line (written when the
batch is created) and at most one `charge` or `refund` line, enforced by the primary key and a
unique index, so a settlement that runs twice (a retried step, a second event) writes nothing new.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    created_at  REAL NOT NULL,
    settled_at  REAL
);
CREATE TABLE IF NOT EXISTS shots (
    id          TEXT PRIMARY KEY,
    batch_id    TEXT NOT NULL REFERENCES batches(id),
    position    INTEGER NOT NULL,
    model       TEXT NOT NULL,
    prompt      TEXT NOT NULL,
    price_cents INTEGER NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    job_id      TEXT,
    video_url   TEXT,
    error       TEXT,
    created_at  REAL NOT NULL,
    ended_at    REAL
);
CREATE INDEX IF NOT EXISTS shots_pending ON shots(status, created_at);
CREATE TABLE IF NOT EXISTS ledger (
    shot_id     TEXT NOT NULL REFERENCES shots(id),
    kind        TEXT NOT NULL CHECK (kind IN ('reserve', 'charge', 'refund')),
    batch_id    TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    cents       INTEGER NOT NULL,
    at          REAL NOT NULL,
    PRIMARY KEY (shot_id, kind)
);
-- a shot is settled once: a charge or a refund, never both, never twice
CREATE UNIQUE INDEX IF NOT EXISTS ledger_one_settlement ON ledger(shot_id) WHERE kind <> 'reserve';
"""


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        with sqlite3.connect(self.path) as db:
            db.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the writer; it persists in the file
            db.executescript(SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        # One connection per use: steps run on the event loop and in threads alike.
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("BEGIN IMMEDIATE")  # take the write lock now: concurrent enders serialise here
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def create_batch(self, batch_id: str, user_id: str, shots: list[dict[str, Any]]) -> None:
        """The batch, its shots, and a reservation of each shot's price."""
        now = time.time()
        with self._tx() as db:
            db.execute("INSERT INTO batches (id, user_id, created_at) VALUES (?, ?, ?)", (batch_id, user_id, now))
            for position, shot in enumerate(shots):
                db.execute("INSERT INTO shots (id, batch_id, position, model, prompt, price_cents, created_at)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (shot["shot_id"], batch_id, position, shot["model"], shot["prompt"], shot["price_cents"],
                            now))
                db.execute("INSERT INTO ledger (shot_id, kind, batch_id, user_id, cents, at)"
                           " VALUES (?, 'reserve', ?, ?, ?, ?)",
                           (shot["shot_id"], batch_id, user_id, shot["price_cents"], now))

    def set_job(self, shot_id: str, job_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE shots SET job_id = ? WHERE id = ?", (job_id, shot_id))

    def end_shot(self, shot_id: str, status: str, *, video_url: str | None = None,
                 error: str | None = None) -> dict[str, Any]:
        """Record how a shot ended (the first ending wins) and how many shots of its batch are left.

        Safe to repeat: a second call changes nothing and answers the same `remaining`.
        """
        with self._tx() as db:
            changed = db.execute(
                "UPDATE shots SET status = ?, video_url = ?, error = ?, ended_at = ?"
                " WHERE id = ? AND status = 'pending'",
                (status, video_url, error, time.time(), shot_id)).rowcount
            row = db.execute("SELECT batch_id, status FROM shots WHERE id = ?", (shot_id,)).fetchone()
            if row is None:
                raise KeyError(f"no shot {shot_id}")
            remaining = db.execute("SELECT count(*) FROM shots WHERE batch_id = ? AND status = 'pending'",
                                   (row["batch_id"],)).fetchone()[0]
        return {"batch_id": row["batch_id"], "status": row["status"], "changed": bool(changed), "remaining": remaining}

    def settle(self, batch_id: str) -> dict[str, Any]:
        """Charge every succeeded shot and refund every failed one, once. Returns the batch's totals."""
        now = time.time()
        with self._tx() as db:
            batch = db.execute("SELECT user_id FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if batch is None:
                raise KeyError(f"no batch {batch_id}")
            pending = db.execute("SELECT count(*) FROM shots WHERE batch_id = ? AND status = 'pending'",
                                 (batch_id,)).fetchone()[0]
            if pending:
                raise ValueError(f"batch {batch_id} still has {pending} shot(s) running")
            db.execute(
                "INSERT INTO ledger (shot_id, kind, batch_id, user_id, cents, at)"
                " SELECT id, CASE status WHEN 'succeeded' THEN 'charge' ELSE 'refund' END, batch_id, ?, price_cents, ?"
                " FROM shots WHERE batch_id = ? ON CONFLICT DO NOTHING",
                (batch["user_id"], now, batch_id))
            db.execute("UPDATE batches SET settled_at = ? WHERE id = ? AND settled_at IS NULL", (now, batch_id))
            return self._totals(db, batch_id)

    @staticmethod
    def _totals(db: sqlite3.Connection, batch_id: str) -> dict[str, Any]:
        totals = {"charged_cents": 0, "refunded_cents": 0, "charged": 0, "refunded": 0}
        for kind, count, cents in db.execute(
                "SELECT kind, count(*), sum(cents) FROM ledger WHERE batch_id = ? AND kind <> 'reserve' GROUP BY kind",
                (batch_id,)):
            noun = "charged" if kind == "charge" else "refunded"
            totals[noun], totals[f"{noun}_cents"] = count, cents
        return totals

    def stale_shots(self, older_than: float) -> list[dict[str, Any]]:
        """Shots still pending that were created before `older_than` (a time.time() value)."""
        with self._tx() as db:
            rows = db.execute("SELECT id, batch_id, job_id FROM shots WHERE status = 'pending' AND created_at < ?"
                              " ORDER BY created_at", (older_than,)).fetchall()
        return [dict(r) for r in rows]

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        with self._tx() as db:
            batch = db.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if batch is None:
                return None
            shots = db.execute("SELECT id, position, model, prompt, price_cents, status, job_id, video_url, error"
                               " FROM shots WHERE batch_id = ? ORDER BY position", (batch_id,)).fetchall()
            ledger = db.execute("SELECT shot_id, kind, cents FROM ledger WHERE batch_id = ? ORDER BY at, shot_id, kind",
                                (batch_id,)).fetchall()
            totals = self._totals(db, batch_id)
        return {"batch_id": batch_id, "user_id": batch["user_id"], "settled": batch["settled_at"] is not None,
                "shots": [dict(s) for s in shots], "ledger": [dict(e) for e in ledger], **totals}
