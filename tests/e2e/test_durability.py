"""kill -9 under load: no acknowledged event is lost, no recorded step runs again."""

from __future__ import annotations

import time

from tests.conftest import (Api, AppProcess, Burst, LockgateProcess, free_port, step_reruns,
                            wait_for_one_completed_run_each, wait_until)

APP = "tests.e2e.apps.basic_app"
SENDERS = 4
EVENTS_PER_SENDER = 150


def test_kill9_mid_burst_loses_nothing_and_never_reruns_recorded_steps(tmp_path):
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}/api/inngest"
    port = free_port()
    server = LockgateProcess(
        args=["dev", "--no-discovery", "--poll-interval", "0.5", "--retry-interval", "0.2", "-u", app_url],
        data_dir=tmp_path / "data",
        port=port,
        log_path=tmp_path / "lockgate.log",
    ).start()
    app = AppProcess(module=APP, port=app_port, server_url=server.url, ledger=tmp_path / "ledger.jsonl").start()
    api = Api(server.url)
    wait_until(lambda: api.functions(), what="app sync")

    burst = Burst([server.url], "test/steps", senders=SENDERS, per_sender=EVENTS_PER_SENDER).start()
    acked = burst.acked
    # Kill once the burst is well under way and steps are executing.
    wait_until(lambda: len(acked) >= 150, timeout=60, what="150 acknowledged events")
    wait_until(lambda: sum(1 for e in app.ledger_entries() if e["kind"] == "step") >= 30, timeout=60)
    server.kill9()
    killed_at = time.time()
    burst.join()
    acked_before_kill = list(acked)
    assert acked_before_kill, "no event was acknowledged before the kill"

    # Same data directory, same port: the app keeps pointing at us.
    server.start()
    for _ in range(SENDERS):  # and it keeps accepting work after the restart
        r = api.send({"name": "test/steps", "data": {"n": -1}})
        assert r.status_code == 200
        acked.extend(r.json()["ids"])

    wait_for_one_completed_run_each(api, acked)
    # Every recorded step result is the last execution of that step: once recorded,
    # a step never ran again (an execution cut off by the kill before it was recorded may repeat).
    reruns_after_record, duplicates = step_reruns(api, acked, app)
    assert reruns_after_record == 0
    # Only calls in flight at the moment of the kill may have run twice.
    assert duplicates <= 100, f"{duplicates} duplicate step executions"
    print(f"acked={len(acked)} acked_before_kill={len(acked_before_kill)} duplicates={duplicates} "
          f"killed_at={killed_at}")
    app.stop()
    server.stop()
