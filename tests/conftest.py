"""Shared test harness: real lockgate servers and real SDK apps, as subprocesses over HTTP."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from lockgate.protocol.signing import sign_body
from tests import pgtools

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


# -- store backends -------------------------------------------------------------------
# Every test that asks for `backend` (all of tests/e2e, the store unit tests) runs once per
# backend. On PostgreSQL each LockgateProcess gets a fresh database unless given one.
# A module-scoped fixture that starts servers must take `backend` as an argument, or pytest
# keeps its first instance (on SQLite) for the PostgreSQL round too.


def pytest_addoption(parser) -> None:
    parser.addoption("--backends", default=os.environ.get("LOCKGATE_TEST_BACKENDS", "sqlite,postgres"),
                     help="comma-separated store backends to run backend tests on (sqlite, postgres)")


def pytest_generate_tests(metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        names = [b.strip() for b in metafunc.config.getoption("--backends").split(",") if b.strip()]
        metafunc.parametrize("backend", names, indirect=True, scope="module")


@dataclass
class Backend:
    name: str
    databases: list[str] = field(default_factory=list)
    servers: list["LockgateProcess"] = field(default_factory=list)

    def new_database(self, prefix: str = "lockgate_t_") -> str:
        uri = pgtools.create_database(prefix=prefix)
        self.databases.append(uri)
        return uri


CURRENT_BACKEND = Backend("sqlite")


@pytest.fixture(scope="module")
def backend(request):
    global CURRENT_BACKEND
    name = request.param
    if name == "postgres":
        reason = pgtools.unreachable_reason()
        if reason:
            if os.environ.get(pgtools.REQUIRE_ENV):
                pytest.fail(f"{reason}; {pgtools.REQUIRE_ENV} is set, so PostgreSQL tests must run")
            pytest.skip(reason)
    chosen = Backend(name)
    CURRENT_BACKEND = chosen
    yield chosen
    CURRENT_BACKEND = Backend("sqlite")
    # A server must not outlive its backend round: were it reused, the next round would
    # silently test the old backend. Stopping it makes such a fixture fail loudly instead.
    for server in chosen.servers:
        server.stop()
    for uri in chosen.databases:
        try:
            pgtools.drop_database(uri)
        except Exception as exc:  # a leftover database is harmless; say so and go on
            print(f"could not drop test database {uri}: {exc}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # keep polling; report the last failure
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}" + (f": {last_exc!r}" if last_exc else ""))


@dataclass
class LockgateProcess:
    """A `lockgate dev` subprocess. `url` is its API origin."""

    args: list[str]
    data_dir: Path | None
    port: int = 0
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    postgres_uri: str | None = None  # on the postgres backend: this process's database (kept across restarts)
    cwd: Path = ROOT  # `python -m lockgate` runs the lockgate package found here (an older release, say)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "LockgateProcess":
        cmd = [PYTHON, "-m", "lockgate", *self.args, "--port", str(self.port), "--host", "127.0.0.1"]
        if self.data_dir is not None:
            cmd += ["--data-dir", str(self.data_dir)]
        if self.postgres_uri is None and CURRENT_BACKEND.name == "postgres":
            self.postgres_uri = CURRENT_BACKEND.new_database()
        if self.postgres_uri is not None:
            cmd += ["--postgres-uri", self.postgres_uri]
        CURRENT_BACKEND.servers.append(self)
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        env = {**os.environ, **self.env}
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.PIPE, cwd=self.cwd, env=env)
        line = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            if self.log_path:
                self._log.write(line)
                self._log.flush()  # a test may read the log before any later line arrives
            match = re.search(rb"listening on http://[^:]+:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                break
        else:
            raise AssertionError("lockgate did not start in time")
        if not match:
            rest = self.proc.stderr.read().decode(errors="replace")
            raise AssertionError(f"lockgate failed to start: {line.decode(errors='replace')}{rest}")
        # Keep draining stderr so the server never blocks on a full pipe.
        import threading

        def drain(stream, sink):
            for chunk in iter(lambda: stream.readline(), b""):
                if sink is not subprocess.DEVNULL:
                    sink.write(chunk)
                    sink.flush()

        threading.Thread(target=drain, args=(self.proc.stderr, self._log), daemon=True).start()
        wait_until(lambda: httpx.get(self.url + "/health", timeout=1).status_code == 200, what="lockgate /health")
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def query_store(server: "LockgateProcess", sql: str) -> list[tuple]:
    """Rows straight from a server's store (its SQLite file or PostgreSQL database)."""
    if server.postgres_uri:
        import psycopg

        with psycopg.connect(server.postgres_uri) as conn:
            return [tuple(r) for r in conn.execute(sql)]
    import sqlite3

    assert server.data_dir is not None, "an in-memory server's store cannot be read from outside"
    conn = sqlite3.connect(server.data_dir / "lockgate.db")
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


@dataclass
class AppProcess:
    """An SDK app (FastAPI + official inngest SDK) under uvicorn, in its own process."""

    module: str
    port: int
    server_url: str
    ledger: Path
    proc: subprocess.Popen | None = None
    extra_env: dict[str, str | None] = field(default_factory=dict)  # None unsets an inherited variable
    output: Path | None = None  # where the app's stdout and stderr go (default: the test's own)
    log_level: str = "warning"  # uvicorn's; "info" adds its access log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/inngest"

    def logged(self) -> str:
        return self.output.read_text() if self.output and self.output.exists() else ""

    def start(self) -> "AppProcess":
        env = {
            **os.environ,
            "INNGEST_DEV": self.server_url,
            "LEDGER_PATH": str(self.ledger),
            "PYTHONPATH": str(ROOT),
            **self.extra_env,
        }
        env = {k: v for k, v in env.items() if v is not None}  # None unsets a variable
        sink = open(self.output, "ab") if self.output else None
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "uvicorn", self.module + ":app", "--port", str(self.port), "--host", "127.0.0.1",
             "--log-level", self.log_level],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT if sink else None,
        )
        if sink:
            sink.close()  # the child holds its own copy
        # Any answer will do. A production-mode SDK refuses (and logs) unsigned GETs: sign ours.
        key = env.get("INNGEST_SIGNING_KEY") if env.get("INNGEST_DEV") == "0" else None
        headers = {"X-Inngest-Signature": sign_body(b"", key)} if key else {}
        wait_until(lambda: httpx.get(self.url, headers=headers, timeout=1).status_code < 500, what=f"app {self.module}")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def ledger_entries(self) -> list[dict]:
        if not self.ledger.exists():
            return []
        return [json.loads(line) for line in self.ledger.read_text().splitlines() if line.strip()]

    def effects(self, kind: str, **match: Any) -> list[dict]:
        """Ledger entries of one kind whose fields equal `match`."""
        return [e for e in self.ledger_entries() if e["kind"] == kind and all(e.get(k) == v for k, v in match.items())]


JS_APP_DIR = ROOT / "tests" / "e2e" / "js_app"


def ensure_node_sdk(sdk: str) -> Path:
    """The node_modules of one JS SDK install (js_app/<sdk>/), `npm ci`-ing it when missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed: the JavaScript SDK tests need Node.js 18+")
    folder = JS_APP_DIR / sdk
    modules = folder / "node_modules"
    if not (modules / "inngest" / "package.json").exists():
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=folder, capture_output=True, text=True,
                              timeout=600)
        if done.returncode != 0:
            raise AssertionError(f"npm ci failed in {folder}:\n{done.stdout}\n{done.stderr}")
    return modules


@dataclass
class NodeAppProcess(AppProcess):
    """tests/e2e/js_app/app.cjs (or `script`) under node, served by the official `inngest` JS SDK installed in
    js_app/<module>/."""

    script = "app.cjs"  # not a dataclass field: subclasses name another app file

    def start(self) -> "NodeAppProcess":
        env = {
            **os.environ,
            "NODE_PATH": str(ensure_node_sdk(self.module)),
            "PORT": str(self.port),
            # Dev mode pointed at lockgate: the SDK syncs, sends events and skips signatures.
            "INNGEST_DEV": self.server_url,
            "INNGEST_BASE_URL": self.server_url,
            "LEDGER_PATH": str(self.ledger),
            **self.extra_env,
        }
        env = {k: v for k, v in env.items() if v is not None}  # None unsets a variable
        sink = open(self.output, "ab") if self.output else None
        self.proc = subprocess.Popen(["node", str(JS_APP_DIR / self.script)], cwd=JS_APP_DIR, env=env,
                                     stdout=sink, stderr=subprocess.STDOUT if sink else None)
        if sink:
            sink.close()  # the child holds its own copy
        # Any answer will do. A cloud-mode SDK refuses an unsigned GET with 401 and logs "Signature
        # validation failed", which would read as a real error in the app's log: sign ours with the
        # app's own key (a dev-mode SDK ignores the signature).
        key = env.get("INNGEST_SIGNING_KEY")
        headers = {"X-Inngest-Signature": sign_body(b"", key)} if key else {}
        wait_until(lambda: httpx.get(self.url, headers=headers, timeout=1).status_code < 500,
                   what=f"js app ({self.module})")
        return self


class Api:
    """Small client for lockgate's REST API, used by tests to observe runs."""

    def __init__(self, base: str, signing_key: str | None = None) -> None:
        self.base = base
        self.cloud = signing_key is not None  # talking to `lockgate start`
        # Production servers guard their REST API with the signing key.
        headers = {"Authorization": f"Bearer {signing_key}"} if signing_key else {}
        self.http = httpx.Client(base_url=base, timeout=10, headers=headers)

    def send(self, events: Any, key: str = "test-key", headers: dict | None = None) -> httpx.Response:
        return self.http.post(f"/e/{key}", json=events, headers=headers or {})

    def event_runs(self, event_id: str) -> list[dict]:
        return self.http.get(f"/v1/events/{event_id}/runs").json()["data"]

    def run(self, run_id: str) -> dict:
        return self.http.get(f"/v1/runs/{run_id}").json()["data"]

    def wait_for_runs(self, event_id: str, count: int = 1, timeout: float = 30.0) -> list[dict]:
        try:
            return wait_until(lambda: (r := self.event_runs(event_id)) and len(r) >= count and r, timeout=timeout,
                              what=f"{count} run(s) of event {event_id}")
        except AssertionError as exc:  # say why the server thinks the event started nothing
            event = self.http.get(f"/v1/events/{event_id}").json().get("data") or {}
            raise AssertionError(f"{exc}; the event's started_nothing: {event.get('started_nothing')!r}") from None

    def wait_for_end(self, run_id: str, timeout: float = 60.0) -> dict:
        return wait_until(
            lambda: (r := self.run(run_id))["status"] in ("Completed", "Failed", "Cancelled") and r,
            timeout=timeout,
            what=f"run {run_id} to end",
        )

    def functions(self) -> list[dict]:
        apps = self.http.get("/v1/apps").json()["data"]
        return [f for a in apps for f in a["functions"]]


class Burst:
    """Threads sending events (`name`, data {"n": …}) to `urls` in turn, each `per_sender` of them
    or until stop(); `acked` holds the ids of every event a server acknowledged. A send that got no
    answer was never acknowledged, and one refused with an error status is counted in `refused`."""

    def __init__(self, urls: list[str], name: str, *, key: str = "key", senders: int = 4,
                 per_sender: int | None = None, timeout: float = 5.0, pause: float = 0.0) -> None:
        self.acked: list[str] = []
        self.refused = 0
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._send = (urls, name, key, per_sender, timeout, pause)
        self._threads = [threading.Thread(target=self._sender, args=(w,), daemon=True) for w in range(senders)]

    def start(self) -> "Burst":
        for t in self._threads:
            t.start()
        return self

    def _sender(self, worker: int) -> None:
        urls, name, key, per_sender, timeout, pause = self._send
        with httpx.Client(timeout=timeout) as http:
            i = 0
            while not self._stop.is_set() and (per_sender is None or i < per_sender):
                i += 1
                try:
                    r = http.post(f"{urls[worker % len(urls)]}/e/{key}", json={"name": name, "data": {"n": worker * 10_000 + i}})
                except httpx.HTTPError:
                    continue  # that server is down: the event was never acknowledged
                with self._lock:
                    if r.status_code == 200:
                        self.acked.extend(r.json()["ids"])
                    else:
                        self.refused += 1  # an honest error is fine; a lost acknowledged event is not
                time.sleep(pause)

    def join(self) -> None:
        for t in self._threads:
            t.join()

    def stop(self) -> None:
        self._stop.set()
        self.join()


def wait_for_one_completed_run_each(api: "Api", event_ids: list[str], timeout: float = 240.0) -> None:
    def all_done() -> bool:
        return all((runs := api.event_runs(e)) and len(runs) == 1 and runs[0]["status"] == "Completed"
                   for e in event_ids)

    wait_until(all_done, timeout=timeout, interval=1.0, what=f"all {len(event_ids)} acknowledged events to complete")


def step_reruns(api: "Api", event_ids: list[str], app: "AppProcess") -> tuple[int, int]:
    """Of the runs of `event_ids`, whose output lists each step's {"step", "token"} and whose app's
    ledger has a "step" entry per execution: (recorded steps executed again after their result was
    recorded, executions beyond the first in all). Each recorded token must be one the app made."""
    executions: dict[tuple[str, str], list[str]] = {}
    for entry in app.ledger_entries():
        if entry["kind"] == "step":
            executions.setdefault((entry["run_id"], entry["step"]), []).append(entry["token"])
    after_record = again = 0
    for event_id in event_ids:
        run = api.event_runs(event_id)[0]
        for recorded in run["output"]["steps"]:
            tokens = executions.get((run["run_id"], recorded["step"]), [])
            assert recorded["token"] in tokens, (run["run_id"], recorded)
            again += len(tokens) - 1
            after_record += tokens[-1] != recorded["token"]
    return after_record, again


# Cloud mode (`lockgate start`): the server signs every request with this key and verifies the
# apps' signed answers; apps hold the same key (INNGEST_DEV=0) and send events with EVENT_KEY.
SIGNING_KEY = "signkey-test-" + "5ec0de" * 8
EVENT_KEY = "test-key"


def cloud_app_env(signing_key: str = SIGNING_KEY, fallback: str | None = None) -> dict[str, str]:
    env = {"INNGEST_DEV": "0", "INNGEST_SIGNING_KEY": signing_key, "INNGEST_EVENT_KEY": EVENT_KEY}
    if fallback:
        env["INNGEST_SIGNING_KEY_FALLBACK"] = fallback
    return env


def start_stack(tmp_path: Path, module: str, *, server_args: list[str] | None = None, persist: bool = False,
                app_env: dict | None = None, app_cls: type[AppProcess] = AppProcess,
                mode: str = "dev") -> tuple[LockgateProcess, AppProcess, Api]:
    """A server and one app synced to it; mode "cloud" runs `lockgate start` and a signed app."""
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}/api/inngest"
    common = ["--poll-interval", "0.5", "--retry-interval", "0.2", "-u", app_url, *(server_args or [])]
    if mode == "cloud":
        args = ["start", "--signing-key", SIGNING_KEY, "--event-key", EVENT_KEY, *common]
        app_env = {**cloud_app_env(), **(app_env or {})}  # INNGEST_BASE_URL is set once the port is known
        persist = True  # `lockgate start` always keeps its data
    else:
        args = ["dev", "--no-discovery", *common] + ([] if persist else ["--in-memory"])
    server = LockgateProcess(args=args, data_dir=tmp_path / "data" if persist else None,
                             log_path=tmp_path / "lockgate.log").start()
    if mode == "cloud":
        app_env["INNGEST_BASE_URL"] = server.url
    app = app_cls(module=module, port=app_port, server_url=server.url, ledger=tmp_path / "ledger.jsonl",
                  extra_env=app_env or {}).start()
    api = Api(server.url, SIGNING_KEY if mode == "cloud" else None)
    wait_until(lambda: len(api.functions()) > 0, what="app sync")
    return server, app, api


def stack_fixture(module: str, *, modes: tuple[str, ...] = ("dev",), **options: Any):
    """A module-scoped `stack` fixture: one server and one app shared by a test module, per mode."""

    @pytest.fixture(scope="module", params=modes)
    def stack(request, tmp_path_factory, backend):  # backend: one stack per store backend
        tmp = tmp_path_factory.mktemp(f"{module.rsplit('.', 1)[-1]}-{request.param}")
        server, app, api = start_stack(tmp, module, mode=request.param, **options)
        yield server, app, api
        app.stop()
        server.stop()

    return stack
