"""Failover in seconds: two real `lockgate start` replicas on one PostgreSQL database, one killed
with kill -9; and a replica restarted under the same name taking its calls back at once."""

from __future__ import annotations

import re
import signal
import time
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest

from tests.conftest import Api, LockgateProcess, free_port, wait_until
from tests.e2e.test_production import EVENT_KEY, SIGNING_KEY, prod_app

# Generous, for a loaded machine: the log lines asserted beside it show which path brought the calls
# back (a peer noticing the death, a restart recognising its previous run), not a lease running
# out; how fast that is is measured by bench/failover.py, not here.
TAKEOVER_BOUND_S = 30.0


def replica(tmp_path: Path, app_url: str, name: str, *, postgres_uri: str | None = None,
            env: dict[str, str] | None = None) -> LockgateProcess:
    """A `lockgate start` replica with the default lease and heartbeat (unless env says otherwise)."""
    return LockgateProcess(
        args=["start", "--signing-key", SIGNING_KEY, "--event-key", EVENT_KEY, "-u", app_url,
              "--poll-interval", "0.5", "--retry-interval", "0.2"],
        data_dir=tmp_path / "data", postgres_uri=postgres_uri, log_path=tmp_path / f"{name}.log", env=env or {})


def slow_runs(api: Api, count: int, seconds: float) -> list[str]:
    return [api.send({"name": "prod/slow", "data": {"seconds": seconds, "i": i}}, key=EVENT_KEY).json()["ids"][0]
            for i in range(count)]


def starts_by_run(app) -> dict[str, list[float]]:
    starts = defaultdict(list)
    for entry in app.effects("slow-start"):
        starts[entry["run_id"]].append(entry["at"])
    return starts


@pytest.fixture
def postgres_only(backend):
    if backend.name != "postgres":
        pytest.skip("replicas share a PostgreSQL database")


def test_a_killed_replicas_calls_resume_on_its_peer_within_seconds(tmp_path, postgres_only):
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}/api/inngest"
    a = replica(tmp_path, app_url, "a").start()
    b = replica(tmp_path, app_url, "b", postgres_uri=a.postgres_uri).start()
    app = prod_app(tmp_path, app_port, a.url).start()
    try:
        api_a, api_b = Api(a.url, SIGNING_KEY), Api(b.url, SIGNING_KEY)
        wait_until(lambda: api_a.functions() and api_b.functions(), what="both replicas to see the app")
        # Calls longer than a lease: heartbeats keep them on their replica while they run.
        on_a = slow_runs(api_a, 6, 14)
        on_b = slow_runs(api_b, 6, 12)
        runs_a = [api_a.wait_for_runs(e)[0]["run_id"] for e in on_a]
        runs_b = [api_a.wait_for_runs(e)[0]["run_id"] for e in on_b]
        wait_until(lambda: set(runs_a + runs_b) <= set(starts_by_run(app)), what="every slow call to be in flight")
        time.sleep(1.0)
        killed_at = time.time()
        b.kill9()

        ended = [api_a.wait_for_end(r, timeout=60) for r in runs_a + runs_b]
        assert {r["status"] for r in ended} == {"Completed"}
        starts = starts_by_run(app)
        # a's own calls outlived the 10 s lease and were never run a second time.
        assert all(len(starts[r]) == 1 for r in runs_a), {r: starts[r] for r in runs_a}
        # b held its calls when it died: each was sent again, by a, within the bound.
        resumed = [min(t for t in starts[r] if t > killed_at) - killed_at for r in runs_b]
        assert max(resumed) <= TAKEOVER_BOUND_S, resumed
        log_a = a.log_path.read_text()
        assert "unresponsive for" in log_a and "taking over 6 leased call(s)" in log_a
    finally:
        app.stop()
        a.stop()


def test_a_replica_restarted_under_its_name_takes_its_calls_back_at_once(tmp_path, postgres_only):
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}/api/inngest"
    # A long lease: only recognising the previous incarnation can bring the calls back quickly.
    server = replica(tmp_path, app_url, "r", env={"LOCKGATE_LEASE_TIMEOUT": "120"}).start()
    app = prod_app(tmp_path, app_port, server.url).start()
    try:
        api = Api(server.url, SIGNING_KEY)
        wait_until(lambda: api.functions(), what="app sync")
        runs = [api.wait_for_runs(e)[0]["run_id"] for e in slow_runs(api, 4, 10)]
        wait_until(lambda: set(runs) <= set(starts_by_run(app)), what="the slow calls to be in flight")
        server.kill9()
        restarted_at = time.time()
        server.start()  # same port: same default replica name (host:port)
        ended = [api.wait_for_end(r, timeout=90) for r in runs]
        assert {r["status"] for r in ended} == {"Completed"}
        starts = starts_by_run(app)
        resumed = [min(t for t in starts[r] if t > restarted_at) - restarted_at for r in runs]
        assert max(resumed) <= TAKEOVER_BOUND_S, resumed
        assert "restarted: its previous run" in server.log_path.read_text()
        assert "held 4 leased call(s)" in server.log_path.read_text()
    finally:
        app.stop()
        server.stop()



def test_a_replica_frozen_inside_a_transaction_holds_up_its_peer_only_until_the_timeout(tmp_path, postgres_only):
    # A replica stopped (SIGSTOP, a paused VM) in the middle of a transaction keeps its row locks:
    # its peer, taking over its calls, waits on them to settle the same runs. PostgreSQL ends the
    # frozen session after postgres_idle_in_transaction_timeout; thawed, the replica carries on.
    idle_timeout_s = 12
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}/api/inngest"
    env = {"LOCKGATE_POSTGRES_IDLE_IN_TRANSACTION_TIMEOUT": str(idle_timeout_s), "LOCKGATE_LEASE_TIMEOUT": "4"}
    a = replica(tmp_path, app_url, "a", env={**env, "PGAPPNAME": "replica-a"}).start()
    b = replica(tmp_path, app_url, "b", postgres_uri=a.postgres_uri, env={**env, "PGAPPNAME": "replica-b"}).start()
    app = prod_app(tmp_path, app_port, a.url).start()
    database = psycopg.connect(a.postgres_uri, autocommit=True)
    try:
        api_a, api_b = Api(a.url, SIGNING_KEY), Api(b.url, SIGNING_KEY)
        wait_until(lambda: api_a.functions() and api_b.functions(), what="both replicas to see the app")
        runs = [api_b.wait_for_runs(e)[0]["run_id"] for e in slow_runs(api_b, 4, 2)]
        wait_until(lambda: set(runs) <= set(starts_by_run(app)), what="every slow call to be in flight")
        on_b = {r for (r,) in database.execute("SELECT run_id FROM jobs WHERE run_id = ANY(%s) AND lease_owner LIKE %s",
                                               (runs, f"%:{b.port}#%"))}
        assert on_b, "b calls none of the runs sent to it"

        # Catch b inside the transaction that settles a call: hold the runs' rows until b waits on one.
        holder = psycopg.connect(a.postgres_uri)
        holder.execute("SELECT run_id FROM runs WHERE run_id = ANY(%s) FOR UPDATE", (runs,))
        wait_until(lambda: database.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'replica-b' AND %s = ANY(pg_blocking_pids(pid))",
            (holder.info.backend_pid,)).fetchall(), timeout=20, what="b to settle a call under the held row lock")
        b.proc.send_signal(signal.SIGSTOP)
        holder.rollback()
        holder.close()
        # Idle in its transaction, or (paused inside a pipeline) waiting for the pipeline's next statement.
        in_transaction = ("SELECT state FROM pg_stat_activity WHERE application_name = 'replica-b'"
                          " AND backend_xid IS NOT NULL AND (state = 'idle in transaction' OR wait_event = 'ClientRead')")
        wait_until(lambda: database.execute(in_transaction).fetchall(), what="the frozen b to hold its transaction")

        # a takes b's calls over and settles them once b's session is ended.
        ended = [api_a.wait_for_end(r, timeout=60) for r in runs]
        assert {r["status"] for r in ended} == {"Completed"} and {r["output"] for r in ended} == {"done"}
        assert b.proc.poll() is None and not database.execute(in_transaction).fetchall()
        log_a = a.log_path.read_text()  # a said what it waited for
        assert re.search(r"has waited \d+ s for a lock held by PostgreSQL session \d+ \(replica-b at 127.0.0.1\),"
                         r" silent inside a transaction", log_a), log_a

        thawed_at = time.time()
        b.proc.send_signal(signal.SIGCONT)
        wait_until(lambda: "has been ended to free its locks" in b.log_path.read_text(),
                   what="b to say it was frozen")
        # b serves again: new runs sent to it complete.
        later = [api_b.wait_for_runs(e)[0]["run_id"] for e in slow_runs(api_b, 2, 0.2)]
        assert {api_b.wait_for_end(r, timeout=30)["status"] for r in later} == {"Completed"}
        time.sleep(2)  # time for a wrong late write of b's to show
        starts = starts_by_run(app)
        # A call of b's whose settlement died with b's session is made again by a, once; one whose
        # settlement b had already sent in full was committed by the database (b's batch goes as one
        # query) and is not. Nobody makes any of them after b thawed.
        assert all(len(starts[r]) == 1 for r in runs if r not in on_b), starts
        assert all(len(starts[r]) in (1, 2) for r in on_b) and any(len(starts[r]) == 2 for r in on_b), starts
        assert all(t < thawed_at for r in runs for t in starts[r]), starts
        assert {api_a.run(r)["status"] for r in runs} == {"Completed"}
        # What b logged about its lost connection is in its log's format (JSON lines), psycopg's words too.
        assert all(line.startswith("{") for line in b.log_path.read_text().splitlines())
    finally:
        if b.proc.poll() is None:
            b.proc.send_signal(signal.SIGCONT)
        database.close()
        app.stop()
        a.stop()
        b.stop()
