"""Steady speed as data grows: a store holding millions of finished runs against an empty one.

    .venv/bin/python bench/big_store.py --backend sqlite --runs 5000000
    .venv/bin/python bench/big_store.py --backend postgres --runs 5000000
    .venv/bin/python bench/big_store.py --backend both --runs 1000000 --parts retention
    .venv/bin/python bench/big_store.py --backend both --runs 1000000 --parts steady --rounds 6

1. Real rows: `lockgate dev` + bench/bench_app.py (official SDK) run 200 noop and 200 three-step
   runs; disk per run (bytes per noop and per three-step run, by column) is read from them.
2. The store is filled with --runs synthetic finished runs: copies of those real rows with new
   ids, spread over the last six days (90% Completed, 8% Failed, 2% Cancelled), each with its
   event, trigger link and steps, inserted directly (SQLite: from Python; PostgreSQL: by
   INSERT … SELECT over generate_series inside the database).
3. Empty against full: a second, empty store is served beside the full one, and --rounds rounds
   alternate between them (order flipped each round): a burst of --events runs (runs/s, p50/p99
   event→done) and --light runs one at a time (p50/p99), for noop and three-step functions.
   Then the dashboard's list queries are timed through the store functions the REST API uses,
   and the query plans show which index serves each.
4. Retention's hot-path cost: the full store served with retention off, and with --retention 5d
   so that housekeeping deletes a backlog (the oldest sixth of the synthetic runs) meanwhile,
   alternating over --rounds rounds.
5. Under a sustained load (`steady`): events at a fixed --rate (below saturation: half noop, half
   three-step) for --seconds per round after --warmup unmeasured seconds, sent on schedule whatever
   the server's pace (open loop). Per round: CPU per run of the server process and of the
   PostgreSQL backends of its database (from /proc, sampled every 0.5 s), housekeeping's share of
   it (its own connection's backend, application_name lockgate-housekeeping, plus the CPU its
   statements took in the server, from GET /v1/retention), the share of the time its statements
   ran, the runs it deleted, and event→done p50/p90/p99 per function. `steady-retention` compares
   retention off with sweeping the backlog (and, with --baseline-source DIR, with an earlier
   version's housekeeping sweeping it), rotating the order each round; `steady-versus` the empty
   store with the full one. CPU per run varies far less between rounds than a burst's runs/s.
--parts picks among 3 (versus), the queries of 3 (queries), 4 (retention), 5 (steady-retention,
steady-versus; `steady` is both), and on PostgreSQL `wal`: per run of a burst, the WAL bytes
(full-page images apart, read with pg_walinspect and kept to the store's own relations, so other
databases on the server do not count) and the blocks read and hit, for each table and index, empty
store against full; --backend both runs everything on SQLite, then on PostgreSQL,
and prints every ratio at the end. --keep DIR fills the store once and reuses it on later runs.
PostgreSQL databases are named after LOCKGATE_TEST_DB_TAG (default "bigstore") and dropped at the end.
Ratios are medians of the per-round ratios, so slow drifts of a shared machine cancel out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import lockgate_light, pct  # noqa: E402
from lockgate.engine import health_snapshot, run_search  # noqa: E402
from lockgate.engine.retention import COUNT_BATCH, LATE_COMMIT_MS  # noqa: E402
from lockgate.models import RunFilter  # noqa: E402
from lockgate.store import health_operations as hops  # noqa: E402
from lockgate.store import operations as ops  # noqa: E402
from lockgate.store.postgres import PostgresTx  # noqa: E402
from lockgate.store.sqlite import SQLiteTx, _connect  # noqa: E402
from tests.conftest import AppProcess, LockgateProcess, free_port, wait_until  # noqa: E402

DAY_MS = 86_400_000
TABLES = ("runs", "steps", "events", "run_triggers")
TIME_COLUMNS = {"created_at", "started_at", "ended_at", "ts", "received_at"}
BENCH_APP_NAME = "lockgate-bench"
HOUSEKEEPING_APP_NAME = "lockgate-housekeeping"  # its PostgreSQL connection's application_name


# -- the store, read and written from outside the server -----------------------------------


class Raw:
    """A plain connection to the benchmark's store, for counting, copying and measuring."""

    def __init__(self, data_dir: Path, postgres_uri: str | None) -> None:
        self.pg = postgres_uri is not None
        if self.pg:
            import psycopg

            # Named, so the CPU sampler leaves the bench's own backend out.
            self.conn = psycopg.connect(postgres_uri, autocommit=True, application_name=BENCH_APP_NAME)
        else:
            self.conn = sqlite3.connect(data_dir / "lockgate.db", isolation_level=None, timeout=60)

    def all(self, sql: str, params: tuple = ()) -> list[tuple]:
        sql = sql.replace("?", "%s") if self.pg else sql
        return [tuple(r) for r in self.conn.execute(sql, params).fetchall()]

    def one(self, sql: str, params: tuple = ()):
        return self.all(sql, params)[0][0]

    def columns(self, table: str) -> list[str]:
        if self.pg:
            return [r[0] for r in self.all("SELECT column_name FROM information_schema.columns WHERE table_name = ?"
                                           " ORDER BY ordinal_position", (table,))]
        return [r[1] for r in self.all(f"PRAGMA table_info({table})")]

    def table_bytes(self) -> dict[str, int]:
        """On-disk bytes per table, its indexes included."""
        if self.pg:
            return {t: self.one(f"SELECT pg_total_relation_size('{t}')") for t in TABLES}
        sizes: dict[str, int] = {}
        indexes = dict(self.all("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index'"))
        for name, size in self.all("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            table = indexes.get(name, name)
            if table in TABLES:
                sizes[table] = sizes.get(table, 0) + size
        return sizes

    def database_bytes(self) -> int:
        if self.pg:
            return self.one("SELECT pg_database_size(current_database())")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return self.one("PRAGMA page_count") * self.one("PRAGMA page_size")


def column_bytes(raw: Raw, table: str, where: str, params: tuple) -> dict[str, float]:
    # SQLite stores an integer in 1-8 bytes by magnitude (a ms timestamp in 6), text as its bytes.
    size = "pg_column_size({})" if raw.pg else (
        "CASE typeof({0}) WHEN 'null' THEN 0 WHEN 'real' THEN 8 WHEN 'integer' THEN CASE WHEN abs({0}) < 128"
        " THEN 1 WHEN abs({0}) < 32768 THEN 2 WHEN abs({0}) < 2147483648 THEN 4 WHEN abs({0}) < 140737488355328"
        " THEN 6 ELSE 8 END ELSE LENGTH(CAST({0} AS BLOB)) END")
    cols = raw.columns(table)
    exprs = ", ".join(f"AVG(COALESCE({size.format(c)}, 0))" for c in cols)
    values = raw.all(f"SELECT {exprs} FROM {table} WHERE {where}", params)[0]
    return {c: float(v or 0) for c, v in zip(cols, values)}


# -- load ------------------------------------------------------------------------------------


async def burst(base: str, raw: Raw, event: str, function_id: str, n: int) -> tuple[float, list[float]]:
    """N events at once; completion is counted on the function's newest runs (an index range),
    so polling costs the same on an empty and on a full store."""
    sent: dict[str, float] = {}
    since = int(time.time() * 1000) - 1
    async with aiohttp.ClientSession() as session:
        sem = asyncio.Semaphore(100)

        async def send(i: int) -> None:
            async with sem:
                t = time.time()
                async with session.post(f"{base}/e/bench", json={"name": event, "data": {"i": i}}) as r:
                    sent[(await r.json())["ids"][0]] = t

        start = time.time()
        await asyncio.gather(*(send(i) for i in range(n)))
        count = ("SELECT COUNT(*) FROM runs WHERE function_id = ? AND created_at >= ? AND status = 'Completed'")
        while raw.one(count, (function_id, since)) < n:
            await asyncio.sleep(0.05)
    rows = raw.all("SELECT t.event_internal_id, r.ended_at FROM runs r JOIN run_triggers t ON t.run_id = r.run_id"
                   " WHERE r.function_id = ? AND r.created_at >= ?", (function_id, since))
    ended = {event_id: ended_at / 1000 for event_id, ended_at in rows}
    elapsed = max(ended[e] for e in sent) - start
    return n / elapsed, [(ended[e] - sent[e]) * 1000 for e in sent]


def start_server(data_dir: Path, postgres_uri: str | None, app_url: str, port: int, log: Path,
                 retention: str, source: Path = ROOT) -> LockgateProcess:
    return LockgateProcess(
        args=["dev", "--no-discovery", "--no-poll", "-u", app_url, "--quiet", "--workers", "100",
              "--retention", retention],
        data_dir=data_dir, log_path=log, postgres_uri=postgres_uri, port=port, cwd=source,
    ).start(timeout=300)


def measure(server: LockgateProcess, raw: Raw, functions: dict[str, str], slug: str, events: int,
            light: int) -> dict:
    event = {"noop": "bench/noop", "three-steps": "bench/steps"}[slug]
    rate, lat = asyncio.run(burst(server.url, raw, event, functions[slug], events))
    light_lat = asyncio.run(lockgate_light(server.url, event, light))
    return {"runs_s": rate, "p50": pct(lat, 50), "p99": pct(lat, 99), "light_p50": pct(light_lat, 50),
            "light_p99": pct(light_lat, 99)}


def show(label: str, m: dict) -> None:
    print(f"    {label:<22} burst {m['runs_s']:7.1f} runs/s  p50 {m['p50']:7.1f}  p99 {m['p99']:7.1f} ms   "
          f"light p50 {m['light_p50']:6.1f}  p99 {m['light_p99']:6.1f} ms", flush=True)


class Stack:
    """One store, the server on it and an app synced to that server."""

    def __init__(self, tmp: Path, name: str, postgres_uri: str | None) -> None:
        self.tmp, self.name, self.postgres_uri = tmp, name, postgres_uri
        self.data_dir = tmp / name
        self.port, self.app_port = free_port(), free_port()
        self.app_url = f"http://127.0.0.1:{self.app_port}/api/inngest"
        self.server: LockgateProcess | None = None
        self.app: AppProcess | None = None
        self.functions: dict[str, str] = {}
        self.raw: Raw | None = None

    def start(self, retention: str, source: Path = ROOT) -> "Stack":
        if self.app is None:  # first: the server syncs its apps before it says it is listening
            # Ports taken now, not when the stack was made: others on the machine may have taken those since.
            self.port, self.app_port = free_port(), free_port()
            self.app_url = f"http://127.0.0.1:{self.app_port}/api/inngest"
            self.app = AppProcess(module="bench.bench_app", port=self.app_port,
                                  server_url=f"http://127.0.0.1:{self.port}",
                                  ledger=self.tmp / f"{self.name}.ledger").start()
        self.server = start_server(self.data_dir, self.postgres_uri, self.app_url, self.port,
                                   self.tmp / f"{self.name}.log", retention, source)
        if not self.functions:
            wait_until(lambda: httpx.get(self.server.url + "/v1/apps").json()["data"][0]["functions"], what="sync")
            apps = httpx.get(self.server.url + "/v1/apps").json()["data"]
            self.functions = {f["slug"].split("-", 1)[1]: f["id"] for f in apps[0]["functions"]}
            self.raw = Raw(self.data_dir, self.postgres_uri)
        return self

    def stop(self) -> None:
        if self.server:
            self.server.stop()

    def close(self) -> None:
        self.stop()
        if self.app:
            self.app.stop()


def ratios(rounds: list[tuple[dict, dict]], slug: str, label: str) -> None:
    """Median over rounds of (b ÷ a) for throughput and (a ÷ b) for latency: >1 means b is better."""
    burst = statistics.median(b["runs_s"] / a["runs_s"] for a, b in rounds)
    light = statistics.median(a["light_p50"] / b["light_p50"] for a, b in rounds)
    print(f"  {slug:<12} {label}: burst runs/s ratio {burst:.2f}, light-load p50 ratio {light:.2f}"
          f"  (medians of {len(rounds)} rounds)")


# -- sustained load at a fixed rate -------------------------------------------------------


def _cpu_ms(path: str) -> float:
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


class CpuSampler:
    """CPU time (user + system) used between start() and stop() by the server process and by the
    PostgreSQL backends of its database, and the share of those backends that is housekeeping's
    (its own connection). Backends are sampled every 0.5 s, so one
    that comes and goes meanwhile (an autovacuum worker) counts up to its last sample. Read from
    /proc: PostgreSQL must run on this machine; its shared WAL writer and checkpointer are left out."""

    def __init__(self, pid: int, postgres_uri: str | None) -> None:
        self.pid, self.postgres_uri = pid, postgres_uri
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._base: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._housekeeping: set[int] = set()
        self._conn = None
        if postgres_uri:
            import psycopg

            self._dbname = psycopg.conninfo.conninfo_to_dict(postgres_uri)["dbname"]
            self._conn = psycopg.connect(postgres_uri, autocommit=True, application_name=BENCH_APP_NAME)

    def _sample(self) -> dict[int, float]:
        found: dict[int, float] = {}
        if self._conn is None:
            return found
        rows = self._conn.execute("SELECT pid, application_name FROM pg_stat_activity WHERE datname = %s"
                                  " AND application_name <> %s", (self._dbname, BENCH_APP_NAME)).fetchall()
        for pid, app_name in rows:
            try:
                found[pid] = _cpu_ms(f"/proc/{pid}/stat")
            except (FileNotFoundError, PermissionError, ProcessLookupError):
                continue
            if app_name == HOUSEKEEPING_APP_NAME:
                self._housekeeping.add(pid)
        return found

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._last.update(self._sample())

    def start(self) -> None:
        self._server0 = _cpu_ms(f"/proc/{self.pid}/stat")
        self._base = self._sample()
        self._last = dict(self._base)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._last.update(self._sample())
        server = _cpu_ms(f"/proc/{self.pid}/stat") - self._server0
        used = {pid: ms - self._base.get(pid, 0.0) for pid, ms in self._last.items()}  # newcomers from 0
        database = sum(used.values())
        housekeeping = sum(used[pid] for pid in self._housekeeping if pid in used)
        if self._conn is not None:
            self._conn.close()
        return {"server_ms": server, "database_ms": database, "housekeeping_ms": housekeeping}


async def steady_load(base: str, raw: Raw, functions: dict[str, str], rate: float, seconds: float,
                      pid: int | None = None, postgres_uri: str | None = None) -> dict:
    """Open loop: events at a fixed `rate` (alternately noop and three-step) for `seconds`, each
    sent on schedule whether or not earlier ones are done. Returns event→done latency percentiles
    per function, the rate achieved, and (with `pid`) CPU per run of the server and its database
    and housekeeping's share of it, from the first event until the last run completed."""
    events = {"noop": "bench/noop", "three-steps": "bench/steps"}
    slugs = ("noop", "three-steps")
    n = max(2, int(rate * seconds))
    sent: dict[str, tuple[str, float]] = {}
    since = int(time.time() * 1000) - 1
    sampler = CpuSampler(pid, postgres_uri) if pid else None
    activity0 = httpx.get(base + "/v1/retention").json()["data"].get("housekeeping", {})
    connector = aiohttp.TCPConnector(limit=500)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def send(i: int) -> None:
            slug = slugs[i % 2]
            t = time.time()
            async with session.post(f"{base}/e/bench", json={"name": events[slug], "data": {"i": i}}) as r:
                sent[(await r.json())["ids"][0]] = (slug, t)

        if sampler:
            sampler.start()
        wall0 = time.monotonic()
        start = time.time()
        tasks = []
        for i in range(n):
            delay = wall0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(i)))
        await asyncio.gather(*tasks)
        ids = [functions[s] for s in slugs]
        count = ("SELECT COUNT(*) FROM runs WHERE function_id IN (?, ?) AND created_at >= ? AND status = 'Completed'")
        deadline = time.monotonic() + 300
        while raw.one(count, (*ids, since)) < n:
            if time.monotonic() > deadline:
                raise RuntimeError("runs of the steady load did not complete in 300 s")
            await asyncio.sleep(0.05)
    cpu = sampler.stop() if sampler else {}
    window_s = time.monotonic() - wall0
    activity1 = httpx.get(base + "/v1/retention").json()["data"].get("housekeeping", {})
    rows = raw.all("SELECT t.event_internal_id, r.ended_at FROM runs r JOIN run_triggers t ON t.run_id = r.run_id"
                   " WHERE r.function_id IN (?, ?) AND r.created_at >= ?", (*ids, since))
    ended = {event_id: ended_at / 1000 for event_id, ended_at in rows}
    out: dict = {"runs": n, "window_s": window_s, "achieved": n / (max(ended[e] for e in sent) - start)}
    for slug in slugs:
        lat = [(ended[e] - t) * 1000 for e, (s, t) in sent.items() if s == slug]
        out[slug] = {"p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99)}
    if cpu:
        out["cpu_ms_run"] = (cpu["server_ms"] + cpu["database_ms"]) / n
        out["server_ms_run"] = cpu["server_ms"] / n
        out["database_ms_run"] = cpu["database_ms"] / n
        # Its backend's CPU, plus what the server spent in its delete transactions (SQLite: all of it).
        hk_cpu_s = activity1.get("cpu_seconds", 0) - activity0.get("cpu_seconds", 0)
        out["housekeeping_ms_run"] = (cpu["housekeeping_ms"] + 1000 * hk_cpu_s) / n
    busy = activity1.get("busy_seconds", 0) - activity0.get("busy_seconds", 0)
    out["housekeeping_busy_share"] = busy / window_s
    out["runs_deleted"] = activity1.get("runs_deleted", 0) - activity0.get("runs_deleted", 0)
    return out


def show_steady(label: str, m: dict) -> None:
    cpu = (f"CPU {m['cpu_ms_run']:5.2f} ms/run (server {m['server_ms_run']:5.2f}, database"
           f" {m['database_ms_run']:5.2f}; housekeeping {m['housekeeping_ms_run']:5.2f})") if "cpu_ms_run" in m else ""
    print(f"    {label:<20} {m['achieved']:5.1f} runs/s  noop p50/p90/p99 {m['noop']['p50']:5.0f}/{m['noop']['p90']:5.0f}/"
          f"{m['noop']['p99']:5.0f} ms  3-step {m['three-steps']['p50']:5.0f}/{m['three-steps']['p90']:5.0f}/"
          f"{m['three-steps']['p99']:5.0f} ms  {cpu}  housekeeping busy {100 * m['housekeeping_busy_share']:4.1f}%"
          f" deleted {m['runs_deleted']:,}", flush=True)


def steady_round(stack: "Stack", args: argparse.Namespace) -> dict:
    """A short unmeasured warm-up at the same rate (caches, connections), then the measured window."""
    pid = stack.server.proc.pid
    asyncio.run(steady_load(stack.server.url, stack.raw, stack.functions, args.rate, args.warmup))
    return asyncio.run(steady_load(stack.server.url, stack.raw, stack.functions, args.rate, args.seconds, pid,
                                   stack.postgres_uri))


def steady_ratios(rounds: list[tuple[dict, dict]], label: str) -> None:
    """Medians over rounds of b ÷ a: CPU per run and latency percentiles (above 1: b costs more)."""
    def med(f) -> float:
        return statistics.median(f(a, b) for a, b in rounds)

    per_round = ", ".join(f"{b['cpu_ms_run'] / a['cpu_ms_run']:.3f}" for a, b in rounds)
    parts = [f"CPU/run {med(lambda a, b: b['cpu_ms_run'] / a['cpu_ms_run']):.3f} [{per_round}]"]
    for slug in ("noop", "three-steps"):
        for p in ("p50", "p99"):
            parts.append(f"{slug} {p} {med(lambda a, b: b[slug][p] / a[slug][p]):.2f}")
    hk = statistics.median(b["housekeeping_ms_run"] / b["cpu_ms_run"] for a, b in rounds)
    busy = statistics.median(b["housekeeping_busy_share"] for a, b in rounds)
    print(f"  {label}: " + ", ".join(parts) + f"; housekeeping {100 * hk:.1f}% of the CPU, busy {100 * busy:.1f}%"
          f" of the time  (medians of {len(rounds)} rounds)")


# -- disk per run --------------------------------------------------------------------------


def disk_per_run(raw: Raw, functions: dict[str, str]) -> None:
    print("\nDisk per run (real rows of the empty-store phase; averages of stored column bytes):")
    for slug in ("noop", "three-steps"):
        fid = functions[slug]
        run_cols = column_bytes(raw, "runs", "function_id = ?", (fid,))
        step_cols = column_bytes(raw, "steps", "run_id IN (SELECT run_id FROM runs WHERE function_id = ?)", (fid,))
        steps_per_run = raw.one("SELECT COUNT(*) FROM steps WHERE run_id IN (SELECT run_id FROM runs"
                                " WHERE function_id = ?)", (fid,)) / raw.one(
            "SELECT COUNT(*) FROM runs WHERE function_id = ?", (fid,))
        event_cols = column_bytes(raw, "events", "internal_id IN (SELECT t.event_internal_id FROM run_triggers t"
                                  " JOIN runs r ON r.run_id = t.run_id WHERE r.function_id = ?)", (fid,))
        row_bytes = sum(run_cols.values()) + steps_per_run * sum(step_cols.values()) + sum(event_cols.values())
        top = sorted([(f"runs.{c}", v) for c, v in run_cols.items()]
                     + [(f"steps.{c}", v * steps_per_run) for c, v in step_cols.items()]
                     + [(f"events.{c}", v) for c, v in event_cols.items()], key=lambda cv: -cv[1])[:6]
        print(f"  {slug:<12} column data {row_bytes:6.0f} B/run ({steps_per_run:.1f} steps); largest: "
              + ", ".join(f"{c} {v:.0f}" for c, v in top))


def disk_by_table(raw: Raw, functions: dict[str, str]) -> None:
    """On-disk bytes per row of each table (indexes included), and what a noop and a three-step run
    take on disk from them (a run row, its event, its trigger link, its steps)."""
    sizes = raw.table_bytes()
    rows = {t: raw.one(f"SELECT COUNT(*) FROM {t}") for t in TABLES}
    per_row = {t: sizes[t] / max(1, rows[t]) for t in TABLES}
    print("  by table: " + ", ".join(f"{t} {sizes[t] / 2**20:,.0f} MiB ({per_row[t]:,.0f} B/row)" for t in TABLES))
    for slug in ("noop", "three-steps"):
        steps = raw.one("SELECT COUNT(*) FROM steps WHERE run_id IN (SELECT run_id FROM runs WHERE function_id = ?"
                        " AND status = 'Completed' LIMIT 1)", (functions[slug],))
        on_disk = per_row["runs"] + per_row["events"] + per_row["run_triggers"] + steps * per_row["steps"]
        print(f"  {slug:<12} about {on_disk:,.0f} B on disk per run ({steps} step rows), indexes included")


# -- synthetic fill ------------------------------------------------------------------------


def fill(raw: Raw, functions: dict[str, str], total: int, chunk: int = 20_000) -> float:
    """Copy the real rows of one noop and one three-step run `total` times, with new ids."""
    templates = []
    for slug in ("noop", "three-steps"):
        fid = functions[slug]
        run = raw.all("SELECT * FROM runs WHERE function_id = ? AND status = 'Completed' LIMIT 1", (fid,))[0]
        run_id = run[raw.columns("runs").index("run_id")]
        steps = raw.all("SELECT * FROM steps WHERE run_id = ?", (run_id,))
        event_id = raw.one("SELECT event_internal_id FROM run_triggers WHERE run_id = ?", (run_id,))
        event = raw.all("SELECT * FROM events WHERE internal_id = ?", (event_id,))[0]
        templates.append((run, run_id, steps, event, event_id))
    all_cols = {t: raw.columns(t) for t in TABLES}
    cols = {t: [c for c in all_cols[t] if c != "seq"] for t in TABLES}
    statuses = ["Completed"] * 90 + ["Failed"] * 8 + ["Cancelled"] * 2
    now = int(time.time() * 1000)
    rng = random.Random(7)
    started = time.monotonic()
    if not raw.pg:
        raw.conn.execute("PRAGMA synchronous=OFF")
    for base in range(0, total, chunk):
        rows: dict[str, list[tuple]] = {t: [] for t in TABLES}
        for i in range(base, min(total, base + chunk)):
            run, run_id, steps, event, event_id = templates[i % 2]
            new_run, new_event = f"01SYN{i:021d}", f"01EVT{i:021d}"
            at = now - 6 * DAY_MS + (6 * DAY_MS * i) // total - rng.randrange(1000)
            swap = {run_id: new_run, event_id: new_event}

            def renamed(row: tuple, table: str) -> tuple:
                out = []
                for name, value in zip(all_cols[table], row):
                    if name == "seq":
                        continue
                    if isinstance(value, str):
                        for old, new in swap.items():
                            value = value.replace(old, new)
                    elif name in TIME_COLUMNS and value:
                        value = at
                    out.append(value)
                return tuple(out)

            r = list(renamed(run, "runs"))
            r[cols["runs"].index("status")] = statuses[i % 100]
            rows["runs"].append(tuple(r))
            rows["events"].append(renamed(event, "events"))
            rows["run_triggers"].append((new_event, new_run))
            rows["steps"].extend(renamed(s, "steps") for s in steps)
        _insert(raw, cols, rows)
        done = min(total, base + chunk)
        if done % (chunk * 25) == 0 or done == total:
            print(f"  filled {done:,} runs in {time.monotonic() - started:.0f}s", flush=True)
    if raw.pg:
        raw.conn.execute("ANALYZE")
    else:
        raw.conn.execute("PRAGMA synchronous=NORMAL")
        raw.conn.execute("ANALYZE")
    return time.monotonic() - started


def fill_in_database(raw: Raw, functions: dict[str, str], total: int, chunk: int = 250_000) -> float:
    """PostgreSQL: the same copies made by INSERT … SELECT over generate_series inside the database,
    many times faster than sending rows from Python. Row k of each template table is the noop
    (k = 0) or three-step (k = 1) original; ids and times are rewritten as `fill` does."""
    started = time.monotonic()
    now = int(time.time() * 1000)
    raw.conn.execute("DROP TABLE IF EXISTS tpl_runs, tpl_steps, tpl_events")
    for k, slug in enumerate(("noop", "three-steps")):
        run_id = raw.one("SELECT run_id FROM runs WHERE function_id = ? AND status = 'Completed' LIMIT 1",
                         (functions[slug],))
        event_id = raw.one("SELECT event_internal_id FROM run_triggers WHERE run_id = ?", (run_id,))
        for table, key, value in (("runs", "run_id", run_id), ("steps", "run_id", run_id),
                                  ("events", "internal_id", event_id)):
            verb = f"CREATE TEMP TABLE tpl_{table} AS" if k == 0 else f"INSERT INTO tpl_{table}"
            raw.conn.execute(f"{verb} SELECT {k} AS tpl_k, %s::text AS tpl_run, %s::text AS tpl_event, x.*"
                             f" FROM {table} x WHERE {key} = %s", (run_id, event_id, value))
    types = {t: dict(raw.all("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?",
                             (t,))) for t in TABLES}
    new_run = "('01SYN' || lpad(g.i::text, 21, '0'))"
    new_event = "('01EVT' || lpad(g.i::text, 21, '0'))"
    at = f"({now - 6 * DAY_MS} + ({6 * DAY_MS}::bigint * g.i) / {total} - (g.i * 7919) % 1000)"
    status = "(CASE WHEN g.i % 100 < 90 THEN 'Completed' WHEN g.i % 100 < 98 THEN 'Failed' ELSE 'Cancelled' END)"

    def select(table: str) -> tuple[str, str]:
        names, exprs = [], []
        for col in raw.columns(table):
            if col == "seq":
                continue
            names.append(col)
            if table == "runs" and col == "status":
                exprs.append(status)
            elif col in TIME_COLUMNS:
                exprs.append(f"CASE WHEN t.{col} IS NULL THEN NULL ELSE {at} END")
            elif types[table][col] == "text":
                exprs.append(f"replace(replace(t.{col}, t.tpl_run, {new_run}), t.tpl_event, {new_event})")
            else:
                exprs.append(f"t.{col}")
        return ", ".join(names), ", ".join(exprs)

    for base in range(0, total, chunk):
        last = min(total, base + chunk) - 1
        series = f"generate_series({base}::bigint, {last}) AS g(i) JOIN tpl_{{}} t ON t.tpl_k = g.i % 2"
        with raw.conn.transaction():
            for table in ("runs", "steps", "events"):
                names, exprs = select(table)
                raw.conn.execute(f"INSERT INTO {table} ({names}) SELECT {exprs} FROM {series.format(table)}")
            raw.conn.execute(f"INSERT INTO run_triggers (event_internal_id, run_id) SELECT {new_event}, {new_run}"
                             f" FROM generate_series({base}::bigint, {last}) AS g(i)")
        print(f"  filled {last + 1:,} runs in {time.monotonic() - started:.0f}s", flush=True)
    raw.conn.execute("DROP TABLE tpl_runs, tpl_steps, tpl_events")
    for table in TABLES:  # as autovacuum would leave them: statistics and the visibility map current
        raw.conn.execute(f"VACUUM (ANALYZE) {table}")
    return time.monotonic() - started


def _insert(raw: Raw, cols: dict[str, list[str]], rows: dict[str, list[tuple]]) -> None:
    if raw.pg:
        with raw.conn.transaction():
            cur = raw.conn.cursor()
            for table in TABLES:
                with cur.copy(f"COPY {table} ({', '.join(cols[table])}) FROM STDIN") as copy:
                    for row in rows[table]:
                        copy.write_row(row)
        return
    raw.conn.execute("BEGIN")
    for table in TABLES:
        marks = ", ".join("?" for _ in cols[table])
        raw.conn.executemany(f"INSERT INTO {table} ({', '.join(cols[table])}) VALUES ({marks})", rows[table])
    raw.conn.execute("COMMIT")


# -- dashboard queries ---------------------------------------------------------------------


def dashboard_queries(data_dir: Path, postgres_uri: str | None, functions: dict[str, str]) -> None:
    """The REST API's own query functions, on a transaction of the backend's own kind."""
    if postgres_uri:
        import psycopg
        from psycopg.rows import dict_row

        conn = psycopg.connect(postgres_uri, autocommit=True, row_factory=dict_row)
        tx = PostgresTx(conn)
    else:
        conn = _connect(str(data_dir / "lockgate.db"), synchronous="NORMAL")
        tx = SQLiteTx(conn)
    deep_seq = tx.one("SELECT MAX(seq) AS s FROM events")["s"] // 2
    catch_up_run_counts(conn, tx)
    queries = {
        "runs of a function": lambda: ops.page_runs(tx, RunFilter(function_ids=[functions["noop"]]), before=None,
                                                    limit=50),
        "runs by status (Failed)": lambda: ops.page_runs(tx, RunFilter(statuses=["Failed"]), before=None, limit=50),
        "runs by status + function": lambda: ops.page_runs(
            tx, RunFilter(statuses=["Cancelled"], function_ids=[functions["three-steps"]]), before=None, limit=50),
        "all runs": lambda: ops.page_runs(tx, RunFilter(), before=None, limit=50),
        "events by name": lambda: ops.list_events(tx, name="bench/steps", limit=50),
        "events by name, deep page": lambda: ops.list_events(tx, name="bench/steps", before_seq=deep_seq, limit=50),
        "all events": lambda: ops.list_events(tx, limit=50),
    }
    counts = {  # 5 tries each: before their own table, each read every stored run
        # The counts: Health page, /v1/stats and /metrics (the whole snapshot and its two run counts),
        # the Functions page, and the runs and function pages' counts for their filter.
        "health snapshot (whole)": lambda: [health_snapshot._read(tx, int(time.time() * 1000))],
        "runs by status (health)": lambda: list(hops.runs_by_status(tx).items()),
        "runs by function + status": lambda: list(hops.runs_by_function(tx).items()),
        "count: all runs": lambda: list(run_search.count_runs(tx, run_search.RunQuery(RunFilter())).by_status),
        "count: one function": lambda: list(run_search.count_runs(
            tx, run_search.RunQuery(RunFilter(function_ids=[functions["noop"]]))).by_status),
        "count: function + status": lambda: list(run_search.count_runs(
            tx, run_search.RunQuery(RunFilter(function_ids=[functions["noop"]], statuses=["Failed"]))).by_status),
        "count: created last day": lambda: list(run_search.count_runs(
            tx, run_search.RunQuery(RunFilter(created_from=int(time.time() * 1000) - DAY_MS))).by_status),
    }
    # The same read with the newest N finished runs left to its live part (as if housekeeping had not
    # counted them yet: a busy store's last minute or two, or a retention backlog).
    ended_from = tx.one("SELECT ended_from FROM run_counts_range")["ended_from"]
    for live in (10_000, 100_000):
        edge = tx.one("SELECT ended_at FROM runs WHERE ended_at IS NOT NULL ORDER BY ended_at DESC LIMIT 1 OFFSET ?",
                      (live,))["ended_at"]
        counts[f"by function, {live // 1000}k live"] = (
            lambda edge=edge: tx.all(hops.BY_FUNCTION_SQL, hops.by_function_params(ended_from, edge)))
    print("\nDashboard queries at this size (lists: 50 rows, newest first, rows decoded; counts: groups; 15 tries each, counts 5):")
    for label, query in [*queries.items(), *counts.items()]:
        times = []
        for _ in range(15 if label in queries else 5):
            t = time.perf_counter()
            rows = query()
            times.append((time.perf_counter() - t) * 1000)
        print(f"  {label:<28} p50 {statistics.median(times):6.1f} ms  max {max(times):6.1f} ms  ({len(rows)} rows)")
    conn.close()


def catch_up_run_counts(conn, tx) -> None:
    """What housekeeping does at its first sweep after migration 0014 (and, a few runs at a time,
    at every sweep): count the finished runs into run_counts, COUNT_BATCH per write transaction."""
    up_to = int(time.time() * 1000) - LATE_COMMIT_MS
    times = []
    while True:
        t = time.perf_counter()
        if tx.dialect == "postgres":
            with conn.transaction():
                more = hops.count_finished_runs(tx, ended_before=up_to, limit=COUNT_BATCH)
        else:
            conn.execute("BEGIN IMMEDIATE")
            more = hops.count_finished_runs(tx, ended_before=up_to, limit=COUNT_BATCH)
            conn.execute("COMMIT")
        times.append((time.perf_counter() - t) * 1000)
        if more is None:
            break
    held = tx.one("SELECT COALESCE(SUM(n), 0) AS n FROM run_counts")["n"]
    print(f"\nrun_counts brought up to date: {len(times)} write transactions of up to {COUNT_BATCH:,} runs,"
          f" {sum(times) / 1000:.1f} s in all, p50 {statistics.median(times):.0f} ms, longest {max(times):.0f} ms;"
          f" {held:,} finished runs counted")


def query_plans(raw: Raw, functions: dict[str, str]) -> None:
    explain = "EXPLAIN " if raw.pg else "EXPLAIN QUERY PLAN "
    fid = functions["noop"]
    plans = {
        "runs of a function": ("SELECT run_id FROM runs WHERE function_id = ? ORDER BY created_at DESC LIMIT 50", (fid,)),
        "runs by status": ("SELECT run_id FROM runs WHERE status = ? ORDER BY created_at DESC LIMIT 50", ("Failed",)),
        "all runs": ("SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 50", ()),
        "events by name": ("SELECT seq FROM events WHERE name = ? ORDER BY seq DESC LIMIT 50", ("bench/steps",)),
        "runs by function+status": (hops.BY_FUNCTION_SQL, hops.by_function_params(*raw.all(
            "SELECT ended_from, ended_before FROM run_counts_range")[0])),
    }
    print("\nIndexes the plans use:")
    for label, (sql, params) in plans.items():
        plan = " | ".join(str(r[-1]) for r in raw.all(explain + sql, params))
        print(f"  {label:<20} {plan if label == 'runs by function+status' else plan[:150]}")


def _relation_counters(raw: Raw) -> dict[str, tuple[int, int]]:
    """Blocks read from outside shared_buffers and found in it, per table and per index."""
    rows = raw.all("SELECT relname, COALESCE(heap_blks_read, 0), COALESCE(heap_blks_hit, 0) FROM pg_statio_user_tables"
                   " UNION ALL SELECT indexrelname, idx_blks_read, idx_blks_hit FROM pg_statio_user_indexes")
    return {name: (read, hit) for name, read, hit in rows}


def wal_round(stack: "Stack", slug: str, events: int) -> dict:
    """One burst, and what it cost per run in each table and index of the store: WAL bytes (full-page
    images apart, from pg_walinspect's records between two LSNs, kept to this database's relations)
    and blocks read from outside shared_buffers / found in it. Other databases' WAL is left out, so
    the figures hold on a shared server."""
    raw = stack.raw
    raw.conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
    raw.conn.execute("SELECT pg_stat_clear_snapshot()")
    before, lsn0 = _relation_counters(raw), raw.one("SELECT pg_current_wal_flush_lsn()")
    rate, _ = asyncio.run(burst(stack.server.url, raw, {"noop": "bench/noop", "three-steps": "bench/steps"}[slug],
                                stack.functions[slug], events))
    time.sleep(0.5)  # counters are sent to the statistics system when a backend goes idle
    raw.conn.execute("SELECT pg_stat_clear_snapshot()")
    after, lsn1 = _relation_counters(raw), raw.one("SELECT pg_current_wal_flush_lsn()")
    try:
        wal = raw.all(
            "WITH w AS (SELECT record_length, fpi_length, substring(block_ref from 'rel [0-9]+/[0-9]+/([0-9]+)') AS rel,"
            " (regexp_match(block_ref, 'rel [0-9]+/([0-9]+)/'))[1]::oid AS db"
            " FROM pg_get_wal_records_info(?::pg_lsn, ?::pg_lsn) WHERE strpos(block_ref, 'rel ') > 0)"
            " SELECT COALESCE(c.relname, 'relfilenode ' || w.rel), COUNT(*), SUM(record_length - fpi_length),"
            " SUM(fpi_length) FROM w LEFT JOIN pg_class c ON c.relfilenode = w.rel::oid"
            " WHERE w.db = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " GROUP BY 1", (lsn0, lsn1))
    except Exception as exc:  # a busy server may recycle the segments first: this round has blocks only
        print(f"    (no WAL figures this round: {str(exc).splitlines()[0]})", flush=True)
        wal = []
    per_rel = {name: {"records": n / events, "wal": int(b) / events, "fpi": int(f) / events} for name, n, b, f in wal}
    for name, (read, hit) in after.items():
        r0, h0 = before.get(name, (0, 0))
        if read - r0 or hit - h0:
            per_rel.setdefault(name, {"records": 0.0, "wal": 0.0, "fpi": 0.0})
            per_rel[name].update(read=(read - r0) / events, hit=(hit - h0) / events)
    return {"runs_s": rate, "rels": per_rel, "wal_read": bool(wal)}


def wal_part(empty: "Stack", full: "Stack", args: argparse.Namespace) -> None:
    """Where a run's WAL and buffer traffic go, per table and index, on the empty and the full store."""
    print(f"\nWAL and blocks per run, by relation (bursts of {args.events}, {args.rounds} rounds, summed):")
    for slug in ("noop", "three-steps"):
        total: dict[str, dict[str, dict[str, float]]] = {"empty": {}, "full": {}}
        wal_rounds = {"empty": 0, "full": 0}
        for r in range(args.rounds):
            for stack in ((empty, full) if r % 2 == 0 else (full, empty)):
                got = wal_round(stack, slug, args.events)
                print(f"  round {r + 1} {slug} {stack.name}: {got['runs_s']:.1f} runs/s", flush=True)
                wal_rounds[stack.name] += got["wal_read"]
                for name, figures in got["rels"].items():
                    into = total[stack.name].setdefault(name, {})
                    for key, value in figures.items():
                        into[key] = into.get(key, 0.0) + value
        for name in total:  # means: WAL over the rounds whose WAL could be read, blocks over all
            for figures in total[name].values():
                for key in figures:
                    figures[key] /= args.rounds if key in ("read", "hit") else max(1, wal_rounds[name])
        print(f"  {slug}, per run (mean of rounds; WAL read in {wal_rounds['empty']} | {wal_rounds['full']}):"
              f" WAL bytes without / with full-page images, records, blocks read from outside shared_buffers,"
              f" blocks hit; empty | full")
        names = sorted(set(total["empty"]) | set(total["full"]),
                       key=lambda n: -sum(total[s].get(n, {}).get("wal", 0) + total[s].get(n, {}).get("fpi", 0)
                                          for s in total))
        sums = {s: {k: sum(v.get(k, 0) for v in total[s].values()) for k in ("wal", "fpi", "records", "read", "hit")}
                for s in total}
        for name, row in [(n, {s: total[s].get(n, {}) for s in total}) for n in names] + [("(all)", sums)]:
            cells = [f"{row[s].get('wal', 0):7.0f} {row[s].get('wal', 0) + row[s].get('fpi', 0):7.0f}"
                     f" {row[s].get('records', 0):5.1f} {row[s].get('read', 0):6.2f} {row[s].get('hit', 0):6.1f}"
                     for s in ("empty", "full")]
            print(f"    {name:<34} {cells[0]} | {cells[1]}")


# -- main ----------------------------------------------------------------------------------


PARTS = ("versus", "queries", "retention", "steady-retention", "steady-versus", "wal")
ALIASES = {"steady": ("steady-retention", "steady-versus")}


def steady_parts(empty: Stack, full: Stack, args: argparse.Namespace, figures: dict[str, list],
                 parts: set[str]) -> None:
    """Retention off against sweeping a backlog (the full store restarted with --retention 5d), then
    the empty store against the full one, each under --rate events/s for --seconds, rounds A/B/B/A."""
    if "steady-retention" in parts:
        steady_retention(full, args, figures)
    if "steady-versus" in parts:
        steady_versus(empty, full, args, figures)


def steady_retention(full: Stack, args: argparse.Namespace, figures: dict[str, list]) -> None:
    backlog_sql = "SELECT COUNT(*) FROM runs WHERE ended_at < ?"
    print(f"\nSustained load, {args.rate:g} events/s (half noop, half three-step) for {args.seconds:g} s a round"
          f" after {args.warmup:g} s of warm-up; full store, retention off against sweeping (--retention 5d):",
          flush=True)
    conditions = [("retention off", "0", ROOT), ("sweeping", "5d", ROOT)]
    if args.baseline_source:  # the same backlog swept by an earlier version's housekeeping
        conditions.append(("sweeping, baseline", "5d", Path(args.baseline_source).resolve()))
    full.stop()
    for r in range(args.rounds):
        got: dict[str, dict] = {}
        turn = r % len(conditions)  # each condition takes each place in the order in turn
        for label, retention, source in conditions[turn:] + conditions[:turn]:
            full.stop()
            full.start(retention, source)
            got[label] = steady_round(full, args)
        print(f"  round {r + 1}")
        for label, _, _ in conditions:
            show_steady(label, got[label])
        for label, _, _ in conditions[1:]:
            figures.setdefault(f"steady|{label} ÷ retention off", []).append((got["retention off"], got[label]))
    left = full.raw.one(backlog_sql, (int(time.time() * 1000) - 5 * DAY_MS,))
    print(f"  backlog left: {left:,} runs older than 5 days", flush=True)
    full.stop()


def steady_versus(empty: Stack, full: Stack, args: argparse.Namespace, figures: dict[str, list]) -> None:
    full.stop()
    empty.start("0")
    full.start("0")
    print(f"\nSustained load, {args.rate:g} events/s, empty store against {args.runs:,} finished runs (retention off):", flush=True)
    for r in range(args.rounds):
        order = (empty, full) if r % 2 == 0 else (full, empty)
        got = {stack.name: steady_round(stack, args) for stack in order}
        print(f"  round {r + 1}")
        show_steady("empty", got["empty"])
        show_steady("full", got["full"])
        figures.setdefault("steady|full ÷ empty", []).append((got["empty"], got["full"]))
    empty.stop()


def bench_backend(backend: str, args: argparse.Namespace) -> dict[str, list]:
    """Every part asked for, on one backend. Returns the per-round figures for the summary."""
    tmp = Path(tempfile.mkdtemp(prefix="lockgate-bigstore-", dir=os.environ.get("BENCH_DIR")))
    # --keep: the full store lives in DIR/<backend> (its PostgreSQL database named in postgres-uri
    # there) and is filled once; later runs with the same --runs use it as it is.
    keep = Path(args.keep).resolve() / backend if args.keep else None
    filled_mark = keep / f"filled-{args.runs}" if keep else None
    reuse = filled_mark is not None and filled_mark.exists()
    uris: list[str] = []  # dropped at the end
    full_uri = None
    if backend == "postgres":
        from tests import pgtools

        os.environ.setdefault("LOCKGATE_TEST_DB_TAG", "bigstore")  # tests/pgtools.py puts it in the names
        uris = [pgtools.create_database()]
        if reuse:
            full_uri = (keep / "postgres-uri").read_text().strip()
        else:
            full_uri = pgtools.create_database()
            if keep is None:
                uris.append(full_uri)
    if keep and not reuse:
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir(parents=True)
        if full_uri:
            (keep / "postgres-uri").write_text(full_uri + "\n")
    parts = {p for name in args.parts.split(",") for p in ALIASES.get(name, (name,))}
    print(f"\n=== {backend}: {args.runs:,} synthetic runs, burst {args.events}, light {args.light},"
          f" {args.rounds} interleaved rounds, parts {args.parts}"
          + (f"; the store kept in {keep} from an earlier run" if reuse else ""), flush=True)
    empty = Stack(tmp, "empty", uris[0] if uris else None)
    full = Stack(keep or tmp, "full", full_uri)
    figures: dict[str, list] = {}
    try:
        if reuse:
            full.start("0")
            full.stop()
        else:
            # Real rows first: the templates of the synthetic ones, and the disk-per-run figures.
            full.start("0")
            for slug in ("noop", "three-steps"):
                measure(full.server, full.raw, full.functions, slug, 200, 5)
            disk_per_run(full.raw, full.functions)
            full.stop()
            before = full.raw.database_bytes()
            print(f"\nFilling {args.runs:,} finished runs...", flush=True)
            seconds = (fill_in_database if full.raw.pg else fill)(full.raw, full.functions, args.runs)
            after = full.raw.database_bytes()
            print(f"  {args.runs:,} runs in {seconds:.0f}s; store grew {(after - before) / 2**20:,.0f} MiB:"
                  f" {(after - before) / args.runs:,.0f} bytes per run (half noop, half three-step), indexes"
                  f" included")
            if filled_mark:
                filled_mark.touch()
        disk_by_table(full.raw, full.functions)

        if "versus" in parts:  # empty against full, in alternating order, servers up side by side
            empty.start("0")
            full.start("0")
            print(f"\nEmpty store against {args.runs:,} finished runs (retention off):")
            for r in range(args.rounds):
                for slug in ("noop", "three-steps"):
                    order = (empty, full) if r % 2 == 0 else (full, empty)
                    got = {stack.name: measure(stack.server, stack.raw, stack.functions, slug, args.events,
                                               args.light) for stack in order}
                    print(f"  round {r + 1} {slug}")
                    show("empty", got["empty"])
                    show("full", got["full"])
                    figures.setdefault(f"{slug}|full ÷ empty", []).append((got["empty"], got["full"]))
            empty.stop()
        if parts & {"steady-retention", "steady-versus"}:  # the same comparisons under a fixed-rate load
            steady_parts(empty, full, args, figures, parts)
        if "wal" in parts and full.raw.pg:
            full.stop()  # earlier parts may have left it serving with retention on
            empty.start("0")
            full.start("0")
            wal_part(empty, full, args)
            empty.stop()
        if "queries" in parts:
            dashboard_queries(full.data_dir, full.postgres_uri, full.functions)
            query_plans(full.raw, full.functions)
        if "retention" in parts:  # retention off against housekeeping deleting runs older than 5 days
            print("\nFull store, retention off against housekeeping deleting its backlog (--retention 5d):")
            backlog_sql = "SELECT COUNT(*) FROM runs WHERE ended_at < ?"  # runs_ended: quick at any size
            for r in range(args.rounds):
                got: dict[str, dict] = {}
                for retention in (("0", "5d") if r % 2 == 0 else ("5d", "0")):
                    full.stop()
                    backlog = full.raw.one(backlog_sql, (int(time.time() * 1000) - 5 * DAY_MS,))
                    full.start(retention)
                    started = time.monotonic()
                    got[retention] = {slug: measure(full.server, full.raw, full.functions, slug, args.events,
                                                    args.light) for slug in ("noop", "three-steps")}
                    if retention != "0":
                        deleted = backlog - full.raw.one(backlog_sql, (int(time.time() * 1000) - 5 * DAY_MS,))
                        print(f"  round {r + 1}: housekeeping deleted {deleted:,} of {backlog:,} runs past retention"
                              f" in the {time.monotonic() - started:.0f} s measured", flush=True)
                for slug in ("noop", "three-steps"):
                    print(f"  round {r + 1} {slug}")
                    show("retention off", got["0"][slug])
                    show("sweeping", got["5d"][slug])
                    figures.setdefault(f"{slug}|sweeping ÷ retention off", []).append((got["0"][slug],
                                                                                       got["5d"][slug]))
            left = full.raw.one(backlog_sql, (int(time.time() * 1000) - 5 * DAY_MS,))
            print(f"  backlog left at the end: {left:,} runs older than 5 days")
    finally:
        empty.close()
        full.close()
        shutil.rmtree(tmp, ignore_errors=True)
        if uris:
            from tests.pgtools import drop_database

            for uri in uris:
                drop_database(uri)
        if keep:
            print(f"  the full store is kept in {keep}" + (f" (database {full_uri})" if full_uri else "")
                  + "; delete it (and drop that database) when done", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="sqlite")
    parser.add_argument("--runs", type=int, default=1_000_000, help="synthetic finished runs to fill in")
    parser.add_argument("--events", type=int, default=300, help="burst size")
    parser.add_argument("--light", type=int, default=60, help="light-load runs")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per comparison")
    parser.add_argument("--rate", type=float, default=30.0, help="steady: events per second (below saturation)")
    parser.add_argument("--seconds", type=float, default=12.0, help="steady: measured seconds per round")
    parser.add_argument("--warmup", type=float, default=3.0, help="steady: unmeasured seconds before each round")
    parser.add_argument("--baseline-source", metavar="DIR",
                        help="steady-retention: also sweep with the lockgate package in DIR (an earlier version, e.g. a"
                             " `git worktree add DIR <commit>`), in the same interleaved rounds")
    parser.add_argument("--keep", metavar="DIR",
                        help="keep the filled store in DIR/<backend> (PostgreSQL: the database named in"
                             " DIR/postgres/postgres-uri) and, on later runs with the same --runs, measure it"
                             " without filling again")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated, of {', '.join(PARTS)} (default all)")
    args = parser.parse_args()
    unknown = set(args.parts.split(",")) - set(PARTS) - set(ALIASES)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
    print(f"lockgate big-store bench — {', '.join(backends)}, {os.cpu_count()} cores (shared machine,"
          f" load average {os.getloadavg()[0]:.1f} at start)", flush=True)
    results = {}
    for backend in backends:
        try:
            results[backend] = bench_backend(backend, args)
        except Exception as exc:  # one backend's failure still leaves the other's figures
            print(f"\n{backend} stopped: {exc!r}", flush=True)
    print(f"\nRatios (1.0 = no change; burst and light: above 1 = the second is faster; steady: b ÷ a, above 1 ="
          f" the second costs more); load average now {os.getloadavg()[0]:.1f}:")
    for backend, figures in results.items():
        for key, rounds in figures.items():
            slug, label = key.split("|")
            if slug == "steady":
                steady_ratios(rounds, f"{backend} steady {label}")
            else:
                ratios(rounds, f"{backend} {slug}", label)


if __name__ == "__main__":
    main()
