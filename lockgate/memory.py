"""Keep the server's memory bounded, and a way to see what grows.

Large request bodies (events up to 16 MiB, QStash messages) are freed after each request, but
glibc keeps freed heap for reuse and raises its mmap threshold after each large free, so RSS
ratchets up and is never given back. Fixing the threshold makes large buffers come from mmap
(returned at once), fewer arenas bound per-thread caches, and a periodic trim hands back
what stays free.

`LOCKGATE_TRACEMALLOC=<seconds>` logs the ten allocation sites that grew most over each
period (slow: for finding leaks, not for production).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import tracemalloc

log = logging.getLogger("lockgate.memory")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
TRIM_EVERY_S = 30.0


def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # glibc only
        libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def tune_allocator() -> None:
    """Call once at start-up, before threads start."""
    if _LIBC is None:
        return
    _LIBC.mallopt(_M_MMAP_THRESHOLD, 256 * 1024)
    _LIBC.mallopt(_M_TRIM_THRESHOLD, 1024 * 1024)
    _LIBC.mallopt(_M_ARENA_MAX, 2)


async def housekeeping() -> None:
    """Runs for the server's lifetime: trim free heap, and report growth when asked to."""
    period = float(os.environ.get("LOCKGATE_TRACEMALLOC") or 0)
    if period > 0:
        tracemalloc.start(10)
    snapshot = tracemalloc.take_snapshot() if period > 0 else None
    elapsed = 0.0
    while True:
        await asyncio.sleep(min(TRIM_EVERY_S, period) if period > 0 else TRIM_EVERY_S)
        if _LIBC is not None:
            _LIBC.malloc_trim(0)
        if snapshot is None:
            continue
        elapsed += min(TRIM_EVERY_S, period)
        if elapsed < period:
            continue
        elapsed = 0.0
        current = tracemalloc.take_snapshot()
        for stat in current.compare_to(snapshot, "lineno")[:10]:
            log.warning("memory growth: %s", stat)
        snapshot = current
