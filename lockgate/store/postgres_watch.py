"""What the PostgreSQL listener thread notices besides notifications: a statement of ours that has
waited seconds for a lock (and which session holds it), and this process having been frozen.

Both are what a replica paused inside a transaction (SIGSTOP, a paused VM) looks like. Its peers'
writes wait on its row locks; PostgreSQL ends its session once it has sat idle in the transaction
for postgres_idle_in_transaction_timeout. But a writer paused between two statements of a pipeline
leaves its session `active` (waiting for the rest of the pipeline), which no PostgreSQL timeout
ends: the waiting peer ends such a session of lockgate's itself after the same time, and says so
(writes now go as one query per batch, so this is a backstop). Once the
paused replica runs again, it says how long it was stopped."""

from __future__ import annotations

import logging
import threading
import time
import weakref

import psycopg

log = logging.getLogger("lockgate.store.postgres")

LOCK_WAIT_REPORTED_AFTER_S = 5.0  # ours wait milliseconds on each other; seconds is someone stuck
CHECK_EVERY_S = 2.0
OUR_APPLICATION_NAMES = "lockgate"  # prefix of the application_name the store's connections set
FROZEN_AFTER_S = 5.0  # the listener wakes every second: this much longer and the process was stopped

# pg_blocking_pids is dear, so only for sessions of ours already waiting on a lock for a while.
# `quiet`: how long the holder, inside a transaction, has been waiting for its client to send
# anything (idle in it, or between the statements of a pipeline); NULL when it is not.
_LONG_LOCK_WAITS = """
SELECT w.pid, w.query_start, extract(epoch FROM now() - w.query_start)::float8 AS waited,
       h.pid AS holder, h.application_name, host(h.client_addr) AS client, h.state,
       extract(epoch FROM now() - h.state_change)::float8 AS state_for,
       extract(epoch FROM CASE
           WHEN h.state = 'idle in transaction' THEN now() - h.state_change
           WHEN h.state = 'active' AND h.wait_event = 'ClientRead' THEN now() - h.query_start END)::float8 AS quiet,
       h.usename = current_user AS same_role
FROM pg_stat_activity w
CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS b(pid)
JOIN pg_stat_activity h ON h.pid = b.pid
WHERE w.pid = ANY(%s) AND w.wait_event_type = 'Lock' AND w.query_start < now() - make_interval(secs => %s)
ORDER BY w.pid, h.pid
"""


class SessionWatch:
    """The store's connections, and what the listener thread says and does about them."""

    def __init__(self, idle_in_transaction_timeout: float) -> None:
        self.idle_in_transaction_timeout = idle_in_transaction_timeout
        self._connections: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()
        self._guard = threading.Lock()  # connections are added by the threads that open them
        self._reported: set[tuple] = set()  # (waiting pid, its statement's start, holder pid) logged
        self._ending: set[tuple] = set()  # of those, the ones whose holder we tried to end
        self._next_check = 0.0

    def add(self, conn: psycopg.Connection) -> None:
        with self._guard:
            self._connections.add(conn)

    def check_lock_waits(self, conn: psycopg.Connection) -> None:
        """Log, once each, the statements of ours that have waited long for a lock (on `conn`, the
        listener's connection, at most every CHECK_EVERY_S)."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + CHECK_EVERY_S
        with self._guard:
            pids = [c.info.backend_pid for c in self._connections if not c.closed]
        try:
            waits = conn.execute(_LONG_LOCK_WAITS, (pids, LOCK_WAIT_REPORTED_AFTER_S)).fetchall() if pids else []
        except psycopg.Error as exc:
            if conn.broken:
                raise  # the listener reconnects
            log.debug("could not look for lock waits: %s", exc)
            return
        current = set()
        for pid, query_start, waited, holder, application, client, state, state_for, quiet, same_role in waits:
            key = (pid, query_start, holder)
            current.add(key)
            timeout = self.idle_in_transaction_timeout
            # Only lockgate's own sessions are ended: a person's psql left in a transaction is logged, not killed.
            ours = same_role and (application or "").startswith(OUR_APPLICATION_NAMES)
            overdue = quiet is not None and ours and timeout and quiet > timeout
            if key in self._reported and not (overdue and key not in self._ending):
                continue
            who = f"PostgreSQL session {holder} ({' at '.join(p for p in (application, client) if p) or 'unnamed'})"
            if state is None:  # another role's session: PostgreSQL shows its state only to that role and admins
                how = ""
            elif quiet is None:
                how = f", {state} for {state_for:.0f} s"
            elif overdue:
                self._ending.add(key)
                how = f", silent inside a transaction for {quiet:.0f} s (a process paused in it?): " + self._end(
                    conn, holder)
            elif not ours:
                how = (f", silent inside a transaction for {quiet:.0f} s; it is not one of lockgate's sessions, so"
                       f" it is left alone: finish its transaction or end it (pg_terminate_backend({holder}))")
            else:
                how = f", silent inside a transaction for {quiet:.0f} s (a process paused in it?); " + (
                    f"such a session is ended after {timeout:g} s (postgres_idle_in_transaction_timeout)"
                    if timeout else "set postgres_idle_in_transaction_timeout to have such sessions ended")
            log.warning("a statement of this replica has waited %.0f s for a lock held by %s%s", waited, who, how,
                        extra={"waiting_pid": pid, "holder_pid": holder, "waited_s": round(waited, 1)})
        self._ending &= current
        self._reported = current

    def _end(self, conn: psycopg.Connection, holder: int) -> str:
        """End a session that has held up ours past postgres_idle_in_transaction_timeout; says what happened."""
        try:
            if conn.execute("SELECT pg_terminate_backend(%s)", (holder,)).fetchone()[0]:
                return f"ended it (postgres_idle_in_transaction_timeout is {self.idle_in_transaction_timeout:g} s)"
            return "it has ended meanwhile"
        except psycopg.Error as exc:
            if conn.broken:
                raise
            return f"could not end it: {str(exc).strip()}"

    def listener_woke(self, asleep_s: float, expected_s: float) -> None:
        """The listener's wait for notifications took `asleep_s` where it should take `expected_s` at most."""
        if asleep_s - expected_s < FROZEN_AFTER_S:
            return
        ended = ""
        if self.idle_in_transaction_timeout and asleep_s > self.idle_in_transaction_timeout:
            ended = (f"; any session of ours left inside a transaction for over {self.idle_in_transaction_timeout:g} s"
                     f" (postgres_idle_in_transaction_timeout) has been ended to free its locks for the peers: the"
                     f" writes caught in one are retried, or fail, on a new connection")
        log.warning("this process did not run for %.0f s (stopped by a signal, a paused VM?)%s", asleep_s, ended,
                    extra={"stopped_s": round(asleep_s, 1)})
