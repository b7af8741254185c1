"""Runs-page benchmark: how fast do the dashboard's run list and counts answer with many stored runs?

    .venv/bin/python bench/dashboard.py [--runs 100000] [--repeat 30] [--backend sqlite|postgres|both]

Fills a fresh store (SQLite on disk, or a fresh PostgreSQL database on LOCKGATE_TEST_POSTGRES)
with --runs synthetic runs of 8 functions in 2 apps (rows inserted directly: the engine is not
what is measured), then starts `lockgate dev` on it and times `GET /runs?...` — the whole page:
filter parsing, the keyset page, the status counts, the explanations and the HTML — for each
filter the page offers. It then drops the indexes of migration 0004 and times the same pages
again, to show what they buy. Prints median and p95 per filter, in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import pct  # noqa: E402
from lockgate.models import Function  # noqa: E402
from lockgate.store import operations as ops  # noqa: E402
from lockgate.store.base import Store  # noqa: E402
from tests import pgtools  # noqa: E402
from tests.conftest import LockgateProcess  # noqa: E402

STATUSES = ["Completed"] * 80 + ["Failed"] * 10 + ["Cancelled"] * 5 + ["Running"] * 4 + ["Queued"]
FUNCTIONS = [(f"app{a}", f"app{a}-fn{f}") for a in range(2) for f in range(4)]
INDEXES_0004 = ["runs_created_keyset", "runs_status_keyset", "runs_function_keyset", "runs_function_status_keyset",
                "runs_ended", "runs_correlation"]
BATCH = 5000


def _fill(tx, start: int, count: int, fn_ids: list[str], now: int) -> None:
    rng = random.Random(start)
    rows = []
    for i in range(start, start + count):
        fn = rng.randrange(len(FUNCTIONS))
        status = rng.choice(STATUSES)
        created = now - (200_000 - i) * 500  # one run every 0.5 s, newest last
        ended = created + rng.randrange(5, 3000) if status in ("Completed", "Failed", "Cancelled") else None
        event = {"name": "bench/event", "data": {"user_id": f"u{rng.randrange(1000)}", "i": i}, "id": f"e{i}",
                 "ts": created, "user": {}}
        rows.append((f"run{i:08d}", fn_ids[fn], FUNCTIONS[fn][1], 1, status, orjson.dumps([event]).decode(),
                     orjson.dumps([f"e{i}"]).decode(), None, -1, 0, "[]", "[]", None, None, None, None,
                     created, created, ended))
    tx.executemany(f"INSERT INTO runs ({ops._RUN_COLUMNS}) VALUES ({', '.join('?' * 19)})", rows)


async def fill_store(store: Store, runs: int) -> None:
    await store.open()
    try:
        now = int(time.time() * 1000)
        functions = [Function(id=f"fn-{slug}", slug=slug, app_name=app, name=slug, url="http://127.0.0.1:1/x",
                              config={"triggers": [{"event": "bench/event"}]}) for app, slug in FUNCTIONS]

        def setup(tx):
            for app in sorted({a for a, _ in FUNCTIONS}):
                tx.execute("INSERT INTO apps (name, url, created_at) VALUES (?, ?, ?)", (app, f"http://{app}", now))
                ops.replace_app_functions(tx, app, [f for f in functions if f.app_name == app], now)

        await store.write(setup)
        ids = [f.id for f in functions]
        for start in range(0, runs, BATCH):
            await store.write(_fill, start, min(BATCH, runs - start), ids, now)
    finally:
        await store.close()


def analyze(uri: str | None, data_dir: Path) -> None:
    """Planner statistics and (PostgreSQL) the visibility map, as autovacuum would have them on a live
    database: without them a freshly bulk-loaded table is read the slow way."""
    if uri:
        import psycopg

        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE runs")
    else:
        import sqlite3

        with sqlite3.connect(next(data_dir.glob("*.db"))) as conn:
            conn.execute("ANALYZE")


def drop_indexes(store: Store) -> None:
    async def drop() -> None:
        await store.open()
        try:
            def run(tx):
                for name in INDEXES_0004:
                    tx.execute(f"DROP INDEX IF EXISTS {name}")
            await store.write(run)
        finally:
            await store.close()
    asyncio.run(drop())


PAGES = [
    ("newest 50", "/runs"),
    ("status=Failed", "/runs?status=Failed"),
    ("function", "/runs?function=app0-fn1"),
    ("function + status", "/runs?function=app1-fn2&status=Cancelled"),
    ("app", "/runs?app=app1"),
    ("time range (1 h)", None),  # filled in with times near the newest runs
    ("page 20 (cursor)", None),
    ('expression user_id == "u7"', '/runs?if=event.data.user_id == "u7"'),
]


def time_pages(base: str, repeat: int) -> list[tuple[str, float, float]]:
    out = []
    with httpx.Client(base_url=base, timeout=60) as http:
        newest = http.get("/v1/runs", params={"limit": 1}).json()["data"][0]
        to = newest["created_at"][:16]
        hour_before = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.mktime(time.strptime(to, "%Y-%m-%dT%H:%M")) -
                                                                   3600 - time.timezone))
        cursor = None
        for _ in range(19):  # walk 19 pages of 50 to get the cursor of page 20
            params = {"limit": 50, **({"cursor": cursor} if cursor else {})}
            cursor = http.get("/v1/runs", params=params).json()["metadata"]["cursor"]
        for label, path in PAGES:
            if label.startswith("time range"):
                path = f"/runs?from={hour_before}&to={to}"
            elif label.startswith("page 20"):
                path = f"/runs?cursor={cursor}"
            for _ in range(3):  # warm-up: template compile, connection pool, page cache
                assert http.get(path).status_code == 200, path
            samples = []
            for _ in range(repeat):
                t = time.perf_counter()
                response = http.get(path)
                samples.append((time.perf_counter() - t) * 1000)
                assert response.status_code == 200 and "<table" in response.text, path
            out.append((label, statistics.median(samples), pct(samples, 95)))
    return out


def bench_backend(backend: str, runs: int, repeat: int) -> dict[str, list[tuple[str, float, float]]]:
    tmp = Path(tempfile.mkdtemp(prefix="lockgate-bench-dashboard-"))
    uri = pgtools.create_database() if backend == "postgres" else None
    try:
        if uri:
            from lockgate.store.postgres import PostgresStore
            make = lambda: PostgresStore(uri, pool_size=4)  # noqa: E731
        else:
            from lockgate.store.sqlite import SQLiteStore
            make = lambda: SQLiteStore(str(tmp / "data"))  # noqa: E731
        t = time.perf_counter()
        asyncio.run(fill_store(make(), runs))
        analyze(uri, tmp / "data")
        print(f"[{backend}] stored {runs} runs in {time.perf_counter() - t:.1f} s", flush=True)
        results = {}
        for label in ("with 0004 indexes", "without them"):
            if label == "without them":
                drop_indexes(make())
                analyze(uri, tmp / "data")
            server = LockgateProcess(args=["dev", "--no-discovery", "--no-poll", "--log-level", "warning"],
                                     data_dir=tmp / "data", log_path=tmp / "lockgate.log", postgres_uri=uri).start()
            try:
                results[label] = time_pages(server.url, repeat)
            finally:
                server.stop()
        return results
    finally:
        if uri:
            pgtools.drop_database(uri)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        results = bench_backend(backend, args.runs, args.repeat)
        print(f"\n{backend}, {args.runs} runs, GET /runs page (HTML), ms over {args.repeat} requests")
        print(f"| filter | median | p95 | median without 0004 indexes | p95 without |")
        print("|---|---:|---:|---:|---:|")
        for (label, med, p95), (_, med0, p950) in zip(results["with 0004 indexes"], results["without them"]):
            print(f"| {label} | {med:.1f} | {p95:.1f} | {med0:.1f} | {p950:.1f} |")


if __name__ == "__main__":
    main()
