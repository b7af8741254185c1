"""Connect (worker mode) with the official SDKs: workers dial lockgate over a WebSocket and take calls.

Workers are real processes: the Python SDK's `inngest.connect.connect` (tests/e2e/apps/connect_worker.py)
and the JS v4 SDK's `inngest/connect` (tests/e2e/js_app/connect_worker.cjs). The server extends
leases every second here (LOCKGATE_CONNECT_LEASE_INTERVAL=1), so a vanished worker's call lapses
after four seconds instead of twenty.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests import conftest as harness
from tests.conftest import (JS_APP_DIR, PYTHON, ROOT, Api, LockgateProcess, ensure_node_sdk,
                            free_port, wait_until)

SERVER_ENV = {"LOCKGATE_CONNECT_LEASE_INTERVAL": "1"}
SIGNING_KEY = "signkey-test-" + "c0ffee" * 8
EVENT_KEY = "connect-event-key"


@dataclass
class Worker:
    """One Connect worker process (Python or JS) pointed at a lockgate server."""

    name: str
    server_url: str
    ledger: Path
    language: str = "python"
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def start(self, log_dir: Path) -> "Worker":
        env = {**os.environ, "INNGEST_DEV": self.server_url, "INNGEST_BASE_URL": self.server_url,
               "LEDGER_PATH": str(self.ledger), "WORKER_NAME": self.name, "PYTHONPATH": str(ROOT), **self.env}
        if self.language == "python":
            cmd = [PYTHON, "-m", "tests.e2e.apps.connect_worker"]
        else:
            # Node 20 has WebSocket behind a flag; NODE_OPTIONS carries it into the SDK's worker thread.
            env.update(NODE_PATH=str(ensure_node_sdk("v4")), NODE_OPTIONS="--experimental-websocket")
            cmd = ["node", str(JS_APP_DIR / "connect_worker.cjs")]
        log = open(log_dir / f"worker-{self.name}.log", "ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def ledger(path: Path, kind: str, **match) -> list[dict]:
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in entries if e["kind"] == kind and all(e.get(k) == v for k, v in match.items())]


def connected(api: Api, app: str) -> list[dict]:
    for entry in api.http.get("/v1/apps").json()["data"]:
        if entry["name"] == app and entry["connect"]:
            return entry["connect"]["workers"]
    return []


def wait_connected(api: Api, app: str, name: str, timeout: float = 30.0) -> dict:
    return wait_until(lambda: next((w for w in connected(api, app) if w["instance_id"] == name
                                    and w["status"] == "ready"), None), timeout=timeout,
                      what=f"worker {name} of {app} to connect")


class Stack:
    def __init__(self, tmp: Path, server: LockgateProcess, api: Api) -> None:
        self.tmp, self.server, self.api = tmp, server, api
        self.ledger = tmp / "ledger.jsonl"
        self.workers: list[Worker] = []

    def worker(self, name: str, language: str = "python", app: str | None = None, **env: str) -> Worker:
        worker = Worker(name, self.server.url, self.ledger, language, env).start(self.tmp)
        self.workers.append(worker)
        wait_connected(self.api, app or ("connect-py" if language == "python" else "connect-js"), name)
        return worker

    def run_of(self, event: dict, timeout: float = 30.0) -> dict:
        event_id = self.api.send(event, key=EVENT_KEY).json()["ids"][0]
        return self.api.wait_for_runs(event_id, timeout=timeout)[0]

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, backend):
    tmp = tmp_path_factory.mktemp("connect")
    server = LockgateProcess(args=["dev", "--no-discovery", "--in-memory", "--retry-interval", "0.2"], data_dir=None,
                             log_path=tmp / "lockgate.log", env=SERVER_ENV).start()
    stack = Stack(tmp, server, Api(server.url))
    yield stack
    stack.stop_workers()
    server.stop()


@pytest.fixture
def fresh(stack):
    """Each test brings its own workers; none outlives it."""
    yield stack
    stack.stop_workers()


def assert_steps_ran_once(stack: Stack, event: str, n: int) -> None:
    run = stack.run_of({"name": event, "data": {"n": n}})
    done = stack.api.wait_for_end(run["run_id"])
    assert done["status"] == "Completed", done
    assert done["output"] == {"steps": ["one", "two"], "n": n}
    for step in ("one", "two"):
        assert len(ledger(stack.ledger, "step", run_id=run["run_id"], step=step)) == 1


def test_python_worker_runs_multi_step_function_and_is_listed(fresh):
    fresh.worker("py-a", APP_VERSION="v7")
    assert_steps_ran_once(fresh, "connect/steps", 1)
    app = next(a for a in fresh.api.http.get("/v1/apps").json()["data"] if a["name"] == "connect-py")
    assert app["url"] == "connect://connect-py" and app["framework"] == "connect"
    assert app["connect"]["count"] == 1 and app["connect"]["versions"] == ["v7"]
    assert app["connect"]["last_heartbeat_at"] > 0
    assert app["connect"]["workers"][0]["sdk"].startswith("py:")
    assert {f["slug"] for f in app["functions"]} == {"connect-py-steps", "connect-py-quick"}


def test_js_v4_worker_runs_multi_step_function(fresh):
    fresh.worker("js-a", language="js")
    assert_steps_ran_once(fresh, "connect-js/steps", 2)
    (worker,) = connected(fresh.api, "connect-js")
    assert worker["sdk"].startswith("typescript:")


def test_worker_killed_mid_step_is_retried_on_another_worker(fresh):
    fresh.worker("kill-a")
    fresh.worker("kill-b")
    run = fresh.run_of({"name": "connect/steps", "data": {"pause": 60}})
    started = wait_until(lambda: ledger(fresh.ledger, "step-start", run_id=run["run_id"]), what="step two to start")
    victim = next(w for w in fresh.workers if w.name == started[0]["worker"])
    victim.signal(signal.SIGKILL)
    done = fresh.api.wait_for_end(run["run_id"], timeout=60)
    assert done["status"] == "Completed", done
    finished = ledger(fresh.ledger, "step", run_id=run["run_id"], step="two")
    assert [e["worker"] for e in finished] == [next(w.name for w in fresh.workers if w is not victim)]
    assert len(ledger(fresh.ledger, "step", run_id=run["run_id"], step="one")) == 1  # recorded: never again


def test_call_longer_than_heartbeat_interval_keeps_its_lease(fresh):
    # 12 s in one step: past the SDK's 10 s heartbeat and three times the 4 s lease, kept alive by extensions
    fresh.worker("long")
    run = fresh.run_of({"name": "connect/steps", "data": {"pause": 12}})
    done = fresh.api.wait_for_end(run["run_id"], timeout=60)
    assert done["status"] == "Completed", done
    assert len(ledger(fresh.ledger, "step-start", run_id=run["run_id"])) == 1  # one attempt, never retried


def sigterm_mid_step(stack: Stack, worker: Worker, event: str, app: str) -> tuple[dict, dict]:
    """SIGTERM the worker while it runs step two of a run; once it paused, send another run.
    Returns both runs."""
    run = stack.run_of({"name": event, "data": {"pause": 3}})
    wait_until(lambda: ledger(stack.ledger, "step-start", run_id=run["run_id"]), what="step two to start")
    worker.signal(signal.SIGTERM)
    wait_until(lambda: all(w["status"] != "ready" for w in connected(stack.api, app)), timeout=10,
               what="the worker to pause")
    return run, stack.run_of({"name": event, "data": {"n": "later"}})


def test_sigterm_of_worker_finishes_call_in_flight_and_takes_no_more(fresh):
    worker = fresh.worker("term")
    run, later = sigterm_mid_step(fresh, worker, "connect/steps", "connect-py")
    # The step in flight finishes and its result is recorded before the worker exits.
    assert worker.proc.wait(timeout=30) == 0
    steps = fresh.api.http.get(f"/v1/runs/{run['run_id']}/steps").json()["data"]
    assert [s["output"] for s in steps if s["name"] == "two"] == [{"data": "two"}], steps
    # A paused worker takes no new call: both runs wait for the next worker, then finish on it.
    assert fresh.api.run(later["run_id"])["status"] in ("Queued", "Running")
    fresh.worker("after-term")
    for run_id in (run["run_id"], later["run_id"]):
        assert fresh.api.wait_for_end(run_id, timeout=30)["status"] == "Completed"
    assert len(ledger(fresh.ledger, "step-start", run_id=run["run_id"])) == 1  # drained, not cut and retried
    assert {e["worker"] for e in ledger(fresh.ledger, "step", run_id=later["run_id"])} == {"after-term"}


def test_js_worker_killed_mid_step_is_retried_on_another_worker(fresh):
    fresh.worker("js-kill-a", language="js")
    fresh.worker("js-kill-b", language="js")
    run = fresh.run_of({"name": "connect-js/steps", "data": {"pause": 60}})
    started = wait_until(lambda: ledger(fresh.ledger, "step-start", run_id=run["run_id"]), what="step two to start")
    victim = next(w for w in fresh.workers if w.name == started[0]["worker"])
    survivor = next(w for w in fresh.workers if w is not victim)
    victim.signal(signal.SIGKILL)
    # The victim's lease lapses (four missed extensions) and the call goes to the other worker.
    done = fresh.api.wait_for_end(run["run_id"], timeout=60)
    assert done["status"] == "Completed", done
    assert done["output"] == {"steps": ["one", "two"]}
    assert [e["worker"] for e in ledger(fresh.ledger, "step", run_id=run["run_id"], step="two")] == [survivor.name]
    assert len(ledger(fresh.ledger, "step", run_id=run["run_id"], step="one")) == 1  # recorded: never again


def test_sigterm_of_js_worker_drains_the_call_in_flight_and_loses_nothing(fresh):
    worker = fresh.worker("js-term", language="js")
    run, later = sigterm_mid_step(fresh, worker, "connect-js/steps", "connect-js")
    # The SDK drains: the call in flight completes before the worker exits.
    assert worker.proc.wait(timeout=30) == 0
    assert ledger(fresh.ledger, "step", run_id=run["run_id"], step="two")
    # Nothing is lost: what the drained worker did not finish, and the run sent meanwhile,
    # finish on the next worker; no step ran twice.
    fresh.worker("js-after-term", language="js")
    for run_id in (run["run_id"], later["run_id"]):
        assert fresh.api.wait_for_end(run_id, timeout=30)["status"] == "Completed"
    for step in ("one", "two"):
        assert len(ledger(fresh.ledger, "step", run_id=run["run_id"], step=step)) == 1
    assert len(ledger(fresh.ledger, "step-start", run_id=run["run_id"])) == 1  # drained, not cut and retried
    assert {e["worker"] for e in ledger(fresh.ledger, "step", run_id=later["run_id"])} == {"js-after-term"}


def test_two_workers_share_a_burst(fresh):
    fresh.worker("burst-a")
    fresh.worker("burst-b")
    tag = uuid.uuid4().hex
    ids = fresh.api.send([{"name": "connect/quick", "data": {"n": tag, "hold": 0.3}} for _ in range(16)],
                         key=EVENT_KEY).json()["ids"]
    runs = [fresh.api.wait_for_runs(i)[0] for i in ids]
    for run in runs:
        assert fresh.api.wait_for_end(run["run_id"], timeout=60)["status"] == "Completed"
    by_worker = [e["worker"] for e in ledger(fresh.ledger, "quick", n=tag)]
    assert len(by_worker) == 16
    assert set(by_worker) == {"burst-a", "burst-b"}


def test_bad_connect_requests_get_clear_errors(stack):
    start = httpx.post(stack.server.url + "/v0/connect/start", content=b"\xff\xff\xff")
    assert start.status_code == 400 and "StartRequest" in start.json()["error"]
    flush = httpx.post(stack.server.url + "/v0/connect/flush", content=b"\x0a\x00")
    assert flush.status_code == 400 and "request_id" in flush.json()["error"]


def test_kill9_of_lockgate_while_workers_are_connected(tmp_path):
    port = free_port()
    args = ["dev", "--no-discovery", "--retry-interval", "0.2"]
    server = LockgateProcess(args=args, data_dir=tmp_path / "data", port=port, log_path=tmp_path / "lockgate.log",
                             env=SERVER_ENV).start()
    stack = Stack(tmp_path, server, Api(server.url))
    try:
        stack.worker("survivor")
        run = stack.run_of({"name": "connect/steps", "data": {"pause": 2}})
        wait_until(lambda: ledger(stack.ledger, "step-start", run_id=run["run_id"]), what="step two to start")
        recorded = stack.api.http.get(f"/v1/runs/{run['run_id']}/steps").json()["data"]
        assert [s["name"] for s in recorded] == ["one"]  # step two is in flight on the worker
        server.kill9()
        server.port = port
        server.start()
        # The worker reconnects by itself; the run resumes from its recorded step.
        wait_connected(stack.api, "connect-py", "survivor", timeout=60)
        done = stack.api.wait_for_end(run["run_id"], timeout=90)
        assert done["status"] == "Completed", done
        assert len(ledger(stack.ledger, "step", run_id=run["run_id"], step="one")) == 1
        after = stack.run_of({"name": "connect/steps", "data": {"n": "after"}})
        assert stack.api.wait_for_end(after["run_id"], timeout=30)["status"] == "Completed"
    finally:
        stack.stop_workers()
        server.stop()


# -- production mode: signed, and several replicas -------------------------------------------


def prod_server(tmp: Path, name: str, postgres_uri: str | None = None) -> LockgateProcess:
    return LockgateProcess(args=["start", "--signing-key", SIGNING_KEY, "--event-key", EVENT_KEY,
                                 "--retry-interval", "0.2"],
                           data_dir=tmp / "data", postgres_uri=postgres_uri, log_path=tmp / f"{name}.log",
                           env={**SERVER_ENV, "LOCKGATE_LEASE_TIMEOUT": "5"})


def prod_env(server_url: str, key: str = SIGNING_KEY) -> dict[str, str]:
    return {"INNGEST_DEV": "0", "INNGEST_BASE_URL": server_url, "INNGEST_SIGNING_KEY": key,
            "INNGEST_EVENT_KEY": EVENT_KEY}


def test_signed_mode_accepts_the_signing_key_and_refuses_others(tmp_path):
    server = prod_server(tmp_path, "lockgate").start()
    api = Api(server.url, signing_key=SIGNING_KEY)
    stack = Stack(tmp_path, server, api)
    try:
        unsigned = httpx.post(server.url + "/v0/connect/start", content=b"")
        assert unsigned.status_code == 401
        hashed = "signkey-test-" + hashlib.sha256(bytes.fromhex("c0ffee" * 8)).hexdigest()
        ok = httpx.post(server.url + "/v0/connect/start", content=b"", headers={"Authorization": f"Bearer {hashed}"})
        assert ok.status_code == 200 and ok.headers["content-type"] == "application/protobuf"
        stack.worker("signed", **prod_env(server.url))
        stack.worker("signed-js", language="js", **prod_env(server.url))
        for event in ("connect/steps", "connect-js/steps"):
            run = stack.run_of({"name": event, "data": {"n": "signed"}})
            assert api.wait_for_end(run["run_id"])["status"] == "Completed"
        wrong = Worker("wrong-key", server.url, stack.ledger, env=prod_env(server.url, "signkey-test-" + "ab" * 32))
        wrong.start(tmp_path)
        stack.workers.append(wrong)
        assert wrong.proc.wait(timeout=60) != 0  # the SDK gives up on a 401 from /v0/connect/start
        assert [w["instance_id"] for w in connected(api, "connect-py")] == ["signed"]
    finally:
        stack.stop_workers()
        server.stop()


@pytest.fixture
def replicas(tmp_path):
    """Two `lockgate start` replicas on one PostgreSQL database: (stack on a, api of b, a, b)."""
    if harness.CURRENT_BACKEND.name != "postgres":
        pytest.skip("replicas share a PostgreSQL database")
    uri = harness.CURRENT_BACKEND.new_database()
    a = prod_server(tmp_path, "replica-a", uri).start()
    b = prod_server(tmp_path, "replica-b", uri).start()
    stack = Stack(tmp_path, a, Api(a.url, signing_key=SIGNING_KEY))
    yield stack, Api(b.url, signing_key=SIGNING_KEY), a, b
    stack.stop_workers()
    b.stop()
    a.stop()


def test_call_reaches_a_worker_on_another_replica(replicas):
    stack, api_b, with_worker, _ = replicas
    api_a = stack.api
    stack.worker("on-a", **prod_env(with_worker.url))
    wait_until(lambda: connected(api_b, "connect-py"), what="replica b to see the worker")
    # Events sent to b are leased by b at once: b relays each call to a through the store.
    ids = api_b.send([{"name": "connect/steps", "data": {"n": i}} for i in range(3)], key=EVENT_KEY).json()["ids"]
    for event_id in ids:
        run = api_b.wait_for_runs(event_id)[0]
        done = api_b.wait_for_end(run["run_id"], timeout=60)
        assert done["status"] == "Completed", done
        assert len(ledger(stack.ledger, "step", run_id=run["run_id"], step="two")) == 1
    assert api_b.http.get("/v1/stats").json()["data"]["connect"]["relayed_out"] >= 3
    assert api_a.http.get("/v1/stats").json()["data"]["connect"]["relayed_in"] >= 3


def test_sigterm_of_a_replica_moves_its_workers_without_losing_the_call(replicas):
    stack, api_b, leaving, _ = replicas
    stack.worker("mover", **prod_env(leaving.url))
    run = stack.run_of({"name": "connect/steps", "data": {"pause": 4}})
    wait_until(lambda: ledger(stack.ledger, "step-start", run_id=run["run_id"]), what="step two to start")
    leaving.proc.send_signal(signal.SIGTERM)
    # a's /v0/connect/start sends the worker to b while a drains
    wait_until(lambda: [w for w in connected(api_b, "connect-py") if w["status"] == "ready"], timeout=30,
               what="the worker to reconnect to replica b")
    assert leaving.proc.wait(timeout=30) == 0
    done = api_b.wait_for_end(run["run_id"], timeout=60)
    assert done["status"] == "Completed", done
    assert len(ledger(stack.ledger, "step-start", run_id=run["run_id"])) == 1  # the call in flight was kept
    assert len(ledger(stack.ledger, "step", run_id=run["run_id"], step="two")) == 1
