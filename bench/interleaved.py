"""Interleaved A/B of two lockgate versions (or one version with two settings) on PostgreSQL.

    .venv/bin/python bench/interleaved.py --compare-with /tmp/old [--events 2000] [--rounds 6]
                                          [--function noop|three-steps] [--mode start|dev]
    .venv/bin/python bench/interleaved.py --env-b LOCKGATE_REALTIME_PROGRESS=0   # this version, a setting off

Both stacks (server, its own fresh database, the bench app) stay up for the whole run and take
turns, A B B A A B …, one burst each: load that drifts on a shared machine weighs on both sides
alike. Prints every burst's runs/s and CPU per run (server, and the database backends serving
it), then the medians. `bench/run.py --compare-with` runs one version after the other instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import CpuMeter, api_headers, lockgate_burst, start_bench_stack  # noqa: E402
from tests import pgtools  # noqa: E402

EVENTS = {"noop": "bench/noop", "three-steps": "bench/steps"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compare-with", type=Path, default=None,
                        help="side A: the folder holding another version's lockgate/ package (default: this one)")
    parser.add_argument("--env-b", action="append", default=[], help="NAME=value set for side B's server only")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=6, help="bursts per side")
    parser.add_argument("--function", default="noop", choices=sorted(EVENTS))
    parser.add_argument("--mode", default="start", choices=("start", "dev"))
    args = parser.parse_args()
    sides = {"A": ((args.compare_with or ROOT).resolve(), {}),
             "B": (ROOT, dict(item.split("=", 1) for item in args.env_b))}
    event, auth = EVENTS[args.function], api_headers(args.mode)
    stacks, databases = {}, []
    print(f"A: {sides['A'][0]}  B: {sides['B'][0]} {sides['B'][1] or ''}; {args.function}, {args.events} events"
          f" per burst, lockgate {args.mode}, PostgreSQL, {os.cpu_count()} cores")
    try:
        for name, (root, env) in sides.items():
            uri = pgtools.create_database(pgtools.ADMIN_URI)
            databases.append(uri)
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)  # the server inherits the environment
            try:
                stacks[name] = start_bench_stack("--workers", "100", postgres_uri=uri, server_root=root,
                                                 mode=args.mode), uri
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
            asyncio.run(lockgate_burst(stacks[name][0][0].url, event, 200, headers=auth))  # warm up
        results: dict[str, list[tuple[float, float, float]]] = {"A": [], "B": []}
        for round_no in range(args.rounds):
            for name in ("A", "B") if round_no % 2 == 0 else ("B", "A"):
                (server, _), uri = stacks[name]
                meter = CpuMeter([server.proc.pid], uri)
                meter.start()
                rate, _ = asyncio.run(lockgate_burst(server.url, event, args.events, when_done=meter.stop,
                                                     headers=auth))
                results[name].append((rate, meter.server_ms / args.events, meter.database_ms / args.events))
                print(f"{name}  {rate:7.0f} runs/s  server CPU {results[name][-1][1]:.2f} ms/run  database CPU"
                      f" {results[name][-1][2]:.2f} ms/run  load average {os.getloadavg()[0]:.1f}", flush=True)
        for name, rows in results.items():
            print(f"{name} median: {statistics.median(r[0] for r in rows):.0f} runs/s, server CPU"
                  f" {statistics.median(r[1] for r in rows):.2f} ms/run, database CPU"
                  f" {statistics.median(r[2] for r in rows):.2f} ms/run")
    finally:
        for (server, app), _ in stacks.values():
            app.stop()
            server.stop()
        for uri in databases:
            pgtools.drop_database(uri, pgtools.ADMIN_URI)


if __name__ == "__main__":
    main()
