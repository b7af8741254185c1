"""Due timers are applied in bulk: sleeps falling due together keep their order and none is lost
when the server is killed with kill -9 while they fire."""

from __future__ import annotations

import time
from datetime import datetime

from tests.conftest import Api, AppProcess, LockgateProcess, free_port, wait_until

GROUPS, PER_GROUP, STEP_MS = 6, 15, 250


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def test_sleeps_due_together_fire_in_order_and_survive_kill9(tmp_path, backend):
    app_port = free_port()
    server = LockgateProcess(
        args=["dev", "--no-discovery", "--no-poll", "-u", f"http://127.0.0.1:{app_port}/api/inngest"],
        data_dir=tmp_path / "data", log_path=tmp_path / "lockgate.log").start()
    app = AppProcess(module="tests.e2e.apps.burst_app", port=app_port, server_url=server.url,
                     ledger=tmp_path / "ledger.jsonl").start()
    try:
        api = Api(server.url)
        wait_until(lambda: len(api.functions()) == 4, what="app sync")
        first_due = int(time.time() * 1000) + 4000
        events = [{"name": "burst/sleep-until", "data": {"i": i, "due_ms": first_due + (i // PER_GROUP) * STEP_MS}}
                  for i in range(GROUPS * PER_GROUP)]
        ids = api.send(events).json()["ids"]
        run_ids = [api.wait_for_runs(e)[0]["run_id"] for e in ids]

        def nap(run_id: str) -> dict | None:
            return next((s for s in api.http.get(f"/v1/runs/{run_id}/steps").json()["data"] if s["name"] == "nap"),
                        None)

        wait_until(lambda: all((n := nap(r)) and n["status"] == "sleeping" for r in run_ids), what="every run asleep")
        # Kill as soon as the first group has fired: the later groups fall due while the server is down.
        wait_until(lambda: (n := nap(run_ids[0])) and n["ended_at"], timeout=20, interval=0.01,
                   what="the first group to wake")
        server.kill9()
        server.start()

        ended = [api.wait_for_end(r, timeout=60) for r in run_ids]
        assert [r["status"] for r in ended] == ["Completed"] * len(run_ids)
        assert [r["output"] for r in ended] == list(range(len(run_ids)))
        fired = []
        for i, run_id in enumerate(run_ids):
            steps = [s for s in api.http.get(f"/v1/runs/{run_id}/steps").json()["data"] if s["name"] == "nap"]
            assert len(steps) == 1 and steps[0]["status"] == "completed"
            fired.append(ms(steps[0]["ended_at"]))
            assert fired[-1] >= events[i]["data"]["due_ms"]  # never early
        assert fired == sorted(fired)  # in due order, across the restart too
        assert fired[0] < min(fired[PER_GROUP * 2:])  # some fired before the kill, the rest after it
    finally:
        app.stop()
        server.stop()
