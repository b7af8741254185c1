"""`lockgate start`: keys, a signed production-mode SDK app, replicas sharing one database."""

from __future__ import annotations

import concurrent.futures
import hashlib
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import (ROOT, Api, AppProcess, Burst, LockgateProcess, free_port, step_reruns,
                            wait_for_one_completed_run_each, wait_until)

SIGNING_KEY = "signkey-test-" + "5ec0de" * 8
EVENT_KEY = "prod-event-key"
APP = "tests.e2e.apps.prod_app"


def prod_server(tmp_path: Path, app_url: str, *, name: str = "lockgate", postgres_uri: str | None = None,
                lease_timeout: float = 5.0) -> LockgateProcess:
    return LockgateProcess(
        args=["start", "--signing-key", SIGNING_KEY, "--event-key", EVENT_KEY, "-u", app_url,
              "--poll-interval", "0.5", "--retry-interval", "0.2"],
        data_dir=tmp_path / "data",
        postgres_uri=postgres_uri,
        log_path=tmp_path / f"{name}.log",
        env={"LOCKGATE_LEASE_TIMEOUT": str(lease_timeout)},
    )


def prod_app(tmp_path: Path, port: int, server_url: str, signing_key: str = SIGNING_KEY,
             module: str = APP) -> AppProcess:
    return AppProcess(module=module, port=port, server_url=server_url, ledger=tmp_path / "ledger.jsonl",
                      extra_env={"INNGEST_DEV": "0", "INNGEST_BASE_URL": server_url,
                                 "INNGEST_SIGNING_KEY": signing_key, "INNGEST_EVENT_KEY": EVENT_KEY},
                      output=tmp_path / f"app-{port}.log", log_level="info")


def doctor(server: LockgateProcess, *args: str) -> subprocess.CompletedProcess:
    store = ["--postgres-uri", server.postgres_uri] if server.postgres_uri else ["--data-dir", str(server.data_dir)]
    return subprocess.run([sys.executable, "-m", "lockgate", "doctor", "--port", str(server.port), *store, *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def start_lockgate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lockgate", "start", "--port", "0", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--event-key", "k"], "needs a signing key"),
        (["--signing-key", "signkey-prod-abc", "--event-key", "k"], "even number of hex digits"),
        (["--signing-key", "signkey-prod-zz11", "--event-key", "k"], "must be hexadecimal"),
        (["--signing-key", "signkey-prod-ab12", "--signing-key-fallback", "nothex!", "--event-key", "k"],
         "--signing-key-fallback is not valid"),
        (["--signing-key", "signkey-prod-ab12"], "needs at least one event key"),
    ],
)
def test_start_refuses_missing_or_malformed_keys_and_says_why(args, fragment):
    proc = start_lockgate(*args)
    assert proc.returncode == 2
    assert fragment in proc.stderr


def test_doctor_on_a_broken_setup_says_what_to_fix(tmp_path):
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "lockgate", "doctor", "--port", str(port), "--postgres-uri",
         f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere", "--signing-key", "signkey-prod-abc",
         "-u", f"http://127.0.0.1:{free_port()}/api/inngest"],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 1
    assert f"nothing listens on 127.0.0.1:{port}" in proc.stdout
    assert "cannot reach PostgreSQL" in proc.stdout and "--postgres-uri" in proc.stdout
    assert "even number of hex digits" in proc.stdout
    assert "does not answer" in proc.stdout and "is it running" in proc.stdout
    assert re.search(r"^\d+ problems( and \d+ warnings?)? found\.$", proc.stderr, re.M), proc.stderr


def test_production_app_runs_signed_and_keys_are_enforced(tmp_path):
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}/api/inngest"
    server = prod_server(tmp_path, app_url).start()
    app = prod_app(tmp_path, app_port, server.url).start()
    try:
        api = Api(server.url, SIGNING_KEY)
        wait_until(lambda: api.functions(), what="the production app to sync (signed PUT, bearer-authenticated register)")
        # The right event key runs the function end to end, signed both ways.
        event_id = api.send({"name": "prod/steps", "data": {"n": 1}}, key=EVENT_KEY).json()["ids"][0]
        run = api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])
        assert run["status"] == "Completed" and run["output"]["n"] == 1

        # A wrong event key is refused with a body that says what to do, and stores nothing.
        before = api.http.get("/v1/events").json()["data"]
        wrong = api.send({"name": "prod/steps", "data": {"n": 2}}, key="not-the-key")
        assert wrong.status_code == 401
        assert wrong.json()["error"] == "Event key not found" and "--event-key" in wrong.json()["message"]
        assert api.http.get("/v1/events").json()["data"] == before

        # /fn/register needs the signing key as a bearer token: raw or sha256-hashed, never missing or wrong.
        body = {"appName": "intruder", "url": "http://127.0.0.1:9/api/inngest", "functions": []}
        anonymous = httpx.Client(base_url=server.url, timeout=10)
        assert anonymous.post("/fn/register", json=body).status_code == 401
        assert anonymous.get("/v1/apps").status_code == 401
        assert anonymous.post("/v0/gql", json={"query": "{ __typename }"}).status_code == 401
        bad = anonymous.post("/fn/register", json=body, headers={"Authorization": "Bearer signkey-test-abcd"})
        assert bad.status_code == 401 and "signing key" in bad.json()["error"]
        hashed = hashlib.sha256(bytes.fromhex(SIGNING_KEY.split("-")[-1])).hexdigest()
        ok = anonymous.post("/fn/register", json=body, headers={"Authorization": f"Bearer signkey-test-{hashed}"})
        assert ok.status_code == 200

        # doctor sees a healthy app (the intruder app just registered does not answer: that is reported).
        report = doctor(server, "--signing-key", SIGNING_KEY)
        assert "lockgate (cloud mode) answers" in report.stdout
        assert f"app {app.url} answers and serves 3 function(s)" in report.stdout
        assert f"app {app.url} holds the same signing key" in report.stdout
        assert "app http://127.0.0.1:9/api/inngest does not answer" in report.stdout
        assert report.returncode == 1
        if server.postgres_uri:  # an operator learns who vacuums lockgate's tables when autovacuum is off
            import psycopg

            with psycopg.connect(server.postgres_uri) as conn:
                autovacuum_off = conn.execute("SHOW autovacuum").fetchone()[0] == "off"
            assert ("autovacuum is off: lockgate's housekeeping vacuums" in report.stdout) == autovacuum_off

        # The periodic check that the app is still there (every --poll-interval) is signed too:
        # a cloud-mode SDK logs an error for every unsigned request it refuses.
        checks = len(re.findall(r"\bGET /api/inngest\b", app.logged()))
        wait_until(lambda: len(re.findall(r"\bGET /api/inngest\b", app.logged())) >= checks + 2
                   or "unauthorized" in app.logged(), what="two health checks of the app")
        assert "unauthorized" not in app.logged(), app.logged()
    finally:
        app.stop()
        server.stop()


def test_app_with_another_signing_key_is_refused_and_the_reason_is_shown(tmp_path):
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}/api/inngest"
    server = prod_server(tmp_path, app_url).start()
    app = prod_app(tmp_path, app_port, server.url, signing_key="signkey-test-" + "0badc0de" * 8).start()
    try:
        api = Api(server.url, SIGNING_KEY)

        def app_error() -> str | None:
            apps = api.http.get("/v1/apps").json()["data"]
            error = apps and apps[0].get("error")
            return error if error and "401" in error else None  # earlier rounds may predate the app

        error = wait_until(app_error, what="the refused sync to be recorded")
        assert "refused the sync" in error
        assert api.functions() == []
        report = doctor(server, "--signing-key", SIGNING_KEY, "-u", app.url)
        assert report.returncode == 1
        assert "its INNGEST_SIGNING_KEY differs from lockgate's --signing-key" in report.stdout
    finally:
        app.stop()
        server.stop()


class _Frontend(BaseHTTPRequestHandler):
    """A load balancer in front of the app: forwards to `server.target`, or answers 503 when it is None."""

    server: "_Balancer"

    def do_GET(self) -> None:
        self._forward()

    def do_PUT(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.target is None:
            self._answer(503, {}, b"\n  upstream app is down for maintenance\nretry in 5 minutes\n")
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("content-length", "connection")}
        answer = httpx.request(self.command, self.server.target + self.path, headers=headers, content=body,
                               timeout=30)
        kept = {k: v for k, v in answer.headers.items()
                if k.lower() not in ("content-length", "connection", "transfer-encoding", "content-encoding")}
        self._answer(answer.status_code, kept, answer.content)

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _Balancer(ThreadingHTTPServer):
    def __init__(self, port: int, target: str) -> None:
        super().__init__(("127.0.0.1", port), _Frontend)
        self.target: str | None = target
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


# No cron: the only requests it gets are the periodic check's, so the check is what reports a problem.
QUIET_APP = "tests.e2e.apps.steps_app"
WARNING = '"level":"warning"'  # lockgate start logs JSON lines


def _server_log_lines(server: LockgateProcess, *needles: str) -> list[str]:
    def found():
        lines = server.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if all(n in line for n in needles)]
    return wait_until(found, what=f"a log line with {needles}")


def _app_error(api: Api) -> str | None:
    apps = api.http.get("/v1/apps").json()["data"]
    return apps[0]["error"] if apps else None


def test_the_periodic_check_reports_an_app_redeployed_with_another_signing_key(tmp_path):
    # The app synced with lockgate's key, then was redeployed behind its load balancer with another
    # one: its functions stay listed, so only the periodic signed GET (now refused, 401) can tell
    # that every call will fail.
    front_port = free_port()
    app_url = f"http://127.0.0.1:{front_port}/api/inngest"
    server = prod_server(tmp_path, app_url).start()
    good = prod_app(tmp_path, free_port(), server.url, module=QUIET_APP).start()
    other_key = prod_app(tmp_path, free_port(), server.url, signing_key="signkey-test-" + "0badc0de" * 8,
                         module=QUIET_APP).start()
    front = _Balancer(front_port, f"http://127.0.0.1:{good.port}")
    try:
        api = Api(server.url, SIGNING_KEY)
        wait_until(lambda: api.functions(), what="the app to sync")
        assert _app_error(api) is None
        front.target = f"http://127.0.0.1:{other_key.port}"
        [warning] = _server_log_lines(server, WARNING, "signing key mismatch: the app refused lockgate's signature (401)")
        assert app_url in warning and "INNGEST_SIGNING_KEY" in warning
        # /v1/apps (and the dashboard's apps page) show the app in error until it holds the key again;
        # the next rounds re-sync it, and that refusal names the key too.
        error = wait_until(lambda: _app_error(api), what="the app's error in /v1/apps")
        assert "401" in error and "signing key" in error.lower()

        front.target = f"http://127.0.0.1:{good.port}"
        wait_until(lambda: _app_error(api) is None, what="the app's error to clear once it holds the key again")
    finally:
        front.close()
        other_key.stop()
        good.stop()
        server.stop()


def test_the_periodic_check_reports_an_error_status_with_its_first_line(tmp_path):
    front_port = free_port()
    app_url = f"http://127.0.0.1:{front_port}/api/inngest"
    server = prod_server(tmp_path, app_url).start()
    app = prod_app(tmp_path, free_port(), server.url, module=QUIET_APP).start()
    front = _Balancer(front_port, f"http://127.0.0.1:{app.port}")
    try:
        api = Api(server.url, SIGNING_KEY)
        wait_until(lambda: api.functions(), what="the app to sync")
        front.target = None  # the app is down; its load balancer answers 503
        [warning] = _server_log_lines(server, WARNING, f"the app at {app_url} answered the health check with HTTP 503")
        assert warning.split("HTTP 503", 1)[1].startswith(": upstream app is down for maintenance")
        assert "retry in 5 minutes" not in warning  # the first line only
        error = wait_until(lambda: _app_error(api), what="the app's error in /v1/apps")
        assert "503" in error and "upstream app is down for maintenance" in error
    finally:
        front.close()
        app.stop()
        server.stop()


def test_sigterm_finishes_the_call_in_flight_then_exits(tmp_path):
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}/api/inngest"
    server = prod_server(tmp_path, app_url).start()
    app = prod_app(tmp_path, app_port, server.url).start()
    try:
        api = Api(server.url, SIGNING_KEY)
        wait_until(lambda: api.functions(), what="app sync")
        event_id = api.send({"name": "prod/slow", "data": {"seconds": 3}}, key=EVENT_KEY).json()["ids"][0]
        wait_until(lambda: [e for e in app.ledger_entries() if e["kind"] == "slow-start"], what="the slow step to start")
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
        # It waited for the call: the step finished and its result was recorded before exit.
        assert [e["kind"] for e in app.ledger_entries() if e["kind"].startswith("slow")] == ["slow-start", "slow-end"]
        server.start()
        run = api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])
        assert run["status"] == "Completed" and run["output"] == "done"
        assert len([e for e in app.ledger_entries() if e["kind"] == "slow-start"]) == 1  # never ran again
    finally:
        app.stop()
        server.stop()


SENDERS = 4
EVENTS_PER_SENDER = 100


def test_two_replicas_share_the_work_and_survive_kill9_of_one(tmp_path, backend):
    if backend.name != "postgres":
        pytest.skip("replicas share a PostgreSQL database")
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}/api/inngest"
    a = prod_server(tmp_path, app_url, name="a").start()
    b = prod_server(tmp_path, app_url, name="b", postgres_uri=a.postgres_uri).start()
    app = prod_app(tmp_path, app_port, a.url).start()
    api_a, api_b = Api(a.url, SIGNING_KEY), Api(b.url, SIGNING_KEY)
    wait_until(lambda: api_a.functions() and api_b.functions(), what="both replicas to see the app")

    # Half the events go to the replica that dies.
    burst = Burst([b.url, a.url], "prod/steps", key=EVENT_KEY, senders=SENDERS, per_sender=EVENTS_PER_SENDER).start()
    acked = burst.acked
    wait_until(lambda: sum(1 for e in app.ledger_entries() if e["kind"] == "step") >= 60, timeout=120,
               what="steps to be under way")
    b.kill9()
    burst.join()
    assert acked

    wait_for_one_completed_run_each(api_a, acked)
    assert step_reruns(api_a, acked, app)[0] == 0  # no recorded step ran again

    # Cron ticks are leased like any job: each scheduled minute runs exactly once across replicas.
    b.start()
    wait_until(lambda: [e for e in app.ledger_entries() if e["kind"] == "tick"], timeout=90, interval=1.0,
               what="a cron tick")
    time.sleep(2)
    ticks = defaultdict(int)
    for e in app.ledger_entries():
        if e["kind"] == "tick":
            ticks[e["scheduled"]] += 1
    assert ticks and all(n == 1 for n in ticks.values()), ticks
    app.stop()
    a.stop()
    b.stop()


def _registration(url: str, count: int) -> dict:
    """An app's sync body with `count` functions, function i triggered by event race/<i>."""
    return {"appName": "racer", "url": url, "framework": "test", "sdk": "test:v0", "v": "0.1",
            "functions": [{"id": f"racer-f{i}", "name": f"f{i}", "triggers": [{"event": f"race/{i}"}],
                           "steps": {"step": {"id": "step", "name": "step", "runtime": {
                               "type": "http", "url": f"{url}?fnId=racer-f{i}&stepId=step"}}}}
                          for i in range(count)]}


def test_an_event_sent_to_a_replica_right_after_a_sync_on_another_starts_its_run(tmp_path, backend):
    # Replica b learns of a sync on replica a by a PostgreSQL notification, then reloads its
    # functions: an event b takes in before that reload lands must still find the new function
    # (it is committed and listed), not start nothing for good.
    if backend.name != "postgres":
        pytest.skip("replicas share a PostgreSQL database")
    nowhere = f"http://127.0.0.1:{free_port()}/api/inngest"  # runs may fail; that they start is the point
    a = prod_server(tmp_path, nowhere, name="a").start()
    b = prod_server(tmp_path, nowhere, name="b", postgres_uri=a.postgres_uri).start()
    try:
        register = httpx.Client(base_url=a.url, timeout=10, headers={"Authorization": f"Bearer {SIGNING_KEY}"})
        api_b = Api(b.url, SIGNING_KEY)
        for i in range(1, 6):
            b.proc.send_signal(signal.SIGSTOP)  # b takes in the sync's notification only after the event
            try:
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    sync = pool.submit(register.post, "/fn/register", json=_registration(nowhere, i))
                    try:  # b may have been stopped inside a transaction whose row lock the sync waits for
                        sync.result(timeout=3)
                    except concurrent.futures.TimeoutError:
                        b.proc.send_signal(signal.SIGCONT)
                    assert sync.result().status_code == 200
            finally:
                b.proc.send_signal(signal.SIGCONT)
            event_id = api_b.send({"name": f"race/{i - 1}"}, key=EVENT_KEY).json()["ids"][0]
            assert api_b.wait_for_runs(event_id)[0]["function_slug"] == f"racer-f{i - 1}"
    finally:
        a.stop()
        b.stop()
