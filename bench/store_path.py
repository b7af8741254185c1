"""The PostgreSQL store's hot path in process, without HTTP or an app: an event ingested (its first
call leased), three steps settled, the run completed, as the engine's transactions do them.

    .venv/bin/python bench/store_path.py [--compare-with DIR] [--rounds 2] [--light 200] [--burst 500]

Prints, per run, this process's CPU (the engine's and psycopg's work, no HTTP), the CPU of the
database backends serving it, round trips (`PostgresStore.round_trips`) and the p50 of a run;
`--light` runs one at a time, `--burst` 100 at a time. With `--compare-with` (a folder holding
another version's `lockgate/`), rounds alternate between that version and this one, each in a
process of its own on a fresh database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


async def measure(light: int, burst: int, steps: int) -> None:
    import psycopg

    from lockgate.engine import interpreter
    from lockgate.engine.ingest import Handoff, ingest_in_tx, parse_events
    from lockgate.engine.registry import Registry
    from lockgate.models import Function
    from lockgate.protocol.sdk_response import FunctionCompleted, Op, OpsReturned
    from lockgate.store import operations as ops
    from lockgate.store.postgres import PostgresStore
    from tests import pgtools

    uri = pgtools.create_database(pgtools.ADMIN_URI)
    store = PostgresStore(uri)
    await store.open()
    fn = Function(id="fid", slug="bench-steps", app_name="app", name="steps", url="http://127.0.0.1:1/api?fnId=x",
                  config={"id": "steps", "triggers": [{"event": "bench/steps"}]})
    await store.write(lambda tx: ops.upsert_function(tx, fn, 0))
    registry = Registry.build([fn])
    ctx = interpreter.EngineContext(registry=registry, handoff=Handoff(owner="bench", lease_ms=60_000, limit=1))

    async def one_run(i: int) -> None:
        now = int(time.time() * 1000)
        events = parse_events({"name": "bench/steps", "data": {"i": i}}, seed=None, now=now)
        ingested = await store.write(lambda tx: ingest_in_tx(tx, events, registry, now=now, handoff=ctx.handoff))
        job, run = ingested.leased[0]
        memos: dict = {}
        for s in range(steps + 1):
            result = (OpsReturned([Op(id=f"step{s}", op="StepRun", display_name=f"step {s}", data={"n": s})],
                                  request_version=2) if s < steps else FunctionCompleted(output={"done": True}))
            sent = (run.stack, memos)
            settled = await store.write(lambda tx: interpreter.settle_call(
                tx, ctx, job, fn, result, started_at=now, now=int(time.time() * 1000), sent=sent))
            if settled.next_jobs:
                job, (run, memos) = settled.next_jobs[0], settled.next_state

    dbname = psycopg.conninfo.conninfo_to_dict(uri)["dbname"]
    admin = psycopg.connect(uri, autocommit=True)

    def backends() -> dict[int, float]:
        pids = [r[0] for r in admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s"
                                            " AND pid <> pg_backend_pid()", (dbname,))]
        return {pid: cpu_ms(pid) for pid in pids}

    for i in range(50):  # warm up: connections, prepared statements
        await one_run(i)
    await asyncio.gather(*(one_run(i) for i in range(100)))
    for label, n, at_once in (("light", light, 1), ("burst", burst, 100)):
        db0, cpu0, trips0, t0 = backends(), time.process_time(), store.round_trips, time.perf_counter()
        latencies: list[float] = []
        gate = asyncio.Semaphore(at_once)

        async def timed(i: int) -> None:
            async with gate:
                t = time.perf_counter()
                await one_run(i)
                latencies.append((time.perf_counter() - t) * 1000)

        await asyncio.gather(*(timed(i) for i in range(n)))
        wall = time.perf_counter() - t0
        db = sum(ms - db0.get(pid, 0.0) for pid, ms in backends().items())
        latencies.sort()
        print(f"{label:<6} {n / wall:>7.0f} {(time.process_time() - cpu0) * 1000 / n:>11.2f} {db / n:>10.2f}"
              f" {(store.round_trips - trips0) / n:>7.1f} {latencies[len(latencies) // 2]:>8.1f}", flush=True)
    await store.close()
    admin.close()
    pgtools.drop_database(uri, pgtools.ADMIN_URI)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compare-with", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--light", type=int, default=200)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--root", type=Path, default=None, help=argparse.SUPPRESS)  # one measurement, this tree
    args = parser.parse_args()
    if args.root is not None:
        sys.path.insert(0, str(args.root))
        sys.path.insert(1, str(ROOT))  # tests.pgtools
        import lockgate

        assert Path(lockgate.__file__).resolve().is_relative_to(args.root.resolve()), lockgate.__file__
        asyncio.run(measure(args.light, args.burst, args.steps))
        return
    versions = [("this", ROOT)] if args.compare_with is None else [("other", args.compare_with), ("this", ROOT)]
    print(f"store hot path, PostgreSQL: an event, {args.steps} steps, completion per run; load average"
          f" {os.getloadavg()[0]:.1f} at the start")
    print(f"{'round':<6}{'version':<8}{'load':<6}{'mode':<6} {'runs/s':>7} {'CPU ms/run':>11} {'db ms/run':>10}"
          f" {'RT/run':>7} {'p50 ms':>8}")
    for round_no in range(1, args.rounds + 1):
        order = versions if round_no % 2 else list(reversed(versions))
        for name, root in order:
            out = subprocess.run([sys.executable, __file__, "--root", str(root), "--light", str(args.light),
                                  "--burst", str(args.burst), "--steps", str(args.steps)],
                                 capture_output=True, text=True, cwd=root, check=True).stdout
            for line in out.splitlines():
                print(f"{round_no:<6}{name:<8}{os.getloadavg()[0]:<6.1f}{line}", flush=True)


if __name__ == "__main__":
    main()
