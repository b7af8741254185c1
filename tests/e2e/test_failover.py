"""Failover in seconds: two real `lockgate start` replicas on one PostgreSQL database, one killed
with kill -9; and a replica restarted under the same name taking its calls back at once."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import Api, LockgateProcess, free_port, wait_until
from tests.e2e.test_production import EVENT_KEY, SIGNING_KEY, prod_app

TAKEOVER_BOUND_S = 10.0


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
