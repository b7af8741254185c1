"""Versioned schema migrations, shared by both backends.

Each file `schema/NNNN_name.sql` is one migration, applied once, in order, inside one
transaction together with its row in `schema_migrations`. Files are never edited after they
land: a change to the schema is a new file. 0001 is the first release's schema (written with
IF NOT EXISTS, so databases created before versioning adopt it without change). How to write
a migration that replicas of two releases can share during a rolling upgrade: store/README.md.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources
from typing import Callable

from lockgate.store.base import Tx

MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     BIGINT PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  BIGINT NOT NULL
)
"""

# PostgreSQL advisory lock held (per transaction) while migrating: replicas starting together
# queue on it, the first applies the pending files and the others find nothing left to do.
ADVISORY_LOCK_ID = 727274


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database stands against the migrations this release ships."""

    applied: list[tuple[int, str]]  # (version, name) recorded in the database, oldest first
    pending: list[Migration]  # shipped here, not yet applied
    unknown: list[tuple[int, str]]  # recorded in the database, not shipped here: a newer release wrote them

    @property
    def current(self) -> bool:
        return not self.pending and not self.unknown


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer lockgate than this one."""


def available() -> list[Migration]:
    """Every migration shipped with this release, oldest first."""
    folder = resources.files("lockgate.store").joinpath("schema")
    found = []
    for entry in folder.iterdir():
        match = MIGRATION_FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two schema files share a version number: {versions}")
    return found


def applied_versions(tx: Tx) -> set[int]:
    return {row["version"] for row in tx.all("SELECT version FROM schema_migrations")}


def status(tx: Tx) -> SchemaStatus:
    """Needs the bookkeeping table (create it first with BOOKKEEPING)."""
    shipped = available()
    known = {m.version for m in shipped}
    rows = tx.all("SELECT version, name FROM schema_migrations ORDER BY version")
    applied = [(row["version"], row["name"]) for row in rows]
    done = {version for version, _ in applied}
    return SchemaStatus(
        applied=applied,
        pending=[m for m in shipped if m.version not in done],
        unknown=[(v, n) for v, n in applied if v not in known],
    )


def pending(tx: Tx) -> list[Migration]:
    return status(tx).pending


def refuse_if_newer(state: SchemaStatus, where: str) -> None:
    """Old code must not write to a schema it does not know; say which release does."""
    if state.unknown:
        newest = ", ".join(f"{v:04d}_{n}" for v, n in state.unknown)
        shipped = available()
        mine = shipped[-1].label if shipped else "none"
        raise SchemaTooNew(
            f"{where} was migrated by a newer lockgate (migration {newest}; this lockgate knows up to {mine}). "
            "Run the lockgate release that applied it, or a later one; to go back to this release, restore a "
            "backup taken before the upgrade (see lockgate/store/README.md)."
        )


def record(tx: Tx, migration: Migration) -> None:
    tx.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
               (migration.version, migration.name, int(time.time() * 1000)))


def statements(sql: str) -> list[str]:
    """Split a migration into single statements (SQLite's driver runs one at a time inside a
    transaction); SQLite's own tokenizer decides where a statement ends, so `;` in strings and
    comments is safe."""
    found, buffer = [], ""
    for piece in sql.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if _has_code(buffer):
                found.append(buffer.strip())
            buffer = ""
    if _has_code(buffer.rstrip(";")):
        found.append(buffer.rstrip(";").strip())
    return found


def _has_code(text: str) -> bool:
    without_comments = re.sub(r"--[^\n]*", "", text)
    return bool(without_comments.replace(";", "").strip())


@dataclass(frozen=True)
class Backend:
    """How one backend runs a migration: its transaction control and how it executes a file."""

    begin: Callable[[], None]  # start a transaction that excludes every other migrator
    run_file: Callable[["Migration"], None]
    commit: Callable[[], None]
    rollback: Callable[[], None]


def migrate(tx: Tx, backend: Backend, *, where: str, apply: bool = True) -> tuple[SchemaStatus, list[Migration]]:
    """Apply pending migrations one transaction each; returns the status found first and what was applied.

    Every round re-reads the status under the backend's exclusive lock, so two processes that
    start together never apply a file twice. Refuses (SchemaTooNew) a database a newer release
    migrated, before changing anything."""
    done: list[Migration] = []
    first: SchemaStatus | None = None
    while True:
        backend.begin()
        try:
            state = status(tx)
            first = first or state
            refuse_if_newer(state, where)
            if not apply or not state.pending:
                backend.commit()
                return first, done
            migration = state.pending[0]
            backend.run_file(migration)
            record(tx, migration)
            backend.commit()
        except BaseException:
            backend.rollback()
            raise
        done.append(migration)


def log_applied(logger: logging.Logger, applied: list[Migration]) -> None:
    """What opening a store applied: one line for a new store (an in-memory one, say), else one per migration."""
    if len(applied) > 1:
        logger.info("applied %d schema migrations, up to %s", len(applied), applied[-1].label)
    elif applied:
        logger.info("applied schema migration %s", applied[0].label)
