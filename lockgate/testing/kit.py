"""The real lockgate server inside a test session: start it, serve an app, send events, await runs.

Standard library only (plus uvicorn, a lockgate dependency): the pytest plugin that imports this
is loaded in every pytest session of a project where lockgate is installed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

ENDED = ("Completed", "Failed", "Cancelled")
LISTENING = re.compile(rb"listening on http://[^:]+:(\d+)")


class LockgateError(AssertionError):
    """A kit helper gave up; the message says what it waited for and what it saw."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Run:
    """A run as a test sees it: status, output or error, and its steps in order."""

    run_id: str
    status: str
    output: Any
    error: Any
    steps: list[dict[str, Any]]
    data: dict[str, Any]  # everything GET /v1/runs/{id} returned


class LockgateClient:
    """Talks to one lockgate server's event API and REST API."""

    def __init__(self, url: str, *, event_key: str = "test", signing_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.event_key = event_key
        self.headers = {"Authorization": f"Bearer {signing_key}"} if signing_key else {}

    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 10.0) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **self.headers})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def _ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.request(method, path, body)
        if status >= 300:
            raise LockgateError(f"{method} {path} answered HTTP {status}: {answer}")
        return answer

    def send(self, events: dict | list[dict]) -> list[str]:
        """Send one event or a list; returns their ids (what wait_for_run takes)."""
        return self._ok("POST", f"/e/{self.event_key}", events)["ids"]

    def runs_of(self, event_id: str) -> list[dict]:
        return self._ok("GET", f"/v1/events/{event_id}/runs")["data"]

    def run(self, run_id: str) -> Run:
        data = self._ok("GET", f"/v1/runs/{run_id}")["data"]
        steps = self._ok("GET", f"/v1/runs/{run_id}/steps")["data"]
        return Run(run_id=data["run_id"], status=data["status"], output=data.get("output"), error=data.get("error"),
                   steps=steps, data=data)

    def fast_forward(self, run_id: str) -> list[dict]:
        """Fire the run's pending sleeps and wait timeouts now (`lockgate dev` only); returns them."""
        return self._ok("POST", f"/v1/runs/{run_id}/fast-forward")["data"]["advanced"]

    def wait_for_run(self, id: str, *, status: str | None = None, timeout: float = 10.0,
                     fast_forward: bool = False, poll: float = 0.02) -> Run:
        """The run `id` (a run id, or the id of the event that started it) once it has ended.

        status: fail at once if it ends otherwise. fast_forward: skip its sleeps and wait timeouts
        as soon as they are scheduled, so a day-long sleep takes milliseconds.
        """
        deadline = time.monotonic() + timeout
        run_id: str | None = None
        seen = "nothing yet"
        while time.monotonic() < deadline:
            if run_id is None:
                code, _ = self.request("GET", f"/v1/runs/{id}")
                if code == 200:
                    run_id = id
                else:
                    runs = self.runs_of(id)
                    if len(runs) > 1:
                        raise LockgateError(f"event {id} started {len(runs)} runs: pass one of their run ids")
                    run_id = runs[0]["run_id"] if runs else None
            if run_id is not None:
                run = self.run(run_id)
                seen = f"status {run.status}"
                if run.status in ENDED:
                    if status is not None and run.status != status:
                        raise LockgateError(f"run {run_id} ended {run.status}, not {status}: "
                                            f"error={run.error!r} output={run.output!r}")
                    return run
                if fast_forward:
                    self.fast_forward(run_id)
            time.sleep(poll)
        raise LockgateError(f"no run of {id} ended within {timeout}s ({seen}); a sleep or wait? "
                            "pass fast_forward=True, or a longer timeout")

    def sync(self, app_url: str, timeout: float = 15.0) -> dict:
        """Ask the app at app_url to register with this server; returns the synced app."""
        req = urllib.request.Request(app_url, data=b"", method="PUT", headers={"X-Inngest-Server-Kind": "dev"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                answer = resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            raise LockgateError(f"the app at {app_url} refused the sync (HTTP {exc.code}): "
                                f"{exc.read().decode(errors='replace')[:500]}") from None
        except OSError as exc:
            raise LockgateError(f"could not reach the app at {app_url}: {exc}") from None
        apps = [a for a in self._ok("GET", "/v1/apps")["data"] if a["url"] == app_url]
        if not apps or apps[0]["error"] or not apps[0]["functions"]:
            raise LockgateError(f"the app at {app_url} did not register its functions: "
                                f"{apps[0]['error'] if apps else answer[:500]}")
        return apps[0]


@dataclass
class LockgateServer:
    """`lockgate dev --in-memory` on a free port, in its own process (on `postgres_uri`, if given)."""

    retry_interval: float | None = 0.5  # seconds between retries, instead of the production backoff
    postgres_uri: str | None = None  # a database to use instead of in-memory SQLite; the kit leaves it as is
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    url: str = ""
    log: list[str] = field(default_factory=list)

    def start(self, timeout: float = 30.0) -> "LockgateServer":
        args = [sys.executable, "-m", "lockgate", "dev", "--in-memory", "--no-discovery", "--no-poll",
                "--host", "127.0.0.1", "--port", "0", *self.extra_args]
        if self.retry_interval is not None:
            args += ["--retry-interval", str(self.retry_interval)]
        if self.postgres_uri:
            args += ["--postgres-uri", self.postgres_uri]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line.decode(errors="replace"))
            match = LISTENING.search(line)
            if match:
                self.url = f"http://127.0.0.1:{int(match.group(1))}"
                # keep reading the log so the server never blocks on a full pipe
                threading.Thread(target=self._drain, daemon=True).start()
                self._wait_healthy(deadline)
                return self
        self.stop()
        raise LockgateError("lockgate dev did not start:\n" + "".join(self.log[-20:]))

    def _wait_healthy(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.01)
        self.stop()
        raise LockgateError("lockgate dev listens but /health never answered:\n" + "".join(self.log[-20:]))

    def _drain(self) -> None:
        for line in iter(self.proc.stderr.readline, b""):
            self.log.append(line.decode(errors="replace"))
            del self.log[:-200]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class ServedApp:
    """An ASGI app (FastAPI, Starlette...) under uvicorn in a background thread, on a free port."""

    def __init__(self, app: Any, path: str = "/api/inngest") -> None:
        import uvicorn  # a lockgate dependency; imported here to keep plugin start-up light

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{path}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="auto")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="lockgate-served-app", daemon=True)

    def start(self, timeout: float = 15.0) -> "ServedApp":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise LockgateError(f"the app did not start serving on port {self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def point_sdk_at(url: str) -> dict[str, str | None]:
    """Point the official SDKs at url in dev mode (INNGEST_DEV is both switch and address); returns
    what to restore."""
    previous = {"INNGEST_DEV": os.environ.get("INNGEST_DEV")}
    os.environ["INNGEST_DEV"] = url
    return previous


def restore_env(previous: dict[str, str | None]) -> None:
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
