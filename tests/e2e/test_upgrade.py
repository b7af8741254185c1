"""Upgrading a store written by the first release: every run in flight carries on.

The first release (0001_core only) runs as a real server on a SQLite data folder or a PostgreSQL
database until runs are sleeping, waiting for an event, retrying, queued behind a concurrency
limit and finished; it is killed, this release starts on the same store (applying the newer
migrations), and every run finishes, with no recorded step run twice.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from lockgate.store import migrations
from tests.conftest import ROOT, Api, AppProcess, LockgateProcess, free_port, query_store, wait_until

FIRST_RELEASE = "a900062ef6ad41a15eef1a1e2cef528fb749c2e8"  # "Store: versioned migrations", 0001_core only


def first_release_checkout(where: Path) -> Path:
    """The lockgate package as the first release shipped it, from this repository's history."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--verify", FIRST_RELEASE + "^{commit}"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()
        archive = subprocess.run(["git", "archive", commit, "lockgate"], cwd=ROOT, capture_output=True,
                                 check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"the first release's sources need this repository's git history: {exc}")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where)
    return where


def schema_versions(server: LockgateProcess) -> list[int]:
    return [r[0] for r in query_store(server, "SELECT version FROM schema_migrations ORDER BY version")]


def test_runs_in_every_state_finish_after_upgrading_from_the_first_release(tmp_path, backend):
    old_code = first_release_checkout(tmp_path / "first-release")
    gate = tmp_path / "gate"
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}/api/inngest"
    args = ["dev", "--no-discovery", "--poll-interval", "0.5", "--retry-interval", "1", "-u", app_url]
    old = LockgateProcess(args=args, data_dir=tmp_path / "data", log_path=tmp_path / "old.log",
                          cwd=old_code).start()
    app = AppProcess(module="tests.e2e.apps.ops_app", port=app_port, server_url=old.url,
                     ledger=tmp_path / "ledger.jsonl", extra_env={"GATE_PATH": str(gate)}).start()
    try:
        api = Api(old.url)
        wait_until(lambda: len(api.functions()) >= 5, what="sync with the first release")
        assert schema_versions(old) == [1]

        def runs_of(name: str, data: list[dict]) -> list[str]:
            ids = api.send([{"name": name, "data": d} for d in data]).json()["ids"]
            return [api.wait_for_runs(i)[0]["run_id"] for i in ids]

        finished = runs_of("ops/noop", [{"i": i} for i in range(3)])
        for run_id in finished:
            assert api.wait_for_end(run_id)["status"] == "Completed"
        sleeping = runs_of("ops/sleep", [{"seconds": 8} for _ in range(3)])
        waiting = runs_of("ops/wait", [{"id": f"w{i}"} for i in range(3)])
        retrying = runs_of("ops/flaky", [{} for _ in range(3)])
        queued = runs_of("ops/queue", [{} for _ in range(4)])
        wait_until(lambda: all(app.effects("sleep-before", run_id=r) for r in sleeping), what="sleepers asleep")
        wait_until(lambda: all(app.effects("wait-before", run_id=r) for r in waiting), what="waiters waiting")
        wait_until(lambda: all(app.effects("flaky-attempt", run_id=r) for r in retrying), what="flaky runs failing")
        wait_until(lambda: app.effects("queued-hold"), what="one queued run holding the slot")
        statuses = {r: api.run(r)["status"] for r in queued}
        assert sorted(statuses.values()).count("Queued") >= 2, statuses  # behind the concurrency limit
        for run_id in sleeping + waiting + retrying:
            assert api.run(run_id)["status"] == "Running"

        old.kill9()
        gate.touch()
        new = LockgateProcess(args=args, data_dir=old.data_dir, port=old.port, log_path=tmp_path / "new.log",
                              postgres_uri=old.postgres_uri).start()
        assert schema_versions(new) == [m.version for m in migrations.available()]
        api = Api(new.url)
        for i in range(3):
            assert api.send({"name": "ops/go", "data": {"id": f"w{i}"}}).status_code == 200

        for run_id in finished:  # kept, readable as before
            run = api.run(run_id)
            assert run["status"] == "Completed" and run["output"] == {"i": finished.index(run_id)}
        for run_id in sleeping + waiting + retrying + queued:
            assert api.wait_for_end(run_id, timeout=90)["status"] == "Completed", run_id
        for run_id in sleeping:  # the step recorded before the upgrade is not run again
            assert len(app.effects("sleep-before", run_id=run_id)) == 1
            assert len(app.effects("sleep-after", run_id=run_id)) == 1
        for run_id in waiting:
            assert len(app.effects("wait-before", run_id=run_id)) == 1
            assert [e["got"] for e in app.effects("wait-after", run_id=run_id)][-1] is True
        for run_id in retrying:
            assert app.effects("flaky-attempt", run_id=run_id, open=True)
        new.stop()
    finally:
        app.stop()
        old.stop()
