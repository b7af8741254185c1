"""Start-up that never surprises: the order of the "listening" line, one clear line (exit 2)
for configuration and connection problems, Inngest CLI config files, the log formats."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid

import httpx
from psycopg.conninfo import conninfo_to_dict

from tests import pgtools
from tests.conftest import CURRENT_BACKEND, ROOT, Api, LockgateProcess, free_port, wait_until


def lockgate(*args: str, cwd=ROOT, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lockgate", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_an_event_sent_right_after_listening_runs_on_the_example_app(tmp_path):
    server = LockgateProcess(args=["dev", "--example", "--in-memory", "--no-discovery"], data_dir=None,
                             log_path=tmp_path / "lockgate.log").start()
    try:
        api = Api(server.url)
        event_id = api.send({"name": "demo/hello", "data": {"name": "Ada"}}).json()["ids"][0]
        run = api.wait_for_end(api.wait_for_runs(event_id, timeout=5)[0]["run_id"])
        assert (run["status"], run["output"]) == ("Completed", "hello Ada")
        lines = (tmp_path / "lockgate.log").read_text().splitlines()
        synced = next(i for i, line in enumerate(lines) if "app example synced" in line)
        listening = next(i for i, line in enumerate(lines) if "listening on" in line)
        assert synced < listening
    finally:
        server.stop()


def _missing_db_uri() -> str:
    name = "lockgate_missing_" + uuid.uuid4().hex[:8]
    info = conninfo_to_dict(pgtools.ADMIN_URI)
    return f"postgresql://{info.get('user', 'postgres')}@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{name}"


def test_a_missing_postgres_database_is_one_line_with_the_fix_and_create_db_makes_it(tmp_path):
    if CURRENT_BACKEND.name != "postgres":
        return  # PostgreSQL start-up only; the sqlite round checks nothing here
    uri = _missing_db_uri()
    database = uri.rsplit("/", 1)[1]
    proc = lockgate("dev", "--postgres-uri", uri, "--port", "0", "--no-discovery")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    [line] = [line for line in proc.stderr.splitlines() if line.strip()]
    assert f'PostgreSQL database "{database}" does not exist' in line
    assert f"createdb" in line and "--create-db" in line
    server = LockgateProcess(args=["dev", "--create-db", "--no-discovery"], data_dir=None, postgres_uri=uri,
                             log_path=tmp_path / "lockgate.log")
    CURRENT_BACKEND.databases.append(uri)  # dropped with the backend's other databases
    server.start()
    try:
        assert httpx.get(server.url + "/v1/runs").status_code == 200
        assert f'created PostgreSQL database "{database}"' in (tmp_path / "lockgate.log").read_text()
    finally:
        server.stop()


def test_unreachable_postgres_and_bad_config_values_exit_2_with_one_line(tmp_path):
    refused = lockgate("dev", "--postgres-uri", f"postgresql://postgres@127.0.0.1:{free_port()}/x", "--port", "0")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "cannot connect to PostgreSQL at 127.0.0.1" in refused.stderr and "--postgres-uri" in refused.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"port": "eighty"}')
    proc = lockgate("dev", "--config", str(bad))
    assert proc.returncode == 2 and proc.stderr.strip() == "lockgate: setting 'port' cannot be 'eighty'"
    broken = tmp_path / "broken.yaml"
    broken.write_text("port: [1,\n")
    proc = lockgate("dev", "--config", str(broken))
    assert proc.returncode == 2 and "is not valid YAML" in proc.stderr and "Traceback" not in proc.stderr
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        proc = lockgate("dev", "--data-dir", str(locked / "data"), "--port", "0")
        assert proc.returncode == 2 and "--data-dir" in proc.stderr and "Traceback" not in proc.stderr


def test_inngest_cli_config_files_are_found_and_unused_keys_warned(tmp_path):
    (tmp_path / "inngest.yaml").write_text(
        "sdk-url:\n  - http://127.0.0.1:3000/api/inngest\nno-discovery: true\nno-poll: true\nport: 8300\n"
        "poll-interval: 9\nqueue-workers: 12\nsqlite-dir: ./state\npostgres-max-open-conns: 4\ntick: 150\n"
        "urls: [x]\n")
    proc = lockgate("config", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()}
    expected = {"sdk_urls": "['http://127.0.0.1:3000/api/inngest']", "discovery": "False", "poll": "False",
                "port": "8300", "poll_interval": "9.0", "workers": "12", "data_dir": "'./state'",
                "postgres_pool_size": "4"}
    for name, value in expected.items():
        assert value in rows[name] and "(file inngest.yaml)" in rows[name], rows[name]
    assert "setting 'tick' in file inngest.yaml is an Inngest CLI setting lockgate does not use" in proc.stderr
    assert "unknown setting 'urls' in file inngest.yaml: ignored (did you mean 'sdk-urls'?)" in proc.stderr
    # INNGEST_CONFIG names a file anywhere; database.pool_size (the Inngest dev server's shape) sets the pool.
    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps({"database": {"url": "postgresql://u@h/db", "pool_size": 3}}))
    proc = lockgate("config", cwd=ROOT, env={"INNGEST_CONFIG": str(other)})
    pool = next(line for line in proc.stdout.splitlines() if line.startswith("postgres_pool_size"))
    assert " 3 " in pool and f"file {other}" in pool


def test_start_logs_json_lines_and_quiet_keeps_only_warnings(tmp_path):
    key = "signkey-test-" + "ab" * 16
    server = LockgateProcess(args=["start", "--signing-key", key, "--event-key", "k1"], data_dir=tmp_path / "data", log_path=tmp_path / "start.log").start()
    try:
        api = Api(server.url, signing_key=key)
        event_id = api.send({"name": "nobody/listens"}, key="k1").json()["ids"][0]
        missing_key = api.http.post("/e/", json={"name": "x"})
        assert missing_key.status_code == 401 and "--event-key" in missing_key.json()["error"]

        def started_nothing():
            for line in (tmp_path / "start.log").read_text().splitlines():
                record = json.loads(line)
                if record.get("event_id") == event_id:
                    return record
        record = wait_until(started_nothing, timeout=10, what="the JSON line about the event")
        assert record["level"] == "info" and record["logger"] == "lockgate.events"
        assert record["msg"] == ("event nobody/listens started nothing: no app is synced yet: start your app"
                                 " pointed at lockgate (INNGEST_DEV=<this server's URL>) and name it with"
                                 " `lockgate dev -u <app URL>`")
        assert record["time"].endswith("Z")
        records = [json.loads(line) for line in (tmp_path / "start.log").read_text().splitlines()]
        assert any(r["level"] == "warning" and "--signing-key on the command line" in r["msg"] for r in records)
    finally:
        server.stop()
    # A port held bound but not listening refuses connections, and no other process can take it
    # meanwhile (a port merely found free could be picked up by a server of another test).
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        dead_app = f"http://127.0.0.1:{held.getsockname()[1]}/api/inngest"
        quiet = LockgateProcess(args=["dev", "--quiet", "--in-memory", "--no-discovery", "-u", dead_app],
                                data_dir=None, log_path=tmp_path / "quiet.log").start()
        try:
            Api(quiet.url).send({"name": "nobody/listens"})  # an info line, left out
            wait_until(lambda: "app unreachable" in (tmp_path / "quiet.log").read_text(), timeout=30,
                       what="the warning about the app")
        finally:
            quiet.stop()
    lines = [line for line in (tmp_path / "quiet.log").read_text().splitlines() if line.strip()]
    # The first sync round runs beside start-up, so its warning may come before "listening".
    listening = [line for line in lines if "listening on" in line]
    others = [line for line in lines if "listening on" not in line]
    assert len(listening) == 1
    assert [line for line in others if " WARN " not in line] == []
    assert any(dead_app in line for line in others)
