"""No silent retries: the burst sequence (noop, three-step and sleep bursts) through an app whose
keep-alive connections close as they are reused; every failed call is logged and counted."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from tests.conftest import Api, AppProcess, LockgateProcess, free_port, wait_until
from tests.stale_proxy import StaleKeepAliveProxy

ROUNDS = (("burst/noop", 30), ("burst/steps", 20), ("burst/sleep", 30))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, backend):
    tmp = tmp_path_factory.mktemp("call_failures")
    app_port = free_port()
    proxy = StaleKeepAliveProxy("127.0.0.1", app_port).start()
    server = LockgateProcess(
        args=["dev", "--no-discovery", "--no-poll", "--in-memory", "-u", f"http://127.0.0.1:{proxy.port}/api/inngest"],
        data_dir=None, log_path=tmp / "lockgate.log").start()
    app = AppProcess(module="tests.e2e.apps.burst_app", port=app_port, server_url=server.url,
                     ledger=tmp / "ledger.jsonl").start()
    api = Api(server.url)
    wait_until(lambda: len(api.functions()) == 4, what="app sync")
    yield server, app, api, proxy
    app.stop()
    server.stop()
    proxy.stop()


def test_a_burst_sequence_on_stale_keep_alive_connections_uses_no_attempts(stack):
    server, app, api, proxy = stack
    run_ids: list[str] = []
    for name, count in ROUNDS:
        ids = api.send([{"name": name, "data": {"i": i}} for i in range(count)]).json()["ids"]
        runs = [api.wait_for_runs(event_id)[0] for event_id in ids]
        ended = [api.wait_for_end(run["run_id"], timeout=60) for run in runs]
        assert {run["status"] for run in ended} == {"Completed"}
        run_ids += [run["run_id"] for run in runs]

    calls = app.effects("call")
    assert {c["run_id"] for c in calls} == set(run_ids)
    # The app never failed, so no function body may ever have seen a retry.
    assert Counter(c["attempt"] for c in calls) == {0: len(calls)}
    # The proxy did drop requests on reused connections: each was sent again at once, logged and counted.
    assert proxy.closed_on_reuse > 0
    stats = httpx.get(server.url + "/v1/stats").json()["data"]
    assert stats["calls"]["failed"].get("stale_connection", 0) > 0
    assert set(stats["calls"]["failed"]) == {"stale_connection"}
    log = server.log_path.read_text()
    assert "closed a reused keep-alive connection" in log and "no attempt used" in log

