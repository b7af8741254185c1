"""Timer accuracy under load: how late do sleeps wake when many fall due together?

    .venv/bin/python bench/timers.py [--runs 1000] [--sleep-ms 3000]

`lockgate dev` (SQLite on disk) and bench/bench_app.py (official SDK). A burst of runs each
sleeps until the same instant, --sleep-ms after the burst was sent; lateness = when each sleep
step was recorded as over (from the run's step trace) minus that instant. Reported as
p50/p99/max ms, next to the same figure for lone sleeping runs measured in the same run.
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


async def sleep_burst(base: str, runs: int, sleep_ms: int) -> list[float]:
    due_ms = int(time.time() * 1000) + sleep_ms
    async with aiohttp.ClientSession() as session:
        body = [{"name": "bench/sleep", "data": {"due_ms": due_ms}} for _ in range(runs)]
        event_ids: list[str] = []
        for i in range(0, runs, 200):
            async with session.post(f"{base}/e/bench", json=body[i:i + 200]) as r:
                event_ids += (await r.json())["ids"]
    lateness = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        for event_id in event_ids:
            while not (runs_ := (await http.get(f"/v1/events/{event_id}/runs")).json()["data"]) or \
                    runs_[0]["status"] != "Completed":
                await asyncio.sleep(0.2)
            steps = (await http.get(f"/v1/runs/{runs_[0]['run_id']}/steps")).json()["data"]
            nap = next(s for s in steps if s["name"] == "nap")
            lateness.append(parse_iso(nap["ended_at"]) * 1000 - due_ms)
    return lateness


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--sleep-ms", type=int, default=3000)
    args = parser.parse_args()
    server, app = start_bench_stack()
    try:
        alone = [x for _ in range(5) for x in asyncio.run(sleep_burst(server.url, 1, args.sleep_ms))]
        burst = asyncio.run(sleep_burst(server.url, args.runs, args.sleep_ms))
        print(f"sleep lateness (ms after the due time), all due {args.sleep_ms} ms after the burst is sent")
        print(f"{'':<22} {'p50':>7} {'p99':>7} {'max':>7}")
        print(f"{'one run at a time':<22} {pct(alone, 50):>7.1f} {pct(alone, 99):>7.1f} {max(alone):>7.1f}")
        print(f"{f'{args.runs} due at once':<22} {pct(burst, 50):>7.1f} {pct(burst, 99):>7.1f} {max(burst):>7.1f}")
    finally:
        app.stop()
        server.stop()


if __name__ == "__main__":
    main()
