"""SQLite backend: one writer thread that group-commits, a few reader threads.

SQLite allows one writer at a time, so all writes go through a single thread and a
single connection. Writes that arrive while a commit is in progress are folded into
the next transaction (each inside its own savepoint, so one failing write does not
undo its neighbours): one commit serves many events or step results under load, and
a lone write under light load commits at once. WAL mode lets readers run beside it.
"""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import sqlite3
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from lockgate.store import migrations
from lockgate.store.base import STOP_WRITER, BatchBroken, ThreadedStore, Tx, settle_future

T = TypeVar("T")



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


def migrate_sqlite(conn: sqlite3.Connection) -> None:
    """Apply pending migrations, each in its own transaction with its bookkeeping row."""
    conn.execute(migrations.BOOKKEEPING)
    for migration in migrations.pending(SQLiteTx(conn)):
        # executescript takes no parameters; version and name are an int and a [a-z0-9_] word.
        script = (f"BEGIN IMMEDIATE;\n{migration.sql}\n;\n"
                  f"INSERT INTO schema_migrations (version, name, applied_at) VALUES "
                  f"({migration.version}, '{migration.name}', {int(time.time() * 1000)});\nCOMMIT;")
        try:
            conn.executescript(script)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


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
        self.path = os.path.join(data_dir, "lockgate.db")
        self._synchronous = synchronous
        self._max_batch = max_batch
        self._writes: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reader_pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="lockgate-sqlite-read")
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commits = 0  # transactions committed, for metrics and benchmarks
        self.writes = 0  # write functions applied

    @property
    def description(self) -> str:
        return "in-memory SQLite" if self._tmpdir else f"SQLite at {self.path}"

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        if not os.path.exists(self.path):
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = _connect(self.path, synchronous=self._synchronous)
        migrate_sqlite(conn)
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

