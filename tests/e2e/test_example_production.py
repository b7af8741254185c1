"""Example 4 as its guide says: two `lockgate start` replicas on PostgreSQL behind nginx, keys from
files, the app in cloud mode. The Procfile's own commands are run, with free ports for the fixed ones."""

from __future__ import annotations

import os
import sys
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port, wait_until

EXAMPLE = ROOT / "examples" / "production"
FIXED_PORTS = ("8288", "8300", "8401", "8402")  # proxy, app, replica a, replica b


def render(tmp: Path, ports: dict[str, str], database: str) -> tuple[dict[str, str], dict[str, str]]:
    """The example's files with free ports, in tmp; returns the Procfile's commands and the environment."""
    folder = tmp / "production"
    shutil.copytree(EXAMPLE, folder)
    for path in [p for p in folder.rglob("*") if p.is_file()]:
        text = path.read_text()
        for fixed, port in ports.items():
            text = text.replace(f":{fixed}", f":{port}").replace(f"--port {fixed}", f"--port {port}")
        path.write_text(text.replace("examples/production", str(folder)))
    # the keys, made as the guide says
    keys = tmp / "keys"
    keys.mkdir()
    hex_key = subprocess.run(["openssl", "rand", "-hex", "32"], capture_output=True, text=True, check=True).stdout
    (keys / "signing-key").write_text(f"signkey-prod-{hex_key.strip()}\n")
    event_key = subprocess.run(["openssl", "rand", "-hex", "16"], capture_output=True, text=True, check=True).stdout
    (keys / "event-keys").write_text(event_key)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INNGEST_", "LOCKGATE_"))}
    for line in (folder / "lockgate.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value.replace("/etc/lockgate", str(keys))
    env["LOCKGATE_POSTGRES_URI"] = database
    env["REVIEW_DELAY_SECONDS"] = "1"  # the example app's only test-time setting
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}:/usr/sbin"
    commands = dict(line.split(": ", 1) for line in (folder / "Procfile").read_text().splitlines() if line.strip())
    return commands, env


def test_two_replicas_behind_nginx_with_an_app_in_cloud_mode(tmp_path, backend):
    if backend.name != "postgres":
        pytest.skip("replicas share a PostgreSQL database")
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        pytest.skip("nginx is not installed (apt-get install nginx-light): the guide puts it in front")
    ports = {fixed: str(free_port()) for fixed in FIXED_PORTS}
    commands, env = render(tmp_path, ports, backend.new_database())
    procs: dict[str, subprocess.Popen] = {}
    logs = {}

    def start(name: str) -> None:
        logs[name] = open(tmp_path / f"{name}.log", "ab")
        procs[name] = subprocess.Popen(["sh", "-c", commands[name]], cwd=ROOT, env=env, stdout=logs[name],
                                       stderr=subprocess.STDOUT, start_new_session=True)

    proxy = f"http://127.0.0.1:{ports['8288']}"
    shop = f"http://127.0.0.1:{ports['8300']}"
    key = (tmp_path / "keys" / "signing-key").read_text().strip()
    api = httpx.Client(base_url=proxy, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    try:
        for name in ("lockgate-a", "lockgate-b", "proxy", "app"):
            start(name)
        for port in (ports["8401"], ports["8402"], ports["8288"]):
            wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200,
                       what=f"/health on {port}")
        wait_until(lambda: [f for a in api.get("/v1/apps").json()["data"] for f in a["functions"]], timeout=60,
                   what="the app to sync through nginx")
        assert httpx.get(f"{proxy}/v1/apps").status_code == 401  # the API behind nginx still wants the key

        def order_completes(order_id: str) -> dict:
            sent = httpx.post(f"{shop}/orders", json={"order_id": order_id, "item": "mug", "quantity": 1}, timeout=10)
            assert sent.status_code == 202, sent.text
            event_id = sent.json()["event_ids"][0]
            runs = wait_until(lambda: api.get(f"/v1/events/{event_id}/runs").json()["data"], what="the order's run")
            return wait_until(lambda: (r := api.get(f"/v1/runs/{runs[0]['run_id']}").json()["data"])["status"]
                              in ("Completed", "Failed") and r, timeout=60, what="the order's run to end")

        first = order_completes("prod-1")
        assert first["status"] == "Completed" and first["output"]["charged_cents"] == 1200

        # one replica dies hard: nginx sends everything to the other, which also takes over its work
        os.killpg(procs["lockgate-a"].pid, signal.SIGKILL)
        procs["lockgate-a"].wait(timeout=10)
        second = order_completes("prod-2")
        assert second["status"] == "Completed" and second["output"]["charged_cents"] == 1200
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for log in logs.values():
            log.close()
