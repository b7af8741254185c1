"""Connect vs HTTP: the same functions through lockgate, served over HTTP and by a Connect worker.

    .venv/bin/python bench/connect.py [--events 500] [--light 100] [--backend sqlite|postgres]

Starts `lockgate dev`, bench/bench_app.py (FastAPI, HTTP) and bench/bench_worker.py (the official
Python SDK's Connect worker), then for a noop and a three-step function prints, in one run: burst
runs/s and p50/p99 event→done, light-load (one event at a time) p50/p99, and Connect ÷ HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import lockgate_burst, lockgate_light, pct, start_bench_stack  # noqa: E402
from tests.conftest import wait_until  # noqa: E402


def start_worker(server_url: str) -> subprocess.Popen:
    env = {**os.environ, "INNGEST_DEV": server_url, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "bench.bench_worker"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready() -> bool:
        apps = httpx.get(server_url + "/v1/apps").json()["data"]
        return any(a["name"] == "bench-connect" and a["connect"] and a["connect"]["count"] for a in apps)

    wait_until(ready, what="the Connect worker")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--light", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    postgres_uri = None
    if args.backend == "postgres":
        from tests import pgtools

        postgres_uri = pgtools.create_database()
    server, app = start_bench_stack("--workers", str(args.concurrency), postgres_uri=postgres_uri)
    worker = start_worker(server.url)
    try:
        print(f"lockgate Connect bench — {args.events} events burst, {args.light} light-load events, store: "
              f"{'PostgreSQL' if postgres_uri else 'SQLite WAL on disk'}, {os.cpu_count()} cores")
        print(f"{'function':<12} {'transport':<9} {'runs/s':>8} {'burst p50':>10} {'burst p99':>10} "
              f"{'light p50':>10} {'light p99':>10}")
        for slug in ("noop", "steps"):
            results = {}
            for transport, event in (("http", f"bench/{slug}"), ("connect", f"bench-connect/{slug}")):
                rate, burst = asyncio.run(lockgate_burst(server.url, event, args.events))
                light = asyncio.run(lockgate_light(server.url, event, args.light))
                results[transport] = (rate, pct(light, 50))
                print(f"{slug:<12} {transport:<9} {rate:>8.1f} {pct(burst, 50):>10.1f} {pct(burst, 99):>10.1f} "
                      f"{pct(light, 50):>10.1f} {pct(light, 99):>10.1f}")
            (h_rate, h_p50), (c_rate, c_p50) = results["http"], results["connect"]
            print(f"{slug:<12} Connect ÷ HTTP: runs/s {c_rate / h_rate:.2f}, light-load p50 {c_p50 / h_p50:.2f}")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        app.stop()
        server.stop()
        if postgres_uri:
            from tests import pgtools

            pgtools.drop_database(postgres_uri)


if __name__ == "__main__":
    main()
