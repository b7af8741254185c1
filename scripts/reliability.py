"""Reliability rounds against real processes; writes the figures to docs/reliability.md.

    bash scripts/reliability.sh                 # full scale (about 30 minutes)
    bash scripts/reliability.sh --quick         # reduced scale (a few minutes), says so in the report

Scenarios: kill -9 of lockgate mid-burst (per backend, N rounds), the app down under load,
a PostgreSQL restart, two `lockgate start` replicas with one killed, and a soak with RSS sampled.
For every acknowledged event: is there a completed run (lost = no), and did any recorded step
run again after its result was recorded (reruns)? Executions of a step whose answer was lost to
a crash before it was recorded are counted separately: that is at-least-once, as documented.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import pgtools  # noqa: E402  (the test harness starts and stops the real processes)
from tests.conftest import Api, AppProcess, LockgateProcess, free_port, wait_until  # noqa: E402

APP = "scripts.reliability_app"
SIGNING_KEY = "signkey-rel-" + "0f1e2d3c" * 8
EVENT_KEY = "reliability"


class Burst:
    """Threads sending events until stopped; remembers what was acknowledged."""

    def __init__(self, urls: list[str], senders: int = 4, rate_pause: float = 0.0) -> None:
        self.urls, self.acked, self.lock, self.stop = urls, [], threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self._send, args=(i,), daemon=True) for i in range(senders)]
        self.pause = rate_pause

    def _send(self, worker: int) -> None:
        url = self.urls[worker % len(self.urls)]
        with httpx.Client(timeout=5) as http:
            while not self.stop.is_set():
                try:
                    r = http.post(f"{url}/e/{EVENT_KEY}", json={"name": "rel/work", "data": {"w": worker}})
                except httpx.HTTPError:
                    time.sleep(0.05)  # that server is down: nothing was acknowledged
                    continue
                if r.status_code == 200:
                    with self.lock:
                        self.acked.extend(r.json()["ids"])
                if self.pause:
                    time.sleep(self.pause)

    def __enter__(self) -> "Burst":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def verify(api: Api, app: AppProcess, acked: list[str], timeout: float) -> dict:
    def pending() -> list[str]:
        left = []
        for event_id in acked:
            runs = api.event_runs(event_id)
            if len(runs) != 1 or runs[0]["status"] != "Completed":
                left.append(event_id)
        return left

    started = time.monotonic()
    left = list(acked)
    while left and time.monotonic() - started < timeout:
        time.sleep(2)
        left = pending()
    executions = defaultdict(list)
    for entry in app.ledger_entries():
        executions[(entry["run_id"], entry["step"])].append(entry["token"])
    reruns = duplicates = completed = 0
    for event_id in acked:
        runs = api.event_runs(event_id)
        if len(runs) != 1 or runs[0]["status"] != "Completed":
            continue
        completed += 1
        for recorded in runs[0]["output"]["steps"]:
            tokens = executions[(runs[0]["run_id"], recorded["step"])]
            duplicates += len(tokens) - 1
            reruns += tokens.index(recorded["token"]) != len(tokens) - 1 if recorded["token"] in tokens else 1
    return {"acknowledged": len(acked), "completed": completed, "lost": len(acked) - completed,
            "recorded_steps_rerun": reruns, "in_flight_steps_repeated": duplicates,
            "seconds_to_complete": round(time.monotonic() - started)}


def start_dev(tmp: Path, app_port: int, *, postgres_uri: str | None, port: int = 0,
              extra: list[str] | None = None) -> LockgateProcess:
    return LockgateProcess(
        args=["dev", "--no-discovery", "--poll-interval", "0.5", "-u", f"http://127.0.0.1:{app_port}/api/inngest",
              *(extra or [])],
        data_dir=None if postgres_uri else tmp / "data", postgres_uri=postgres_uri, port=port or free_port(),
        log_path=tmp / "lockgate.log").start()


def start_app(tmp: Path, port: int, server_url: str, **env: str) -> AppProcess:
    return AppProcess(module=APP, port=port, server_url=server_url, ledger=tmp / "ledger.jsonl",
                      extra_env=env).start()


def kill_rounds(backend: str, rounds: int, acks_per_round: int, tmp: Path) -> list[dict]:
    uri = pgtools.create_database() if backend == "postgres" else None
    app_port = free_port()
    server = start_dev(tmp, app_port, postgres_uri=uri, extra=["--retry-interval", "0.5"])
    app = start_app(tmp, app_port, server.url)
    api = Api(server.url)
    wait_until(lambda: api.functions(), what="app sync")
    results = []
    try:
        for round_no in range(1, rounds + 1):
            steps_before = len(app.ledger_entries())
            with Burst([server.url]) as burst:
                wait_until(lambda: len(burst.acked) >= acks_per_round, timeout=120, what="acknowledged events")
                wait_until(lambda: len(app.ledger_entries()) >= steps_before + 20, timeout=120, what="steps running")
                server.kill9()
                time.sleep(0.5)  # senders see the server gone
            server.start()
            result = verify(api, app, list(burst.acked), timeout=300)
            results.append({"round": round_no, **result})
            print(f"kill -9 {backend} round {round_no}: {result}", flush=True)
    finally:
        app.stop()
        server.stop()
        if uri:
            pgtools.drop_database(uri)
    return results


def app_down(outage_s: float, tmp: Path) -> dict:
    app_port = free_port()
    server = start_dev(tmp, app_port, postgres_uri=None)  # the default backoff: 15 s, 30 s, 1 m, 2 m, ...
    app = start_app(tmp, app_port, server.url)
    api = Api(server.url)
    wait_until(lambda: api.functions(), what="app sync")
    try:
        with Burst([server.url], senders=2, rate_pause=0.05) as burst:
            time.sleep(3)
            app.stop()
            time.sleep(outage_s)
            app.start()
            time.sleep(3)
        result = verify(api, app, list(burst.acked), timeout=outage_s + 600)
    finally:
        app.stop()
        server.stop()
    return {"outage_s": outage_s, **result}


def postgres_restart(tmp: Path) -> dict:
    root = Path(tempfile.mkdtemp(prefix="lockgate-pg-"))  # outside the 0700 temp tree: the postgres user needs it
    cluster = pgtools.PrivateCluster(root, free_port()).init()
    cluster.start()
    app_port = free_port()
    server = start_dev(tmp, app_port, postgres_uri=cluster.uri, extra=["--retry-interval", "0.5"])
    app = start_app(tmp, app_port, server.url)
    api = Api(server.url)
    try:
        wait_until(lambda: api.functions(), what="app sync")
        with Burst([server.url]) as burst:
            wait_until(lambda: len(burst.acked) >= 100, timeout=120, what="acknowledged events")
            cluster.restart()
            time.sleep(5)
        result = verify(api, app, list(burst.acked), timeout=300)
    finally:
        app.stop()
        server.stop()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return result


def replicas(tmp: Path) -> dict:
    uri = pgtools.create_database()
    app_port = free_port()
    env = {"INNGEST_SIGNING_KEY": SIGNING_KEY, "INNGEST_EVENT_KEY": EVENT_KEY, "LOCKGATE_LEASE_TIMEOUT": "5"}
    url = f"http://127.0.0.1:{app_port}/api/inngest"
    a, b = (LockgateProcess(args=["start", "-u", url, "--poll-interval", "0.5", "--retry-interval", "0.5"],
                            data_dir=None, postgres_uri=uri, port=free_port(), env=env,
                            log_path=tmp / f"replica-{n}.log").start() for n in "ab")
    app = start_app(tmp, app_port, a.url, INNGEST_DEV="0", INNGEST_BASE_URL=a.url, INNGEST_SIGNING_KEY=SIGNING_KEY,
                    INNGEST_EVENT_KEY=EVENT_KEY)
    api = Api(a.url, signing_key=SIGNING_KEY)
    try:
        wait_until(lambda: api.functions(), what="app sync")
        with Burst([a.url, b.url]) as burst:
            wait_until(lambda: len(burst.acked) >= 200, timeout=120, what="acknowledged events")
            b.kill9()
            time.sleep(2)
        result = verify(api, app, list(burst.acked), timeout=300)
    finally:
        app.stop()
        a.stop()
        pgtools.drop_database(uri)
    return result


def soak(seconds: float, tmp: Path) -> dict:
    server = LockgateProcess(args=["dev", "--no-discovery", "--no-poll"], data_dir=tmp / "soak-data",
                             port=free_port(), log_path=tmp / "soak.log").start()
    try:
        out = tmp / "soak.json"
        subprocess.run([sys.executable, str(ROOT / "scripts" / "soak.py"), "--url", server.url, "--pid",
                        str(server.proc.pid), "--seconds", str(seconds), "--sample", str(max(5, seconds / 20)),
                        "--event-key", EVENT_KEY, "--json", str(out)], check=True, cwd=ROOT)
        return json.loads(out.read_text())
    finally:
        server.stop()


def report(results: dict, args: argparse.Namespace) -> str:
    lines = ["# Reliability", "",
             f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with "
             f"`bash scripts/reliability.sh{' --quick' if args.quick else ''}` on a shared 2-core machine "
             f"({'REDUCED scale: ' if args.quick else ''}{args.rounds} kill rounds per backend, app down "
             f"{args.outage:g} s, soak {args.soak:g} s).", "",
             "*lost*: acknowledged events without a completed run. *recorded steps rerun*: a step executed again "
             "after its result was recorded (must be 0). *in-flight steps repeated*: executions whose answer was "
             "lost to the crash before it was recorded: at-least-once, as the README says.", ""]
    header = "| scenario | acknowledged | completed | lost | recorded steps rerun | in-flight steps repeated | s to complete |"
    rule = "|---|---:|---:|---:|---:|---:|---:|"

    def row(name: str, r: dict) -> str:
        return (f"| {name} | {r['acknowledged']} | {r['completed']} | {r['lost']} | {r['recorded_steps_rerun']} | "
                f"{r['in_flight_steps_repeated']} | {r['seconds_to_complete']} |")

    for backend in ("sqlite", "postgres"):
        rounds = results.get(f"kill9_{backend}") or []
        if rounds:
            lines += [f"## kill -9 of lockgate mid-burst ({backend})", "", header, rule]
            lines += [row(f"round {r['round']}", r) for r in rounds]
            total = {k: sum(r[k] for r in rounds) for k in ("acknowledged", "completed", "lost",
                                                            "recorded_steps_rerun", "in_flight_steps_repeated")}
            lines += [row("**all rounds**", {**total, "seconds_to_complete": max(r["seconds_to_complete"]
                                                                                for r in rounds)}), ""]
    for key, title in (("app_down", f"The app down for {args.outage:g} s under load (SQLite, default backoff)"),
                       ("postgres_restart", "PostgreSQL restarted mid-burst (`pg_ctl -m immediate`)"),
                       ("replicas", "Two `lockgate start` replicas, one killed with -9 mid-burst")):
        if key in results:
            lines += [f"## {title}", "", header, rule, row(key.replace("_", " "), results[key]), ""]
    if "soak" in results:
        s = results["soak"]["summary"]
        lines += [f"## Soak: {s['seconds']} s of valid and hostile traffic (SQLite)", "",
                  "| RSS at start | after 1 min | at the end | max | requests | 5xx |", "|---:|---:|---:|---:|---:|---:|",
                  f"| {s['rss_start_mib']} MiB | {s['rss_after_1min_mib']} MiB | {s['rss_end_mib']} MiB | "
                  f"{s['rss_max_mib']} MiB | {s['requests']} | {s['5xx']} |", "",
                  "RSS samples (s, MiB): " + ", ".join(f"{t:.0f}: {r:.0f}" for t, r in results["soak"]["samples"]), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="reduced scale: 3 rounds, 30 s outage, 2 min soak")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--outage", type=float, default=None, help="seconds the app stays down")
    parser.add_argument("--soak", type=float, default=None, help="soak seconds")
    parser.add_argument("--only", default="kill9,app_down,postgres_restart,replicas,soak")
    parser.add_argument("--out", default=str(ROOT / "docs" / "reliability.md"))
    args = parser.parse_args()
    args.rounds = args.rounds or (3 if args.quick else 10)
    args.outage = args.outage or (30.0 if args.quick else 180.0)
    args.soak = args.soak or (120.0 if args.quick else 600.0)
    only = set(args.only.split(","))
    results: dict = {}
    postgres_ok = pgtools.unreachable_reason() is None
    with tempfile.TemporaryDirectory(prefix="lockgate-reliability-") as folder:
        tmp = Path(folder)
        for backend in ("sqlite", "postgres"):
            if "kill9" in only and (backend == "sqlite" or postgres_ok):
                (tmp / f"kill-{backend}").mkdir()
                results[f"kill9_{backend}"] = kill_rounds(backend, args.rounds, 150, tmp / f"kill-{backend}")
        scenarios = {"app_down": lambda t: app_down(args.outage, t), "postgres_restart": postgres_restart,
                     "replicas": replicas, "soak": lambda t: soak(args.soak, t)}
        for name, run in scenarios.items():
            if name in only and (postgres_ok or name in ("app_down", "soak")):
                (tmp / name).mkdir()
                results[name] = run(tmp / name)
                print(f"{name}: {results[name] if name != 'soak' else results[name]['summary']}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report(results, args) + "\n")
    print(f"wrote {args.out}")
    failures = [r for k, v in results.items() if k.startswith("kill9") for r in v if r["lost"] or r["recorded_steps_rerun"]]
    failures += [v for k, v in results.items() if k in ("app_down", "postgres_restart", "replicas")
                 and (v["lost"] or v["recorded_steps_rerun"])]
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
