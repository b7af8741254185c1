"""Two `lockgate start` servers side by side (another checkout's and this one's), each on its own
PostgreSQL database with its own signed app, bursts and light load alternating between them in
rounds, so load from other work on the machine weighs on both alike.

    .venv/bin/python bench/interleaved.py --compare-with DIR [--rounds 3] [--events 1000] [--steps-events 300]

Prints, per round, version and function: burst runs/s, server CPU and database CPU per run, light
p50 / p99; then the medians over rounds.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compare-with", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--steps-events", type=int, default=300)
    parser.add_argument("--light", type=int, default=100)
    parser.add_argument("--steps-light", type=int, default=40)
    args = parser.parse_args()
    stacks = {}
    auth = br.api_headers("start")
    try:
        for name, root in (("before", args.compare_with.resolve()), ("after", ROOT)):
            uri = pgtools.create_database(pgtools.ADMIN_URI)
            server, app = br.start_bench_stack("--workers", "100", postgres_uri=uri, mode="start", server_root=root)
            stacks[name] = (server, app, uri)
        for server, _, _ in stacks.values():  # warm up: connections, prepared statements
            asyncio.run(br.lockgate_burst(server.url, "bench/noop", 200, headers=auth))
            asyncio.run(br.lockgate_burst(server.url, "bench/steps", 50, headers=auth))
        work = (("noop", "bench/noop", args.events, args.light),
                ("three-steps", "bench/steps", args.steps_events, args.steps_light))
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
                    latencies = asyncio.run(br.lockgate_light(server.url, event, light, headers=auth))
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
