"""A PostgreSQL restart under load: acknowledged events all finish, recorded steps never rerun.

Runs on a private cluster in a temp dir (not the shared server), so stopping it disturbs nobody.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests import pgtools
from tests.conftest import (Api, AppProcess, Burst, LockgateProcess, free_port, step_reruns,
                            wait_for_one_completed_run_each, wait_until)

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

    # Senders wait up to a minute for an answer: the server holds a request while the database is away.
    burst = Burst([server.url], "test/steps", senders=3, timeout=60, pause=0.01).start()
    acked = burst.acked
    wait_until(lambda: sum(1 for e in app.ledger_entries() if e["kind"] == "step") >= 30, timeout=60,
               what="steps under way")
    cluster.stop("immediate")  # like a crash: no checkpoint, clients cut off
    time.sleep(3)
    cluster.start()
    time.sleep(3)
    burst.stop()
    assert server.proc.poll() is None, "the server exited when its database went away"

    wait_for_one_completed_run_each(api, acked)
    assert step_reruns(api, acked, app)[0] == 0  # no recorded step ran again
    # It keeps working afterwards.
    event_id = api.send({"name": "test/hello", "data": {"name": "again"}}).json()["ids"][0]
    assert api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])["output"] == "hello again"
    print(f"acked={len(acked)} refused={burst.refused}")
    app.stop()
    server.stop()
