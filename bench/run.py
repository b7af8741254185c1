"""End-to-end benchmark: events through lockgate vs. the same app driven directly.

    .venv/bin/python bench/run.py [--events 1000] [--concurrency 100] [--backends sqlite,postgres|both]
                                  [--mode dev|start|both]

For each function (noop, three steps) it measures, in one run on this machine:
  * burst: N events sent at once; runs/s until every run completed; p50/p99 event→done
  * light load: events sent one at a time; p50/p99 event→done
  * direct-1: the app driven directly one run at a time (the latency floor)
  * direct: the app's own ceiling — the same SDK endpoint called with the same request
    bodies by a minimal in-process driver (no server, no store), at the same concurrency
and prints lockgate ÷ direct. "event→done" = the run's ended_at minus the client's send time.

`--mode start` measures the production setting instead: `lockgate start` with a signing key and an
event key, the app in production mode (it checks our signature and signs its answers, which the
server checks), and the direct driver signing its requests and checking the answers' signatures
too, so the ceiling pays the same HMACs. `--mode both` runs dev, then start, on each store.

The burst line also gives the CPU the server used per run (and, on PostgreSQL, the CPU of the
database's backends serving it), from the first event sent until the last run completed: the
benchmark's own per-run reads afterwards are not counted.

    .venv/bin/python bench/run.py --replicas [--events 1000]

compares one `lockgate start` replica with two on the same PostgreSQL database (signed app in
production mode, events spread over the replicas), in alternating rounds; see `bench_replicas`.
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
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lockgate.protocol.execution_request import build_execution_body  # noqa: E402
from lockgate.protocol.jsoncanon import canonical_json  # noqa: E402
from lockgate.protocol.signing import answer_signature_problem, sign_body  # noqa: E402
from tests.conftest import AppProcess, LockgateProcess, free_port, wait_until  # noqa: E402
from typing import Callable  # noqa: E402


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def lockgate_burst(base: str | list[str], name: str, n: int, *,
                         when_done: Callable[[], None] | None = None,
                         headers: dict[str, str] | None = None) -> tuple[float, list[float]]:
    """`n` events at once (spread round-robin over several replicas' URLs if given); runs/s and
    event→done latencies. `when_done` is called as soon as every run completed."""
    bases = [base] if isinstance(base, str) else base
    base = bases[0]
    sent: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, timeout=60, headers=headers) as http, \
            aiohttp.ClientSession() as session:
        sem = asyncio.Semaphore(100)  # many producers at once

        async def send(i: int) -> None:
            async with sem:
                t = time.time()
                async with session.post(f"{bases[i % len(bases)]}/e/bench", json={"name": name, "data": {"i": i}}) as r:
                    sent[(await r.json())["ids"][0]] = t

        async def completed() -> int:
            return (await http.get("/v1/stats")).json()["data"]["runs"].get("Completed", 0)

        baseline = await completed()
        start = time.time()
        await asyncio.gather(*(send(i) for i in range(n)))
        while await completed() < baseline + n:
            await asyncio.sleep(0.05)  # one cheap aggregate query; per-run times are read afterwards
        if when_done is not None:
            when_done()
        ended: dict[str, float] = {}
        for event_id in sent:
            runs = (await http.get(f"/v1/events/{event_id}/runs")).json()["data"]
            ended[event_id] = parse_iso(runs[0]["ended_at"])
        elapsed = max(ended.values()) - start
        return n / elapsed, [(ended[e] - sent[e]) * 1000 for e in sent]


async def lockgate_light(base: str, name: str, n: int, *, headers: dict[str, str] | None = None) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(base_url=base, timeout=60, headers=headers) as http:
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


async def direct(app_url: str, slug: str, n: int, concurrency: int,
                 signing_key: str | None = None) -> tuple[float, list[float]]:
    """Drive the SDK endpoint as a server would, keeping memos in memory. With `signing_key`, as a
    cloud-mode server: every request signed, every answer's signature checked."""
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
                    data = canonical_json(body)
                    headers = {"content-type": "application/json"}
                    if signing_key:
                        headers["X-Inngest-Signature"] = sign_body(data, signing_key)
                        headers["X-Inngest-Server-Kind"] = "cloud"
                    async with http.post(f"{app_url}?fnId=bench-{slug}&stepId=step", data=data,
                                         headers=headers) as r:
                        status, raw = r.status, await r.read()
                        if signing_key and answer_signature_problem(status, r.headers, raw, [signing_key]):
                            raise AssertionError(f"the app's answer is not signed with the key (HTTP {status})")
                        answer = orjson.loads(raw)
                    if status == 200:
                        break
                    for op in answer:
                        steps[op["id"]] = {"data": op.get("data")}
                        stack.append(op["id"])
                latencies.append((time.time() - t) * 1000)

        start = time.time()
        await asyncio.gather(*(one_run(i) for i in range(n)))
        return n / (time.time() - start), latencies


# `--mode start`: the keys of the production setting (the app gets the same signing key).
SIGNING_KEY = "signkey-bench-" + "0123456789abcdef" * 4
EVENT_KEY = "bench"


def start_bench_stack(*server_args: str, postgres_uri: str | None = None, log_level: str = "warning",
                      server_root: Path = ROOT, mode: str = "dev") -> tuple[LockgateProcess, AppProcess]:
    """`lockgate dev` (on-disk SQLite, or PostgreSQL at postgres_uri) and bench/bench_app.py, synced.
    `mode="start"`: `lockgate start` with signing and event keys, and the app in production mode."""
    tmp = Path(tempfile.mkdtemp(prefix="lockgate-bench-"))
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}/api/inngest"
    if mode == "start":
        args = ["start", "--signing-key", SIGNING_KEY, "--event-key", EVENT_KEY, "--poll-interval", "30"]
        app_env = {"INNGEST_DEV": "0", "INNGEST_SIGNING_KEY": SIGNING_KEY, "INNGEST_EVENT_KEY": EVENT_KEY}
    else:
        args, app_env = ["dev", "--no-discovery", "--no-poll"], {}
    server = LockgateProcess(
        args=[*args, "-u", app_url, "--log-level", log_level, *server_args],
        data_dir=tmp / "data",
        log_path=tmp / "lockgate.log",
        postgres_uri=postgres_uri,
        cwd=server_root,
    ).start()
    if app_env:
        app_env["INNGEST_BASE_URL"] = server.url
    app = AppProcess(module="bench.bench_app", port=app_port, server_url=server.url, ledger=tmp / "ledger",
                     extra_env=app_env).start()
    auth = api_headers(mode)
    wait_until(lambda: httpx.get(server.url + "/v1/apps", headers=auth).json()["data"][0]["functions"], what="sync")
    return server, app


def api_headers(mode: str) -> dict[str, str]:
    """What the benchmark sends to the server's REST API in this mode."""
    return {"Authorization": f"Bearer {SIGNING_KEY}"} if mode == "start" else {}


def cpu_ms(pid: int) -> float:
    """CPU time (user + system) a process has used so far, in ms."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used between `start()` and `stop()` by the given processes and, when `postgres_uri` is
    set, by the PostgreSQL backends connected to its database (read from /proc: the database
    server must run on this machine; its shared WAL writer and checkpointer are not counted)."""

    def __init__(self, pids: list[int], postgres_uri: str | None = None) -> None:
        self.pids, self.postgres_uri = pids, postgres_uri
        self.server_ms = self.database_ms = 0.0

    def _backends(self) -> dict[int, float]:
        if not self.postgres_uri:
            return {}
        import psycopg

        name = psycopg.conninfo.conninfo_to_dict(self.postgres_uri)["dbname"]
        with psycopg.connect(self.postgres_uri, autocommit=True) as conn:
            pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s"
                                               " AND pid <> pg_backend_pid()", (name,))]
        found = {}
        for pid in pids:
            try:
                found[pid] = cpu_ms(pid)
            except (FileNotFoundError, PermissionError):
                pass
        return found

    def start(self) -> None:
        self._server0 = sum(cpu_ms(p) for p in self.pids)
        self._db0 = self._backends()

    def stop(self) -> None:
        self.server_ms = sum(cpu_ms(p) for p in self.pids) - self._server0
        # Backends that connected meanwhile count from zero; one that left is lost (pools keep theirs).
        self.database_ms = sum(ms - self._db0.get(pid, 0.0) for pid, ms in self._backends().items())


def bench_backend(args: argparse.Namespace, backend: str, server_root: Path = ROOT, mode: str = "dev") -> None:
    postgres_uri = None
    if backend == "postgres":
        from tests import pgtools

        postgres_uri = pgtools.create_database(args.postgres_admin_uri or pgtools.ADMIN_URI)
    server, app = start_bench_stack("--workers", str(args.concurrency), postgres_uri=postgres_uri,
                                    log_level=args.log_level, server_root=server_root, mode=mode)
    app_url = app.url
    key = SIGNING_KEY if mode == "start" else None
    auth = api_headers(mode)
    try:
        where = "" if server_root == ROOT else f", server from {server_root}"
        setting = "lockgate start, signed" if mode == "start" else "lockgate dev, unsigned"
        print(f"\nstore: {'PostgreSQL' if postgres_uri else 'SQLite WAL on disk'}, {setting}{where}")
        print(f"{'function':<12} {'mode':<10} {'runs/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'server CPU ms/run':>18}"
              f" {'database CPU ms/run':>20}")
        for slug, event in (("noop", "bench/noop"), ("three-steps", "bench/steps")):
            # The app's ceiling: its best throughput over a few client concurrencies.
            d_rate, d_lat = max(
                (asyncio.run(direct(app_url, slug, args.events, c, key)) for c in (4, 16, args.concurrency)),
                key=lambda result: result[0],
            )
            meter = CpuMeter([server.proc.pid], postgres_uri)
            meter.start()
            l_rate, l_lat = asyncio.run(lockgate_burst(server.url, event, args.events, when_done=meter.stop,
                                                       headers=auth))
            cpu_per_run = meter.server_ms / args.events
            db_per_run = f"{meter.database_ms / args.events:>20.2f}" if postgres_uri else ""
            light = asyncio.run(lockgate_light(server.url, event, args.light, headers=auth))
            _, d_light = asyncio.run(direct(app_url, slug, args.light, 1, key))
            print(f"{slug:<12} {'direct':<10} {d_rate:>9.1f} {pct(d_lat, 50):>9.1f} {pct(d_lat, 99):>9.1f}")
            print(f"{slug:<12} {'burst':<10} {l_rate:>9.1f} {pct(l_lat, 50):>9.1f} {pct(l_lat, 99):>9.1f}"
                  f" {cpu_per_run:>18.2f} {db_per_run}")
            print(f"{slug:<12} {'light':<10} {'':>9} {pct(light, 50):>9.1f} {pct(light, 99):>9.1f}")
            print(f"{slug:<12} {'direct-1':<10} {'':>9} {pct(d_light, 50):>9.1f} {pct(d_light, 99):>9.1f}")
            print(f"{slug:<12} ratio lockgate/direct (burst runs/s): {l_rate / d_rate:.2f}")
    finally:
        app.stop()
        server.stop()
        if postgres_uri:
            pgtools.drop_database(postgres_uri, args.postgres_admin_uri or pgtools.ADMIN_URI)


def bench_replicas(args: argparse.Namespace) -> None:
    """One `lockgate start` replica against two on one PostgreSQL database, same signed app.

    Rounds alternate one → two → two → one, so growth of the tables and drifting load on the
    machine weigh on both sides alike; each round is a burst of noop runs and of three-step runs,
    events spread round-robin over the replicas. Prints runs/s per round and the ratio two ÷ one
    (median over rounds): at or above 1.0, a second replica does not slow the cluster down."""
    import statistics

    from tests import pgtools

    admin = args.postgres_admin_uri or pgtools.ADMIN_URI
    postgres_uri = pgtools.create_database(admin)
    tmp = Path(tempfile.mkdtemp(prefix="lockgate-bench-replicas-"))
    key = "signkey-bench-" + "0123456789abcdef" * 4
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}/api/inngest"

    def replica(name: str) -> LockgateProcess:
        return LockgateProcess(
            args=["start", "--signing-key", key, "--event-key", "bench", "-u", app_url, "--poll-interval", "30",
                  "--workers", str(args.concurrency), "--log-level", args.log_level, "--replica-name", name],
            data_dir=tmp / name, log_path=tmp / f"{name}.log", postgres_uri=postgres_uri).start()

    first = replica("r1")
    app = AppProcess(module="bench.bench_app", port=app_port, server_url=first.url, ledger=tmp / "ledger",
                     extra_env={"INNGEST_DEV": "0", "INNGEST_BASE_URL": first.url, "INNGEST_SIGNING_KEY": key,
                                "INNGEST_EVENT_KEY": "bench"}).start()
    second: LockgateProcess | None = None
    results: dict[tuple[str, int], list[float]] = {}
    try:
        auth = {"Authorization": f"Bearer {key}"}
        wait_until(lambda: httpx.get(first.url + "/v1/apps", headers=auth).json()["data"][0]["functions"],
                   what="sync")
        second = replica("r2")
        print(f"\none vs two `lockgate start` replicas on one PostgreSQL database, {args.events} events per burst")
        print(f"{'round':<6} {'replicas':>8} {'function':<12} {'runs/s':>9} {'p50 ms':>9} {'server CPU ms/run':>18}"
              f" {'database CPU ms/run':>20}")
        for slug_event in ("bench/noop", "bench/steps"):  # warm both replicas up (pools, prepared statements)
            asyncio.run(lockgate_burst([first.url, second.url], slug_event, 100, headers=auth))
        for round_no, count in enumerate((1, 2, 2, 1), start=1):
            servers = [first] if count == 1 else [first, second]
            for slug, event in (("noop", "bench/noop"), ("three-steps", "bench/steps")):
                meter = CpuMeter([s.proc.pid for s in servers], postgres_uri)
                meter.start()
                rate, lat = asyncio.run(lockgate_burst([s.url for s in servers], event, args.events,
                                                       when_done=meter.stop, headers=auth))
                results.setdefault((slug, count), []).append(rate)
                print(f"{round_no:<6} {count:>8} {slug:<12} {rate:>9.1f} {pct(lat, 50):>9.1f}"
                      f" {meter.server_ms / args.events:>18.2f} {meter.database_ms / args.events:>20.2f}")
        for slug in ("noop", "three-steps"):
            one, two = statistics.mean(results[(slug, 1)]), statistics.mean(results[(slug, 2)])
            print(f"{slug:<12} two ÷ one replica (burst runs/s, mean of 2 rounds each): {two / one:.2f}")
    finally:
        app.stop()
        for server in (first, second):
            if server is not None:
                server.stop()
        pgtools.drop_database(postgres_uri, admin)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--light", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres (or both)")
    parser.add_argument("--mode", default="dev", choices=("dev", "start", "both"),
                        help="dev: lockgate dev, unsigned; start: lockgate start, signed calls and event key")
    parser.add_argument("--postgres-admin-uri", default=None,
                        help="server to create a fresh benchmark database on (default: LOCKGATE_TEST_POSTGRES)")
    parser.add_argument("--log-level", default="warning",
                        help="the server's log level: info measures the cost of the terminal activity log")
    parser.add_argument("--compare-with", type=Path, default=None,
                        help="a checkout of another lockgate version (the folder holding its lockgate/ package):"
                             " each backend is run with that version's server, then this one's, back to back")
    parser.add_argument("--replicas", action="store_true",
                        help="instead: one lockgate start replica against two on one PostgreSQL database")
    args = parser.parse_args()
    if args.replicas:
        bench_replicas(args)
        return
    print(f"lockgate bench — {args.events} events burst, {args.light} light-load events, "
          f"concurrency {args.concurrency}, {os.cpu_count()} cores")
    backends = ["sqlite", "postgres"] if args.backends.strip() == "both" else \
        [b.strip() for b in args.backends.split(",")]
    unknown = set(backends) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(sorted(unknown))}: use sqlite, postgres or both")
    modes = ["dev", "start"] if args.mode == "both" else [args.mode]
    for backend in backends:
        for mode in modes:
            if args.compare_with is not None:
                bench_backend(args, backend, args.compare_with.resolve(), mode)
            bench_backend(args, backend, mode=mode)


if __name__ == "__main__":
    main()
