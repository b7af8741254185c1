"""The command line and app sync: port clashes, re-syncs, discovery, settings precedence."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from lockgate.engine.sync import DISCOVERY_PORTS
from tests.conftest import ROOT, Api, AppProcess, LockgateProcess, wait_until


def test_taken_port_names_the_holder_and_how_to_pick_another():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "lockgate", "dev", "--port", str(port), "--in-memory", "--no-discovery"],
            capture_output=True, text=True, timeout=30, cwd=ROOT,
        )
    assert proc.returncode == 2
    assert f"port {port}" in proc.stderr and "already in use" in proc.stderr
    assert f"pid {os.getpid()}" in proc.stderr  # this test process holds it
    assert "--port 0" in proc.stderr


def _fn(slug: str) -> dict:
    url = f"http://127.0.0.1:9/api/inngest?fnId={slug}&stepId=step"
    return {"id": slug, "name": slug, "triggers": [{"event": f"x/{slug}"}],
            "steps": {"step": {"id": "step", "name": "step", "runtime": {"type": "http", "url": url}}}}


def test_resync_replaces_functions_and_identical_sync_is_not_modified(tmp_path):
    server = LockgateProcess(args=["dev", "--no-discovery", "--in-memory"], data_dir=None).start()
    try:
        api = Api(server.url)
        body = {"appname": "shop", "deploy_type": "ping", "url": "http://127.0.0.1:9/api/inngest",
                "functions": [_fn("shop-a"), _fn("shop-b")]}
        first = api.http.post("/fn/register", json=body).json()
        assert first["ok"] and first["modified"] is True
        again = api.http.post("/fn/register", json=body).json()
        assert again["modified"] is False
        assert sorted(f["slug"] for f in api.functions()) == ["shop-a", "shop-b"]
        body["functions"] = [_fn("shop-a")]
        assert api.http.post("/fn/register", json=body).json()["modified"] is True
        assert [f["slug"] for f in api.functions()] == ["shop-a"]
        # Events for a removed function start nothing.
        event_id = api.send({"name": "x/shop-b"}).json()["ids"][0]
        assert api.event_runs(event_id) == []
    finally:
        server.stop()


def test_state_survives_a_clean_restart(tmp_path):
    server = LockgateProcess(args=["dev", "--no-discovery"], data_dir=tmp_path / "data").start()
    api = Api(server.url)
    body = {"appName": "keep", "url": "http://127.0.0.1:9/api/inngest", "functions": [_fn("keep-a")]}
    api.http.post("/fn/register", json=body)
    event_id = api.send({"name": "x/keep-a", "data": {"v": 1}}).json()["ids"][0]
    server.stop()
    server.start()
    try:
        assert api.http.get(f"/v1/events/{event_id}").json()["data"]["data"] == {"v": 1}
        assert [f["slug"] for f in api.functions()] == ["keep-a"]
        assert len(api.event_runs(event_id)) == 1
    finally:
        server.stop()


def test_auto_discovery_finds_an_app_on_a_usual_port(tmp_path):
    port = next((p for p in DISCOVERY_PORTS if p >= 3000 and _free(p)), None)
    if port is None:
        pytest.fail("no discovery port is free on this machine")
    server = LockgateProcess(args=["dev", "--in-memory", "--poll-interval", "0.5"], data_dir=None).start()
    app = AppProcess(module="tests.e2e.apps.basic_app", port=port, server_url=server.url,
                     ledger=tmp_path / "ledger.jsonl").start()
    try:
        api = Api(server.url)
        wait_until(lambda: api.functions(), timeout=30, what="discovery to sync the app")
        apps = api.http.get("/v1/apps").json()["data"]
        assert apps[0]["url"] == f"http://127.0.0.1:{port}/api/inngest"
    finally:
        app.stop()
        server.stop()


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_config_precedence_default_file_env_flag(tmp_path):
    from lockgate.settings import Settings

    config = tmp_path / "lockgate.yaml"
    config.write_text("port: 9000\npoll-interval: 2\nworkers: 7\n")
    settings = Settings.load(config_file=str(config), environ={"LOCKGATE_PORT": "9100", "INNGEST_POLL_INTERVAL": "3"},
                             flags={"port": 9200})
    assert (settings.port, settings.sources["port"]) == (9200, "flag")
    assert (settings.poll_interval, settings.sources["poll_interval"]) == (3.0, "env INNGEST_POLL_INTERVAL")
    assert (settings.workers, settings.sources["workers"]) == (7, f"file {config}")
    assert (settings.host, settings.sources["host"]) == ("127.0.0.1", "default")
    inngest_shape = tmp_path / "inngest.json"
    inngest_shape.write_text(json.dumps({"database": {"url": "postgres://u@h/db"}}))
    assert Settings.load(config_file=str(inngest_shape), environ={}).postgres_uri == "postgres://u@h/db"
    # Keys lockgate does not use are warned about, never fatal; a bad value of a known key is.
    unknown = config.with_name("unknown.json")
    unknown.write_text('{"nope": 1, "port": 9300}')
    loaded = Settings.load(config_file=str(unknown), environ={})
    assert loaded.port == 9300 and any("unknown setting 'nope'" in w for w in loaded.warnings)
    bad = config.with_name("bad.json")
    bad.write_text('{"port": "eighty"}')
    with pytest.raises(ValueError, match="setting 'port' cannot be 'eighty'"):
        Settings.load(config_file=str(bad), environ={})


def test_config_command_prints_sources(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lockgate", "config"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "INNGEST_PORT": "8300"}, timeout=30)
    line = next(line for line in out.stdout.splitlines() if line.startswith("port"))
    assert "8300" in line and "env INNGEST_PORT" in line
