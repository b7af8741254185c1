"""Online backup and restore of a SQLite data folder (`lockgate backup` / `lockgate restore`).

Backup holds SQLite's write lock (BEGIN IMMEDIATE) while a second connection copies the
database with SQLite's backup API: every write the server acknowledged before the copy ends is
in it, and none is half in it. The server keeps serving reads meanwhile; its writes wait for
the copy (SQLite's busy timeout is 30 s), then go on. PostgreSQL deployments use pg_dump
instead (see store/README.md).
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Callable

from lockgate.store import migrations
from lockgate.store.sqlite import DB_FILE, SQLiteTx, _connect, data_dir_lock

class BackupError(Exception):
    """A backup or restore could not be done; the message says why and what to do."""


def backup(data_dir: str, destination: str, on_done: Callable[[dict], None] = lambda done: None) -> dict:
    """Copy the live database to `destination` (a new file); returns what was copied. `on_done`
    runs once the file is in place but before writes resume: whatever was acknowledged before it
    ran is in the backup."""
    source = os.path.join(data_dir, DB_FILE)
    if not os.path.exists(source):
        raise BackupError(f"no lockgate database at {source}: check --data-dir")
    if os.path.exists(destination):
        raise BackupError(f"{destination} already exists: pick a new file name (backups never overwrite)")
    partial = destination + ".partial"
    if os.path.exists(partial):
        os.remove(partial)
    started = time.monotonic()
    writer = _connect(source, synchronous="NORMAL")
    reader = _connect(source, synchronous="NORMAL")
    try:
        # No commit lands until the backup file is complete and in place, so "acknowledged before
        # the command returned" means "in the backup".
        writer.execute("BEGIN IMMEDIATE")
        try:
            target = sqlite3.connect(partial, isolation_level=None)
            try:
                reader.backup(target)
                target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                _verify(target, partial, integrity=False)  # the pages are the live database's own
                runs = target.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            finally:
                target.close()
            _fsync(partial)
            os.replace(partial, destination)
            done = {"path": destination, "bytes": os.path.getsize(destination), "runs": runs,
                    "seconds": round(time.monotonic() - started, 3)}
            on_done(done)
        finally:
            writer.execute("ROLLBACK")
    finally:
        reader.close()
        writer.close()
    return done


def restore(backup_path: str, data_dir: str) -> dict:
    """Replace the data folder's database with a backup. The server must be stopped; the database
    it replaces is kept beside it as lockgate.db.before-restore-<time>."""
    if not os.path.isfile(backup_path):
        raise BackupError(f"no backup file at {backup_path}")
    check = sqlite3.connect(f"file:{backup_path}?mode=ro", uri=True, isolation_level=None)
    check.row_factory = sqlite3.Row
    try:
        _verify(check, backup_path)
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{backup_path} is not a lockgate backup ({exc})") from None
    finally:
        check.close()
    target = os.path.join(data_dir, DB_FILE)
    with data_dir_lock(data_dir, purpose="restore"):
        kept = None
        if os.path.exists(target):
            # Fold the WAL into the old file first: it is kept whole, and no stale WAL can be
            # replayed onto the restored database.
            old = _connect(target, synchronous="NORMAL")
            old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            old.close()
            kept = f"{target}.before-restore-{time.strftime('%Y%m%dT%H%M%S')}"
            os.replace(target, kept)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(target + suffix):
                os.remove(target + suffix)
        incoming = target + ".restoring"
        source = sqlite3.connect(f"file:{backup_path}?mode=ro", uri=True)
        copy = sqlite3.connect(incoming, isolation_level=None)
        try:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=WAL")
        finally:
            copy.close()
            source.close()
        _fsync(incoming)
        os.replace(incoming, target)
    return {"path": target, "previous": kept}


def _verify(conn: sqlite3.Connection, path: str, *, integrity: bool = True) -> None:
    """The copy is a sound lockgate database this release can open."""
    conn.row_factory = sqlite3.Row
    problem = conn.execute("PRAGMA quick_check").fetchone()[0] if integrity else "ok"
    if problem != "ok":
        raise BackupError(f"{path} failed SQLite's integrity check: {problem}")
    has_versions = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").fetchone()
    if not has_versions:
        raise BackupError(f"{path} is not a lockgate database (it has no schema_migrations table)")
    try:
        migrations.refuse_if_newer(migrations.status(SQLiteTx(conn)), f"the backup {path}")
    except migrations.SchemaTooNew as exc:
        raise BackupError(str(exc)) from None


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
