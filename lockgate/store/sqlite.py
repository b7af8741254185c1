"""SQLite backend: one writer thread that group-commits, a few reader threads.

SQLite allows one writer at a time, so all writes go through a single thread and a
single connection. Writes that arrive while a commit is in progress are folded into
the next transaction (each inside its own savepoint, so one failing write does not
undo its neighbours): one commit serves many events or step results under load, and
a lone write under light load commits at once. WAL mode lets readers run beside it.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import shutil
import sqlite3
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from lockgate.store import migrations
from lockgate.store.base import STOP_WRITER, BatchBroken, ThreadedStore, Tx, settle_future

T = TypeVar("T")
log = logging.getLogger("lockgate.store.sqlite")
DB_FILE = "lockgate.db"
LOCK_FILE = "lockgate.lock"


class DataDirInUse(RuntimeError):
    """Another lockgate process holds the data folder."""


@contextmanager
def data_dir_lock(data_dir: str, *, purpose: str) -> Iterator[None]:
    """One process owns a data folder at a time: a server while it runs, a restore while it
    replaces the database. The OS drops the lock when its holder dies, even by kill -9."""
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(data_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirInUse(f"another lockgate process is using the data folder {data_dir} ({purpose} needs it"
                               " alone): stop that server first, or pick another --data-dir") from None
        yield
    finally:
        os.close(fd)


class SQLiteTx(Tx):
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: tuple | list = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        self._conn.executemany(sql, rows)


def _connect(path: str, *, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a killed process (the WAL is in the OS cache);
    # FULL is offered for power-loss durability at some cost in latency.
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


def _connect_and_migrate(path: str, *, synchronous: str, apply: bool = True):
    """Open `path` and apply pending migrations; returns (connection, status, applied).

    Processes opening a new database together can get "database is locked" at once, without the
    busy timeout (switching it to WAL, or a read snapshot gone stale before a write). Migrating is
    idempotent (each file is recorded in the transaction that applies it), so it simply goes again."""
    deadline = time.monotonic() + 30
    while True:
        conn = None
        try:
            conn = _connect(path, synchronous=synchronous)
            status, applied = migrate_sqlite(conn, where=f"the SQLite database {path}", apply=apply)
            return conn, status, applied
        except sqlite3.OperationalError as exc:
            if conn is not None:
                conn.close()
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        except BaseException:
            if conn is not None:
                conn.close()
            raise


def migrate_sqlite(conn: sqlite3.Connection, *, where: str, apply: bool = True):
    """Apply pending migrations, each in its own BEGIN IMMEDIATE transaction (which also keeps
    a second process from migrating at the same time). Returns (status found, applied)."""
    conn.execute(migrations.BOOKKEEPING)

    def run_file(migration: migrations.Migration) -> None:
        for statement in migrations.statements(migration.sql):
            conn.execute(statement)

    def rollback() -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    backend = migrations.Backend(begin=lambda: conn.execute("BEGIN IMMEDIATE"), run_file=run_file,
                                 commit=lambda: conn.execute("COMMIT"), rollback=rollback)
    return migrations.migrate(SQLiteTx(conn), backend, where=where, apply=apply)


def migrate_data_dir(data_dir: str, *, apply: bool = True):
    """`lockgate migrate` on a SQLite data folder (safe beside a running server)."""
    path = os.path.join(data_dir, DB_FILE)
    if not os.path.exists(path):
        if not apply:  # nothing to look at: a new folder starts with every migration pending
            return migrations.SchemaStatus(applied=[], pending=migrations.available(), unknown=[]), []
        os.makedirs(data_dir, exist_ok=True)
    conn, status, applied = _connect_and_migrate(path, synchronous="NORMAL", apply=apply)
    conn.close()
    return status, applied


class SQLiteStore(ThreadedStore):
    def __init__(
        self,
        data_dir: str | None,
        *,
        in_memory: bool = False,
        synchronous: str = "NORMAL",
        max_batch: int = 512,
        readers: int = 2,
    ) -> None:
        if in_memory:
            # A private temp file (in RAM where /dev/shm exists) keeps one code path
            # for readers and writer; it disappears on close.
            base = "/dev/shm" if os.path.isdir("/dev/shm") else None
            self._tmpdir: str | None = tempfile.mkdtemp(prefix="lockgate-", dir=base)
            data_dir = self._tmpdir
        else:
            self._tmpdir = None
            assert data_dir, "data_dir is required unless in_memory"
            # Events and step data are private: the folder is 0700 and every file in it 0600.
            os.makedirs(data_dir, mode=0o700, exist_ok=True)
            os.chmod(data_dir, 0o700)
        self.path = os.path.join(data_dir, DB_FILE)
        self._synchronous = synchronous
        self._max_batch = max_batch
        self._writes: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reader_pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="lockgate-sqlite-read")
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._owner: Any = None  # the data folder's lock, held while open
        self.commits = 0  # transactions committed, for metrics and benchmarks
        self.writes = 0  # write functions applied

    @property
    def description(self) -> str:
        return "in-memory SQLite" if self._tmpdir else f"SQLite at {self.path}"

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._tmpdir is None:
            self._owner = data_dir_lock(os.path.dirname(self.path), purpose="a server")
            self._owner.__enter__()
        if not os.path.exists(self.path):
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            conn, _, applied = _connect_and_migrate(self.path, synchronous=self._synchronous)
        except BaseException:
            self._release_data_dir()
            raise
        migrations.log_applied(log, applied)
        for suffix in ("", "-wal", "-shm"):  # SQLite creates its side files from the process umask
            if os.path.exists(self.path + suffix):
                os.chmod(self.path + suffix, 0o600)
        self._writer = threading.Thread(target=self._writer_main, args=(conn,), name="lockgate-sqlite-write", daemon=True)
        self._writer.start()

    async def close(self) -> None:
        if self._writer is not None:
            self._writes.put(STOP_WRITER)
            await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
            self._writer = None
        self._reader_pool.shutdown(wait=True)
        for conn in self._reader_conns:
            conn.close()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        self._release_data_dir()

    def _release_data_dir(self) -> None:
        if self._owner is not None:
            self._owner.__exit__(None, None, None)
            self._owner = None

    def _read_in_thread(self, fn: Callable[..., T], args: tuple) -> T:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, synchronous=self._synchronous)
            self._local.conn = conn
            self._reader_conns.append(conn)
        conn.execute("BEGIN")
        try:
            return fn(SQLiteTx(conn), *args)
        finally:
            conn.execute("COMMIT")

    # -- writer thread -------------------------------------------------------------

    def _writer_main(self, conn: sqlite3.Connection) -> None:
        tx = SQLiteTx(conn)
        while (batch := self._take_batch()) is not None:
            self._apply_batch(conn, tx, batch)
        conn.close()

    def _apply_batch(self, conn: sqlite3.Connection, tx: SQLiteTx, batch: list) -> None:
        outcomes: list[tuple[asyncio.Future, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, args, future in batch:
                conn.execute("SAVEPOINT one_write")
                try:
                    result = fn(tx, *args)
                except BaseException as exc:  # reported to the caller, neighbours still commit
                    try:
                        conn.execute("ROLLBACK TO one_write")
                        conn.execute("RELEASE one_write")
                    except sqlite3.Error:
                        raise BatchBroken("a write ended the shared transaction") from exc
                    outcomes.append((future, None, exc))
                else:
                    conn.execute("RELEASE one_write")
                    outcomes.append((future, result, None))
            conn.execute("COMMIT")
            self.commits += 1
            self.writes += len(batch)
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if len(batch) > 1:
                # A write broke the shared transaction itself (its savepoint could not contain it).
                # Nothing was committed: apply each write alone, so only the bad one fails.
                for item in batch:
                    self._apply_batch(conn, tx, [item])
                return
            failure = exc.__cause__ if isinstance(exc, BatchBroken) and exc.__cause__ else exc
            outcomes = [(future, None, failure) for _, _, future in batch]
        assert self._loop is not None
        for future, result, exc in outcomes:
            self._loop.call_soon_threadsafe(settle_future, future, result, exc)

