"""Replica membership: keep this process's leases alive, notice dead peers within seconds.

Every call a replica makes holds a short lease on its job. A heartbeat extends the leases
of the jobs in flight (however long the app takes) and, with several replicas on one
database, touches this process's row in `replicas`. A peer whose row goes untouched for
the replica timeout is dead (`kill -9`, a lost machine): the first replica to notice hands
its leased jobs back to the queue at once and says so in its log. A replica that restarts
under the same name (host:port by default) hands back its previous incarnation's leases at
start-up. Lease expiry stays the safety net for anything the table does not cover.

Heartbeats go through `Store.write_urgent`, beside the group-commit queue, so a burst of
writes cannot delay them into a false death.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from typing import Any

from lockgate.engine.dispatcher import Dispatcher
from lockgate.models import now_ms
from lockgate.store import replica_operations as rops
from lockgate.store.base import Store, Tx

log = logging.getLogger("lockgate.replicas")

HEARTBEAT_S = 1.0  # with replicas; a lone process only extends leases, every quarter lease


def replica_owner(name: str) -> str:
    """The lease owner of this process: the replica's stable name and this incarnation."""
    return f"{name}#{uuid.uuid4().hex[:8]}"


def default_replica_name(port: int | None) -> str:
    # Two live processes cannot listen on the same host and port, so this names one at a time.
    return f"{socket.gethostname()}:{port if port is not None else os.getpid()}"


def _process_alive(row: Any) -> bool:
    """A same-named row of a process that still runs on this host is not a previous incarnation."""
    if row["host"] != socket.gethostname() or row["pid"] == os.getpid():
        return False
    try:
        os.kill(row["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Membership:
    def __init__(self, store: Store, dispatcher: Dispatcher, *, name: str, replicas: bool, lease_ms: int) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.name = name
        self.owner = dispatcher.owner
        self.replicas = replicas  # several processes share the store (PostgreSQL `start`)
        self.lease_ms = lease_ms
        self.heartbeat_s = min(HEARTBEAT_S, lease_ms / 10_000) if replicas else lease_ms / 4000
        # Silent this long = dead. Several missed heartbeats, well inside the lease.
        self.replica_timeout_ms = max(int(3 * self.heartbeat_s * 1000), lease_ms // 2)
        self.taken_over = 0  # jobs handed back from dead peers, for /v1/stats
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        if self.replicas:
            taken, alive = await self.store.write_urgent(
                lambda tx: rops.register(tx, owner=self.owner, name=self.name, host=socket.gethostname(),
                                         pid=os.getpid(), now=now_ms(), is_alive=_process_alive))
            for row in alive:
                log.error("another running process (pid %s) uses the replica name %s: give each replica its own"
                          " --replica-name; its leases are left alone", row["pid"], self.name)
            for t in taken:
                log.warning("replica %s restarted: its previous run (pid %d, last seen %.1f s ago) held %d leased"
                            " call(s); handing them back to the queue now", self.name, t.pid, t.silent_ms / 1000,
                            t.jobs, extra={"replica": self.name, "previous_owner": t.owner, "jobs": t.jobs})
                self.taken_over += t.jobs
            log.info("replica %s joined (lease %.0f s, heartbeat %.1f s, peers taken over after %.1f s of silence)",
                     self.owner, self.lease_ms / 1000, self.heartbeat_s, self.replica_timeout_ms / 1000)
        self._task = asyncio.create_task(self._loop(), name="lockgate-heartbeat")

    async def stop(self) -> None:
        """Stop beating; called after this process handed its leases back."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.replicas:
            try:
                await self.store.write_urgent(rops.unregister, self.owner)
            except Exception:  # peers will see the silence and find nothing left to take over
                log.exception("could not remove this replica from the replicas table")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("heartbeat failed (%s: %s); leases of calls in flight lapse after %.0f s unless it recovers",
                            exc.__class__.__name__, exc, self.lease_ms / 1000)

    async def beat(self) -> None:
        holding = self.dispatcher.holding()
        now = now_ms()
        seen, taken = await self.store.write_urgent(self._beat_in_tx, holding, now)
        if not seen:
            log.error("this replica (%s) was silent for over %.1f s and its peers took over its leased calls;"
                      " answers to calls it still has in flight will be discarded", self.owner,
                      self.replica_timeout_ms / 1000, extra={"replica": self.name})
        for t in taken:
            log.warning("replica %s (pid %d on %s) unresponsive for %.1f s; taking over %d leased call(s)",
                        t.name, t.pid, t.host, t.silent_ms / 1000, t.jobs,
                        extra={"replica": t.name, "dead_owner": t.owner, "silent_ms": t.silent_ms, "jobs": t.jobs})
            self.taken_over += t.jobs
        if taken:
            self.dispatcher.wake()

    def _beat_in_tx(self, tx: Tx, holding: list[str], now: int) -> tuple[bool, list[rops.Takeover]]:
        rops.extend_leases(tx, self.owner, holding, now + self.lease_ms)
        if not self.replicas:
            return True, []
        seen = rops.heartbeat(tx, owner=self.owner, now=now)
        if not seen:  # declared dead while alive: join again
            rops.register(tx, owner=self.owner, name=self.name, host=socket.gethostname(), pid=os.getpid(), now=now)
        return seen, rops.take_over_silent(tx, owner=self.owner, silent_since=now - self.replica_timeout_ms, now=now)
