"""Versioned migrations on a real SQLite file and a real PostgreSQL database: adopting a database
made from the first release's schema file, refusing a newer one, migrating once when several
processes start together, and `lockgate migrate --check`."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading

import psycopg
import pytest

from lockgate.store import migrations
from lockgate.store import operations as ops
from lockgate.store.postgres import PostgresStore, migrate_uri, postgres_ddl
from lockgate.store.sqlite import SQLiteStore, migrate_data_dir
from tests.conftest import ROOT

SHIPPED = [m.version for m in migrations.available()]


def test_statements_split_where_sqlite_would():
    sql = "-- a comment; with a semicolon\nCREATE TABLE a (x TEXT DEFAULT 'x;y');\n\nCREATE INDEX b ON a (x);\n-- end"
    assert migrations.statements(sql) == [
        "-- a comment; with a semicolon\nCREATE TABLE a (x TEXT DEFAULT 'x;y');", "CREATE INDEX b ON a (x);"]


def _first_release_schema(backend, tmp_path) -> tuple[str, object]:
    """A database holding only what 0001_core.sql creates (as before versioning), plus one event."""
    core = migrations.available()[0]
    assert core.label == "0001_core"
    insert = ("INSERT INTO events (internal_id, id, name, data, user_data, ts, received_at)"
              " VALUES ('e1', 'e1', 'old/event', '{}', '{}', 1, 1)")
    if backend.name == "postgres":
        uri = backend.new_database()
        with psycopg.connect(uri) as conn:
            conn.execute(postgres_ddl(core.sql))
            conn.execute(insert)
        return uri, PostgresStore(uri, pool_size=2)
    conn = sqlite3.connect(tmp_path / "lockgate.db")
    conn.executescript(core.sql + ";" + insert)
    conn.close()
    return str(tmp_path), SQLiteStore(str(tmp_path))


async def test_a_first_release_database_is_migrated_to_this_release(backend, tmp_path):
    _, store = _first_release_schema(backend, tmp_path)
    await store.open()
    try:
        versions = await store.read(lambda tx: sorted(migrations.applied_versions(tx)))
        assert versions == SHIPPED
        event = await store.read(ops.get_event, "e1")
        assert event is not None and event.name == "old/event"  # data written before survives
    finally:
        await store.close()


def _mark_newer(backend, target: str) -> None:
    sql = "INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'from_the_future', 1)"
    if backend.name == "postgres":
        with psycopg.connect(target) as conn:
            conn.execute(sql)
    else:
        conn = sqlite3.connect(f"{target}/lockgate.db")
        conn.execute(sql)
        conn.commit()
        conn.close()


async def test_a_database_migrated_by_a_newer_release_is_refused(backend, tmp_path):
    target, store = _first_release_schema(backend, tmp_path)
    await store.open()
    await store.close()
    _mark_newer(backend, target)
    again = PostgresStore(target, pool_size=2) if backend.name == "postgres" else SQLiteStore(target)
    with pytest.raises(migrations.SchemaTooNew, match="newer lockgate .migration 9999_from_the_future"):
        await again.open()


def test_processes_starting_together_apply_each_migration_once(backend, tmp_path):
    if backend.name == "postgres":
        target = backend.new_database()
        migrate = migrate_uri
    else:
        target = str(tmp_path)
        migrate = migrate_data_dir
    results, errors = [], []

    def one() -> None:
        try:
            results.append(migrate(target)[1])
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    applied = sorted(m.version for done in results for m in done)
    assert applied == SHIPPED  # every file applied by exactly one of them


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lockgate", "migrate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_migrate_check_exits_non_zero_while_migrations_are_pending(backend, tmp_path):
    target, _ = _first_release_schema(backend, tmp_path)
    where = ["--postgres-uri", target] if backend.name == "postgres" else ["--data-dir", target]
    pending = _cli("--check", *where)
    if len(SHIPPED) > 1:  # 0001 was created from its file without being recorded: it too is pending
        assert pending.returncode == 1, pending.stderr
        assert "pending" in pending.stderr and "lockgate migrate" in pending.stderr
    done = _cli(*where)
    assert done.returncode == 0, done.stderr
    assert [line.split()[-1] for line in done.stdout.splitlines()][:1] in (["0001_core"], ["(now)"])
    again = _cli("--check", *where)
    assert again.returncode == 0 and "up to date" in again.stderr
    _mark_newer(backend, target)
    newer = _cli("--check", *where)
    assert newer.returncode == 2 and "newer lockgate" in newer.stderr


def test_a_server_refuses_to_start_on_a_newer_database_and_says_why(backend, tmp_path):
    target, _ = _first_release_schema(backend, tmp_path)
    assert _cli(*(["--postgres-uri", target] if backend.name == "postgres" else ["--data-dir", target])).returncode == 0
    _mark_newer(backend, target)
    if backend.name == "postgres":  # the production server, as replicas run it
        args = ["start", "--postgres-uri", target, "--signing-key", "signkey-prod-" + "ab" * 32, "--event-key", "k"]
    else:
        args = ["dev", "--data-dir", target]
    started = subprocess.run([sys.executable, "-m", "lockgate", *args, "--port", "0", "-u", "http://127.0.0.1:9/x"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert started.returncode == 2
    assert "migrated by a newer lockgate (migration 9999_from_the_future" in started.stderr
    assert "Traceback" not in started.stderr
