"""End-to-end benchmark: events through lockgate vs. the same app driven directly.

    .venv/bin/python bench/run.py [--events 1000] [--concurrency 100] [--backends sqlite,postgres]

For each function (noop, three steps) it measures, in one run on this machine:
  * burst: N events sent at once; runs/s until every run completed; p50/p99 event→done
  * light load: events sent one at a time; p50/p99 event→done
  * direct-1: the app driven directly one run at a time (the latency floor)
  * direct: the app's own ceiling — the same SDK endpoint called with the same request
    bodies by a minimal in-process driver (no server, no store), at the same concurrency
and prints lockgate ÷ direct. "event→done" = the run's ended_at minus the client's send time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lockgate.protocol.execution_request import build_execution_body  # noqa: E402
from lockgate.protocol.jsoncanon import canonical_json  # noqa: E402
from tests.conftest import AppProcess, LockgateProcess, free_port, wait_until  # noqa: E402


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def lockgate_burst(base: str, name: str, n: int) -> tuple[float, list[float]]:
    sent: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, timeout=60) as http, aiohttp.ClientSession() as session:
        sem = asyncio.Semaphore(100)  # many producers at once

        async def send(i: int) -> None:
            async with sem:
                t = time.time()
                async with session.post(f"{base}/e/bench", json={"name": name, "data": {"i": i}}) as r:
                    sent[(await r.json())["ids"][0]] = t

        async def completed() -> int:
            return (await http.get("/v1/stats")).json()["data"]["runs"].get("Completed", 0)

        baseline = await completed()
        start = time.time()
        await asyncio.gather(*(send(i) for i in range(n)))
        while await completed() < baseline + n:
            await asyncio.sleep(0.05)  # one cheap aggregate query; per-run times are read afterwards
        ended: dict[str, float] = {}
        for event_id in sent:
            runs = (await http.get(f"/v1/events/{event_id}/runs")).json()["data"]
            ended[event_id] = parse_iso(runs[0]["ended_at"])
        elapsed = max(ended.values()) - start
        return n / elapsed, [(ended[e] - sent[e]) * 1000 for e in sent]


async def lockgate_light(base: str, name: str, n: int) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        for i in range(n):
            t = time.time()
            event_id = (await http.post("/e/bench", json={"name": name, "data": {"i": i}})).json()["ids"][0]
            while True:
                runs = (await http.get(f"/v1/events/{event_id}/runs")).json()["data"]
                if runs and runs[0]["status"] == "Completed":
                    latencies.append((parse_iso(runs[0]["ended_at"]) - t) * 1000)
                    break
                await asyncio.sleep(0.025)  # ended_at is server time: slow polling does not skew it
    return latencies


async def direct(app_url: str, slug: str, n: int, concurrency: int) -> tuple[float, list[float]]:
    """Drive the SDK endpoint as a server would, keeping memos in memory."""
    latencies: list[float] = []
    # aiohttp, as lockgate uses: the ceiling must not be held back by a slower client.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        sem = asyncio.Semaphore(concurrency)

        async def one_run(i: int) -> None:
            async with sem:
                t = time.time()
                event = {"name": "bench/x", "data": {"i": i}, "id": f"e{i}", "ts": int(t * 1000), "user": {}}
                steps: dict = {}
                stack: list[str] = []
                while True:
                    body = build_execution_body(
                        event=event, events=[event], steps=steps, run_id=f"01RUN{i:021d}", attempt=0,
                        max_attempts=5, disable_immediate_execution=False, stack=stack, request_version=2,
                        use_api=False,
                    )
                    async with http.post(f"{app_url}?fnId=bench-{slug}&stepId=step", data=canonical_json(body),
                                         headers={"content-type": "application/json"}) as r:
                        status, answer = r.status, await r.json(content_type=None)
                    if status == 200:
                        break
                    for op in answer:
                        steps[op["id"]] = {"data": op.get("data")}
                        stack.append(op["id"])
                latencies.append((time.time() - t) * 1000)

        start = time.time()
        await asyncio.gather(*(one_run(i) for i in range(n)))
        return n / (time.time() - start), latencies


def start_bench_stack(*server_args: str, postgres_uri: str | None = None,
                      log_level: str = "warning") -> tuple[LockgateProcess, AppProcess]:
    """`lockgate dev` (on-disk SQLite, or PostgreSQL at postgres_uri) and bench/bench_app.py, synced."""
    tmp = Path(tempfile.mkdtemp(prefix="lockgate-bench-"))
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}/api/inngest"
    server = LockgateProcess(
        args=["dev", "--no-discovery", "--no-poll", "-u", app_url, "--log-level", log_level, *server_args],
        data_dir=tmp / "data",
        log_path=tmp / "lockgate.log",
        postgres_uri=postgres_uri,
    ).start()
    app = AppProcess(module="bench.bench_app", port=app_port, server_url=server.url, ledger=tmp / "ledger").start()
    wait_until(lambda: httpx.get(server.url + "/v1/apps").json()["data"][0]["functions"], what="sync")
    return server, app


def cpu_ms(pid: int) -> float:
    """CPU time (user + system) a process has used so far, in ms."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def bench_backend(args: argparse.Namespace, backend: str) -> None:
    postgres_uri = None
    if backend == "postgres":
        from tests import pgtools

        postgres_uri = pgtools.create_database(args.postgres_admin_uri or pgtools.ADMIN_URI)
    server, app = start_bench_stack("--workers", str(args.concurrency), postgres_uri=postgres_uri,
                                    log_level=args.log_level)
    app_url = app.url
    try:
        print(f"\nstore: {'PostgreSQL' if postgres_uri else 'SQLite WAL on disk'}")
        print(f"{'function':<12} {'mode':<10} {'runs/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'server CPU ms/run':>18}")
        for slug, event in (("noop", "bench/noop"), ("three-steps", "bench/steps")):
            # The app's ceiling: its best throughput over a few client concurrencies.
            d_rate, d_lat = max(
                (asyncio.run(direct(app_url, slug, args.events, c)) for c in (4, 16, args.concurrency)),
                key=lambda result: result[0],
            )
            cpu_before = cpu_ms(server.proc.pid)
            l_rate, l_lat = asyncio.run(lockgate_burst(server.url, event, args.events))
            cpu_per_run = (cpu_ms(server.proc.pid) - cpu_before) / args.events  # includes the API reads of the bench
            light = asyncio.run(lockgate_light(server.url, event, args.light))
            _, d_light = asyncio.run(direct(app_url, slug, args.light, 1))
            print(f"{slug:<12} {'direct':<10} {d_rate:>9.1f} {pct(d_lat, 50):>9.1f} {pct(d_lat, 99):>9.1f}")
            print(f"{slug:<12} {'burst':<10} {l_rate:>9.1f} {pct(l_lat, 50):>9.1f} {pct(l_lat, 99):>9.1f}"
                  f" {cpu_per_run:>18.2f}")
            print(f"{slug:<12} {'light':<10} {'':>9} {pct(light, 50):>9.1f} {pct(light, 99):>9.1f}")
            print(f"{slug:<12} {'direct-1':<10} {'':>9} {pct(d_light, 50):>9.1f} {pct(d_light, 99):>9.1f}")
            print(f"{slug:<12} ratio lockgate/direct (burst runs/s): {l_rate / d_rate:.2f}")
    finally:
        app.stop()
        server.stop()
        if postgres_uri:
            pgtools.drop_database(postgres_uri, args.postgres_admin_uri or pgtools.ADMIN_URI)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--light", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--postgres-admin-uri", default=None,
                        help="server to create a fresh benchmark database on (default: LOCKGATE_TEST_POSTGRES)")
    parser.add_argument("--log-level", default="warning",
                        help="the server's log level: info measures the cost of the terminal activity log")
    args = parser.parse_args()
    print(f"lockgate bench — {args.events} events burst, {args.light} light-load events, "
          f"concurrency {args.concurrency}, {os.cpu_count()} cores")
    for backend in args.backends.split(","):
        bench_backend(args, backend.strip())


if __name__ == "__main__":
    main()
