"""`lockgate backup` taken mid-burst on a live SQLite server, then `lockgate restore`: every event
acknowledged before the backup finished is in it, and its run (sleeping ones too) completes."""

from __future__ import annotations

import subprocess
import threading
import time

import httpx
import pytest

from tests.conftest import PYTHON, ROOT, Api, AppProcess, LockgateProcess, free_port, wait_until


def _lockgate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "lockgate", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_a_backup_taken_mid_burst_restores_every_acknowledged_run(tmp_path, backend):
    if backend.name != "sqlite":
        pytest.skip("lockgate backup is for SQLite data folders; PostgreSQL uses pg_dump (store/README.md)")
    data = tmp_path / "data"
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}/api/inngest"
    args = ["dev", "--no-discovery", "--poll-interval", "0.5", "--retry-interval", "0.2", "-u", app_url]
    server = LockgateProcess(args=args, data_dir=data, log_path=tmp_path / "server.log").start()
    app = AppProcess(module="tests.e2e.apps.ops_app", port=app_port, server_url=server.url,
                     ledger=tmp_path / "ledger.jsonl", extra_env={"GATE_PATH": str(tmp_path / "gate")}).start()
    restored = None
    try:
        api = Api(server.url)
        wait_until(lambda: len(api.functions()) >= 5, what="sync")
        sleepers = [api.send({"name": "ops/sleep", "data": {"seconds": 4}}).json()["ids"][0] for _ in range(3)]

        acked: list[tuple[float, float, str]] = []  # (sent at, acknowledged at, event id)
        stop = threading.Event()

        def producer(worker: int) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                i = 0
                while not stop.is_set():
                    sent_at = time.monotonic()
                    response = http.post("/e/key", json={"name": "ops/noop", "data": {"i": worker * 100_000 + i}})
                    if response.status_code == 200:
                        acked.append((sent_at, time.monotonic(), response.json()["ids"][0]))
                    i += 1

        producers = [threading.Thread(target=producer, args=(w,)) for w in range(4)]
        for t in producers:
            t.start()
        wait_until(lambda: len(acked) >= 150, what="the burst under way")
        backup = subprocess.Popen([PYTHON, "-m", "lockgate", "backup", str(tmp_path / "backup.db"), "--data-dir",
                                   str(data)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        said_done = backup.stdout.readline()  # printed while the backup still holds back new writes
        backup_done = time.monotonic()
        wait_until(lambda: len([a for a in acked if a[0] > backup_done]) >= 30, what="the burst going on after")
        stop.set()
        for t in producers:
            t.join()
        assert backup.wait(timeout=60) == 0, backup.stderr.read()
        assert "backed up" in said_done

        # The backup may not replace a live server's database.
        refused = _lockgate("restore", str(tmp_path / "backup.db"), "--data-dir", str(data))
        assert refused.returncode != 0 and "stop that server first" in refused.stderr
        server.kill9()
        put_back = _lockgate("restore", str(tmp_path / "backup.db"), "--data-dir", str(data))
        assert put_back.returncode == 0, put_back.stderr

        restored = LockgateProcess(args=args, data_dir=data, port=server.port,
                                   log_path=tmp_path / "restored.log").start()
        api = Api(restored.url)
        before = [event_id for _, at, event_id in acked if at < backup_done]
        assert len(before) >= 150
        for event_id in before + sleepers:
            [run] = api.wait_for_runs(event_id)
            assert api.wait_for_end(run["run_id"])["status"] == "Completed", event_id
        # Sent after the backup was done: not in the restored store (a consistent copy, not a live one).
        after = [event_id for sent_at, _, event_id in acked if sent_at > backup_done]
        assert after and all(api.http.get(f"/v1/events/{e}").status_code == 404 for e in after[-5:])
    finally:
        app.stop()
        server.stop()
        if restored:
            restored.stop()
