"""Interleaved A/B of two lockgate versions (or this version with a setting changed) on
PostgreSQL: two servers side by side, each on its own fresh database with its own app, taking
turns (before, after, after, before, …) so that load from other work on the machine weighs on
both alike. `bench/run.py --compare-with` runs one version after the other instead.

    .venv/bin/python bench/interleaved.py --compare-with DIR [--rounds 3] [--events 1000] [--steps-events 300]
    .venv/bin/python bench/interleaved.py --env-after LOCKGATE_REALTIME_PROGRESS=0 --function noop --light 0

Prints, per round, version and function: burst runs/s, server CPU and database CPU per run, light
p50 / p99 (with --light > 0); then the medians over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench.run as br  # noqa: E402
from tests import pgtools  # noqa: E402


def start_stack(root: Path, env: dict[str, str], mode: str):
    """A server of the lockgate at `root` (with `env` added to its environment) and its app."""
    uri = pgtools.create_database(pgtools.ADMIN_URI)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # the server inherits the environment
    try:
        server, app = br.start_bench_stack("--workers", "100", postgres_uri=uri, mode=mode, server_root=root)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return server, app, uri


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compare-with", type=Path, default=None,
                        help="'before': the folder holding another version's lockgate/ package (default: this one)")
    parser.add_argument("--env-after", action="append", default=[], help="NAME=value for the 'after' server only")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=1000, help="noop burst")
    parser.add_argument("--steps-events", type=int, default=300, help="three-step burst")
    parser.add_argument("--light", type=int, default=100, help="noop runs one at a time (0: none)")
    parser.add_argument("--steps-light", type=int, default=40)
    parser.add_argument("--function", choices=("noop", "three-steps", "both"), default="both")
    parser.add_argument("--mode", choices=("start", "dev"), default="start")
    args = parser.parse_args()
    sides = {"before": ((args.compare_with or ROOT).resolve(), {}),
             "after": (ROOT, dict(item.split("=", 1) for item in args.env_after))}
    work = [w for w in (("noop", "bench/noop", args.events, args.light),
                        ("three-steps", "bench/steps", args.steps_events, args.steps_light))
            if args.function in (w[0], "both")]
    auth = br.api_headers(args.mode)
    stacks = {}
    print(f"before: {sides['before'][0]}  after: {sides['after'][0]} {sides['after'][1] or ''}; lockgate"
          f" {args.mode}, PostgreSQL, {os.cpu_count()} cores", flush=True)
    try:
        for name, (root, env) in sides.items():
            stacks[name] = start_stack(root, env, args.mode)
        for server, _, _ in stacks.values():  # warm up: connections, prepared statements
            for _, event, _, _ in work:
                asyncio.run(br.lockgate_burst(server.url, event, 200, headers=auth))
        results: dict[tuple[str, str], list[tuple]] = {}
        print(f"{'round':>5} {'version':<7} {'function':<12} {'runs/s':>7} {'server ms':>9} {'db ms':>6}"
              f" {'light p50':>9} {'p99':>7} {'load':>5}", flush=True)
        for round_no in range(args.rounds):
            for name in (("before", "after") if round_no % 2 == 0 else ("after", "before")):
                server, _, uri = stacks[name]
                for function, event, burst, light in work:
                    time.sleep(1.0)
                    meter = br.CpuMeter([server.proc.pid], uri)
                    meter.start()
                    rate, _ = asyncio.run(br.lockgate_burst(server.url, event, burst, headers=auth,
                                                            when_done=meter.stop))
                    latencies = asyncio.run(br.lockgate_light(server.url, event, light, headers=auth)) if light \
                        else [float("nan")]
                    row = (rate, meter.server_ms / burst, meter.database_ms / burst, br.pct(latencies, 50),
                           br.pct(latencies, 99))
                    results.setdefault((name, function), []).append(row)
                    print(f"{round_no:>5} {name:<7} {function:<12} {row[0]:>7.0f} {row[1]:>9.2f} {row[2]:>6.2f}"
                          f" {row[3]:>9.1f} {row[4]:>7.1f} {os.getloadavg()[0]:>5.1f}", flush=True)
        print("medians over rounds:")
        for (name, function), rows in sorted(results.items(), key=lambda item: (item[0][1], item[0][0] != "before")):
            med = [statistics.median(column) for column in zip(*rows)]
            print(f"{'':>5} {name:<7} {function:<12} {med[0]:>7.0f} {med[1]:>9.2f} {med[2]:>6.2f}"
                  f" {med[3]:>9.1f} {med[4]:>7.1f}")
    finally:
        for server, app, uri in stacks.values():
            app.stop()
            server.stop()
            pgtools.drop_database(uri, pgtools.ADMIN_URI)


if __name__ == "__main__":
    main()
