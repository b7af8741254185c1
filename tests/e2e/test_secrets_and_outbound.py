"""`lockgate start` keeps secrets secret and its outbound calls inside the policy."""

from __future__ import annotations

import http.server
import os
import stat
import subprocess
import sys
import threading

import httpx
import pytest

from tests.conftest import ROOT, LockgateProcess, wait_until

SIGNING_KEY = "signkey-test-" + "a1b2c3" * 8
EVENT_KEY = "outbound-event-key"
QSTASH_TOKEN = "outbound-test-token"


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        length = int(self.headers.get("content-length") or 0)
        _Receiver.received.append(self.rfile.read(length))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def receiver():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def prod(tmp_path_factory, backend):
    folder = tmp_path_factory.mktemp("secrets")
    (folder / "signing.key").write_text(SIGNING_KEY + "\n")
    (folder / "event.keys").write_text(EVENT_KEY + "\nsecond-key\n")
    server = LockgateProcess(
        args=["start", "--signing-key-file", str(folder / "signing.key"), "--event-key-file", str(folder / "event.keys")],
        data_dir=folder / "data", log_path=folder / "lockgate.log",
        env={"QSTASH_TOKEN": QSTASH_TOKEN, "LOCKGATE_QSTASH_BACKOFF_SCALE": "0.01"},
    ).start()
    yield server
    server.stop()


def _publish(server: LockgateProcess, destination: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/publish/{destination}", content=b"payload", timeout=10,
                      headers={"Authorization": f"Bearer {QSTASH_TOKEN}", "Upstash-Retries": "0"})


def _delivery_error(server: LockgateProcess, message_id: str) -> str:
    def logged() -> str | None:
        events = httpx.get(f"{server.url}/v2/events", params={"messageId": message_id}, timeout=10,
                           headers={"Authorization": f"Bearer {QSTASH_TOKEN}"}).json()["events"]
        errors = [e.get("error") for e in events if e.get("error")]
        return errors[0] if errors else None

    return wait_until(logged, timeout=30, what=f"delivery of {message_id} to fail")


def test_keys_from_files_work_and_nothing_warns(prod):
    assert httpx.post(f"{prod.url}/e/{EVENT_KEY}", json={"name": "a/b"}).status_code == 200
    assert httpx.post(f"{prod.url}/e/second-key", json={"name": "a/b"}).status_code == 200
    assert httpx.post(f"{prod.url}/e/other", json={"name": "a/b"}).status_code == 401
    authed = httpx.get(f"{prod.url}/v1/runs", headers={"Authorization": f"Bearer {SIGNING_KEY}"})
    assert authed.status_code == 200
    # The one warning is the refused event itself; the keys read from files raise none.
    warnings = [line for line in prod.log_path.read_text().splitlines() if '"level":"warning"' in line]
    assert len(warnings) == 1 and "unknown event key" in warnings[0], warnings


def test_a_key_on_the_command_line_draws_a_warning(tmp_path):
    # The event key is malformed, so start-up stops right after the warnings.
    done = subprocess.run([sys.executable, "-m", "lockgate", "start", "--port", "0", "--signing-key", SIGNING_KEY,
                           "--event-key", "not a valid key!", "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode != 0
    assert "--signing-key on the command line is visible" in done.stderr
    assert "--signing-key-file" in done.stderr and "--event-key on the command line" in done.stderr


def test_root_and_health_name_no_infrastructure_without_the_key(prod, backend):
    for path in ("/", "/health"):
        text = httpx.get(prod.url + path).text
        assert "127.0.0.1" not in text and "5432" not in text and "SQLite" not in text and "PostgreSQL" not in text
    # `/` is the dashboard (a login page in start); the key holder reads the store from /v1/server.
    authed = httpx.get(prod.url + "/v1/server", headers={"Authorization": f"Bearer {SIGNING_KEY}"}).text
    assert ("PostgreSQL" if backend.name == "postgres" else "SQLite") in authed


def test_data_files_are_private(prod, backend):
    if backend.name != "sqlite":
        pytest.skip("the PostgreSQL backend keeps no data files")
    folder = prod.data_dir
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    files = [f for f in os.listdir(folder) if f.startswith("lockgate.db")]
    assert "lockgate.db" in files
    for name in files:
        assert stat.S_IMODE(os.stat(folder / name).st_mode) == 0o600, name


@pytest.mark.parametrize("destination, reason", [
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://0.0.0.0:9/x", "not a destination"),
    ("OWN/health", "own listener"),
])
def test_forbidden_address_literals_are_refused_at_publish_with_the_reason(prod, destination, reason):
    destination = destination.replace("OWN", f"http://127.0.0.1:{prod.port}", 1)
    refused = _publish(prod, destination)
    assert refused.status_code == 400, refused.text
    assert "outbound policy" in refused.json()["error"] and reason in refused.json()["error"]
    callback = httpx.post(f"{prod.url}/v2/publish/http://127.0.0.1:9/x", content=b"{}",
                          headers={"Authorization": f"Bearer {QSTASH_TOKEN}", "Upstash-Callback": destination})
    assert callback.status_code == 400 and "callback url" in callback.json()["error"], callback.text


def test_a_name_resolving_to_a_forbidden_address_is_refused_at_delivery(prod):
    accepted = _publish(prod, f"http://localhost:{prod.port}/health")  # known only once resolved
    assert accepted.status_code in (200, 201), accepted.text
    error = _delivery_error(prod, accepted.json()["messageId"])
    assert "outbound policy" in error and "own listener" in error


def test_loopback_and_private_apps_stay_allowed(prod, receiver):
    before = len(_Receiver.received)
    accepted = _publish(prod, receiver + "/hook")
    assert accepted.status_code in (200, 201), accepted.text
    wait_until(lambda: len(_Receiver.received) > before, what="delivery to an allowed loopback receiver")


@pytest.mark.parametrize("url", ["http://user:secret@127.0.0.1:9/x", "http://token@127.0.0.1:9/x"])
def test_urls_with_credentials_are_refused_at_the_edge(prod, url):
    refused = _publish(prod, url)
    assert refused.status_code == 400 and "credentials" in refused.json()["error"]
    register = httpx.post(f"{prod.url}/fn/register", headers={"Authorization": f"Bearer {SIGNING_KEY}"},
                          json={"url": url, "appName": "creds", "functions": []})
    assert register.status_code == 400 and "credentials" in register.json()["error"]
