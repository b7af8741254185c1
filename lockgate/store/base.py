"""The store interface: run a function inside a transaction on some backend.

Every piece of SQL lives in `lockgate.store.operations` as a plain function taking a
`Tx` first. Backends only provide connections, the SQL dialect and the threading,
so SQLite and PostgreSQL run the very same statements and the same test suite.
"""

from __future__ import annotations

import abc
import asyncio
import queue
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class Tx(abc.ABC):
    """A transaction handle with name-addressable rows (`row["column"]`)."""

    dialect: str  # "sqlite" | "postgres"
    origin: str = ""  # which process wrote: replicas ignore their own notifications

    @abc.abstractmethod
    def execute(self, sql: str, params: tuple | list = ()) -> Any: ...

    @abc.abstractmethod
    def executemany(self, sql: str, rows: list[tuple]) -> None: ...

    def notify_on_commit(self, channel: str) -> None:
        """Have other processes' LISTENers told on `channel` when this transaction commits."""

    def one(self, sql: str, params: tuple | list = ()) -> Any:
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: tuple | list = ()) -> list[Any]:
        return self.execute(sql, params).fetchall()


class Store(abc.ABC):
    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(tx, *args) in a write transaction; returns once it is durable."""

    async def write_urgent(self, fn: Callable[..., T], *args: Any) -> T:
        """A small write that must not wait behind queued ones (heartbeats). By default, a write."""
        return await self.write(fn, *args)

    async def write_background(self, fn: Callable[..., T], *args: Any) -> T:
        """Housekeeping (deleting expired rows): a transaction that should not share a commit with,
        or hold up, the hot path's writes. By default a write (SQLite has one writer anyway)."""
        return await self.write(fn, *args)

    async def write_unflushed(self, fn: Callable[..., T], *args: Any) -> T:
        """A write lockgate may lose only if the database server itself crashes, not when lockgate
        does (live progress messages, which nobody is promised to keep): PostgreSQL commits it on
        its own connection without waiting for the WAL flush, outside the group-commit queue, so
        it never waits in front of, nor adds an fsync to, the runs' own commits. By default, a write."""
        return await self.write(fn, *args)

    @abc.abstractmethod
    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(tx, *args) on a read-only snapshot."""

    @property
    @abc.abstractmethod
    def description(self) -> str: ...

    def listen(self, callbacks: dict[str, Callable[[], None]]) -> None:
        """Call callbacks[channel]() on the event loop when another process notifies that channel.

        One process needs nothing, so the default does nothing."""


STOP_WRITER = object()  # queued once per writer thread to end it


class BatchBroken(Exception):
    """A write's error could not be contained by its savepoint: the shared transaction is void.
    Writer threads then apply the batch again one write at a time; `__cause__` is the write's error."""


class ThreadedStore(Store):
    """Writes queue up for the backend's writer thread(s), which group-commit them; reads run on
    a small thread pool. Subclasses set `_loop`, `_writes` and `_reader_pool` and implement
    `_read_in_thread`."""

    _loop: Any = None
    _writes: Any
    _reader_pool: Any
    _max_batch: int

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._loop is not None, "store is not open"
        future = self._loop.create_future()
        self._writes.put((fn, args, future))
        return await future

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, self._read_in_thread, fn, args)

    @abc.abstractmethod
    def _read_in_thread(self, fn: Callable[..., T], args: tuple) -> T: ...

    def _take_batch(self) -> list | None:
        """Block for the next write, then gather what else is queued (up to `_max_batch`) for one
        commit. None when the writer should stop."""
        item = self._writes.get()
        if item is STOP_WRITER:
            return None
        batch = [item]
        while len(batch) < self._max_batch:
            try:
                more = self._writes.get_nowait()
            except queue.Empty:
                break
            if more is STOP_WRITER:
                self._writes.put(STOP_WRITER)  # ends this writer (or a sibling) on its next round
                break
            batch.append(more)
        return batch


def settle_future(future: Any, result: Any, exc: BaseException | None) -> None:
    """Resolve a caller's future from a store thread (via call_soon_threadsafe)."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
