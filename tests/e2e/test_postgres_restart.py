"""A PostgreSQL restart under load: acknowledged events all finish, recorded steps never rerun.

Runs on a private cluster in a temp dir (not the shared server), so stopping it disturbs nobody.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from tests import pgtools
from tests.conftest import Api, AppProcess, LockgateProcess, free_port, wait_until

APP = "tests.e2e.apps.basic_app"


@pytest.fixture
def cluster(backend):
    if backend.name != "postgres":
        pytest.skip("restarts a PostgreSQL server")
    root = Path(tempfile.mkdtemp(prefix="lockgate-pg-"))  # outside pytest's 0700 tree: the postgres user needs it
    try:
        c = pgtools.PrivateCluster(root, free_port()).init()
    except (RuntimeError, OSError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"cannot create a private PostgreSQL cluster: {exc}")
    c.start()
    yield c
    try:
        c.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_database_restart_under_load_loses_nothing(tmp_path, cluster):
    uri = pgtools.create_database(cluster.uri)
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}/api/inngest"
    server = LockgateProcess(
        args=["dev", "--no-discovery", "--poll-interval", "0.5", "--retry-interval", "0.2", "-u", app_url],
        data_dir=None, postgres_uri=uri, log_path=tmp_path / "lockgate.log",
    ).start()
    app = AppProcess(module=APP, port=app_port, server_url=server.url, ledger=tmp_path / "ledger.jsonl").start()
    api = Api(server.url)
    wait_until(lambda: api.functions(), what="app sync")

    acked: list[str] = []
    refused = 0
    lock = threading.Lock()
    stop = threading.Event()

    def sender(worker: int) -> None:
        nonlocal refused
        with httpx.Client(timeout=60) as http:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = http.post(f"{server.url}/e/key", json={"name": "test/steps", "data": {"n": worker * 10_000 + i}})
                except httpx.HTTPError:
                    continue
                with lock:
                    if r.status_code == 200:
                        acked.extend(r.json()["ids"])
                    else:
                        refused += 1  # an honest error is fine; a lost acknowledged event is not
                time.sleep(0.01)

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: sum(1 for e in app.ledger_entries() if e["kind"] == "step") >= 30, timeout=60,
               what="steps under way")
    cluster.stop("immediate")  # like a crash: no checkpoint, clients cut off
    time.sleep(3)
    cluster.start()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join()
    assert server.proc.poll() is None, "the server exited when its database went away"

    def all_done() -> bool:
        return all((runs := api.event_runs(eid)) and len(runs) == 1 and runs[0]["status"] == "Completed"
                   for eid in acked)

    wait_until(all_done, timeout=240, interval=1.0, what=f"all {len(acked)} acknowledged events to complete")
    executions = defaultdict(list)
    for entry in app.ledger_entries():
        if entry["kind"] == "step":
            executions[(entry["run_id"], entry["step"])].append(entry["token"])
    for eid in acked:
        run = api.event_runs(eid)[0]
        for recorded in run["output"]["steps"]:
            assert executions[(run["run_id"], recorded["step"])][-1] == recorded["token"]
    # It keeps working afterwards.
    event_id = api.send({"name": "test/hello", "data": {"name": "again"}}).json()["ids"][0]
    assert api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])["output"] == "hello again"
    print(f"acked={len(acked)} refused={refused}")
    app.stop()
    server.stop()
