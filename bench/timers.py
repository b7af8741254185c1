"""Timer accuracy under load: how late do sleeps wake when many fall due together?

    .venv/bin/python bench/timers.py [--runs 1000] [--sleep-ms 20000] [--backends sqlite,postgres]

`lockgate dev` (SQLite on disk, then a fresh PostgreSQL database) and bench/bench_app.py
(official SDK). A burst of runs each sleeps until the same instant, --sleep-ms after the burst
was sent. Two latenesses, after that instant: when each sleep step was recorded as over (the
timer fired: from the run's step trace), and when the function body went on after the sleep
(the app's clock, returned as the run's output; bounded by how fast the app takes the calls).
Reported as p50/p99/max ms, next to the same figures for lone sleeping runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import parse_iso, pct, start_bench_stack  # noqa: E402
from tests import pgtools  # noqa: E402


async def sleep_burst(base: str, runs: int, sleep_ms: int) -> tuple[list[float], list[float]]:
    due_ms = int(time.time() * 1000) + sleep_ms
    async with aiohttp.ClientSession() as session:
        body = [{"name": "bench/sleep", "data": {"due_ms": due_ms}} for _ in range(runs)]
        event_ids: list[str] = []
        for i in range(0, runs, 200):
            async with session.post(f"{base}/e/bench", json=body[i:i + 200]) as r:
                event_ids += (await r.json())["ids"]
    lateness, resumed, asleep_late = [], [], 0
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        for event_id in event_ids:
            while not (runs_ := (await http.get(f"/v1/events/{event_id}/runs")).json()["data"]) or \
                    runs_[0]["status"] != "Completed":
                await asyncio.sleep(0.2)
            steps = (await http.get(f"/v1/runs/{runs_[0]['run_id']}/steps")).json()["data"]
            nap = next(s for s in steps if s["name"] == "nap")
            if parse_iso(nap["started_at"]) * 1000 > due_ms:  # went to sleep after the due time
                asleep_late += 1
                continue
            lateness.append(parse_iso(nap["ended_at"]) * 1000 - due_ms)
            resumed.append(runs_[0]["output"] - due_ms)
    if asleep_late:
        print(f"  {asleep_late} of {runs} runs went to sleep after the due time (left out): raise --sleep-ms")
    return lateness, resumed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--sleep-ms", type=int, default=20000,
                        help="long enough for every run of the burst to be asleep before the due time")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--compare-with", type=Path, default=None,
                        help="a checkout of another lockgate version: its server runs first, then this one's")
    args = parser.parse_args()
    print(f"sleep lateness (ms after the due time), all due {args.sleep_ms} ms after the burst is sent")
    print(f"{'store':<11} {'':<22} {'fired p50':>9} {'p99':>7} {'max':>7} {'resumed p50':>11} {'p99':>7} {'max':>7}")
    roots = [ROOT] if args.compare_with is None else [args.compare_with.resolve(), ROOT]
    for backend, root in ((b, r) for b in args.backends.split(",") for r in roots):
        if len(roots) > 1:
            print(f"(server from {root})")
        postgres_uri = pgtools.create_database() if backend == "postgres" else None
        server, app = start_bench_stack(postgres_uri=postgres_uri, server_root=root)
        try:
            alone = [asyncio.run(sleep_burst(server.url, 1, args.sleep_ms)) for _ in range(5)]
            alone_fired = [x for fired, _ in alone for x in fired]
            alone_resumed = [x for _, resumed in alone for x in resumed]
            burst_fired, burst_resumed = asyncio.run(sleep_burst(server.url, args.runs, args.sleep_ms))
            for label, fired, resumed in (("one run at a time", alone_fired, alone_resumed),
                                          (f"{args.runs} due at once", burst_fired, burst_resumed)):
                print(f"{backend:<11} {label:<22} {pct(fired, 50):>9.1f} {pct(fired, 99):>7.1f} {max(fired):>7.1f}"
                      f" {pct(resumed, 50):>11.1f} {pct(resumed, 99):>7.1f} {max(resumed):>7.1f}")
        finally:
            app.stop()
            server.stop()
            if postgres_uri:
                pgtools.drop_database(postgres_uri)


if __name__ == "__main__":
    main()
