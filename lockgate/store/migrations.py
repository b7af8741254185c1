"""Versioned schema migrations, shared by both backends.

Each file `schema/NNNN_name.sql` is one migration, applied once, in order, inside one
transaction together with its row in `schema_migrations`. Files are never edited after they
land: a change to the schema is a new file. 0001 is the first release's schema (written with
IF NOT EXISTS, so databases created before versioning adopt it without change).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib import resources

from lockgate.store.base import Tx

MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     BIGINT PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  BIGINT NOT NULL
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


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


def pending(tx: Tx) -> list[Migration]:
    done = applied_versions(tx)
    return [m for m in available() if m.version not in done]


def record(tx: Tx, migration: Migration) -> None:
    tx.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
               (migration.version, migration.name, int(time.time() * 1000)))
