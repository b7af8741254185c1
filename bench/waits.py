"""Wait-index benchmark: does matching an event stay flat as pending waits grow?

    .venv/bin/python bench/waits.py [--waits 10000] [--probes 300]

1. Store level (in process, SQLite on disk): time `match_event` for an event that resumes one
   run and for one that matches nothing, with 100, then --waits, then 10x --waits pending waits.
2. End to end: `lockgate dev` and bench/bench_app.py (official SDK). Runs of `waiter` park on
   `step.wait_for_event("bench/paid", if "async.data.id == event.data.id")`. With 100 and then
   --waits runs waiting, probe events are sent one at a time and we measure the events API's
   acknowledgement time and event→run-ended time.
Figures are printed as ratios against the 100-wait baseline, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import parse_iso, pct, start_bench_stack  # noqa: E402
from lockgate.engine.waits import match_event, prepare, register_wait  # noqa: E402
from lockgate.models import Event, Run, RunStatus, Wait  # noqa: E402
from lockgate.store import operations as ops  # noqa: E402
from lockgate.store.sqlite import SQLiteStore  # noqa: E402
from tests.conftest import wait_until  # noqa: E402

CONDITION = "async.data.id == event.data.id"


# -- 1. store level -----------------------------------------------------------------------


def _park(tx, start: int, count: int) -> None:
    for i in range(start, start + count):
        run_id = f"run{i}"
        trigger = {"name": "order", "data": {"id": i}}
        ops.insert_run(tx, Run(run_id, "f", "bench-waiter", 1, RunStatus.RUNNING.value, [trigger], [], 0,
                               pending_steps=["paid"]))
        wait = Wait(id=f"{run_id}:paid", run_id=run_id, step_id="paid", kind="wait", event_name="paid",
                    expression=CONDITION, trigger=trigger, created_at=0, expires_at=10**13)
        prepare(wait)
        register_wait(tx, wait, now=0)


async def store_level(sizes: list[int], probes: int) -> list[tuple[int, float, float]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-waits-") as tmp:
        store = SQLiteStore(tmp)
        await store.open()
        try:
            parked = 0
            for size in sizes:
                while parked < size:
                    chunk = min(5000, size - parked)
                    await store.write(_park, parked, chunk)
                    parked += chunk
                pending = (await store.read(ops.count_waits)).get("wait", 0)
                hit_times, miss_times = [], []
                for p in range(min(probes, size)):
                    target = size - 1 - p  # runs parked last, never resumed by an earlier probe
                    hit = Event(internal_id=f"h{size}-{p}", id=f"h{size}-{p}", name="paid", data={"id": target},
                                ts=1, received_at=1)
                    miss = Event(internal_id=f"m{size}-{p}", id=f"m{size}-{p}", name="paid",
                                 data={"id": -1 - p}, ts=1, received_at=1)
                    for event, times in ((hit, hit_times), (miss, miss_times)):
                        t = time.perf_counter()
                        await store.write(lambda tx, e=event: match_event(tx, e, now=2))
                        times.append((time.perf_counter() - t) * 1e6)
                rows.append((pending, statistics.median(hit_times), statistics.median(miss_times)))
        finally:
            await store.close()
    return rows


# -- 2. end to end ------------------------------------------------------------------------


async def _park_runs(base: str, ids: list[int]) -> dict[int, str]:
    """Start one waiter run per id; returns id → the triggering event's id."""
    events: dict[int, str] = {}
    async with aiohttp.ClientSession() as session:
        sem = asyncio.Semaphore(20)

        async def send(batch: list[int]) -> None:
            async with sem:
                body = [{"name": "bench/order", "data": {"id": i}} for i in batch]
                async with session.post(f"{base}/e/bench", json=body) as r:
                    assert r.status == 200, await r.text()
                    events.update(zip(batch, (await r.json())["ids"]))

        await asyncio.gather(*(send(ids[i:i + 100]) for i in range(0, len(ids), 100)))
    return events


def _waiting(base: str) -> int:
    return httpx.get(base + "/v1/stats", timeout=30).json()["data"]["waits"].get("wait", 0)


async def _probe(base: str, targets: dict[int, str]) -> tuple[list[float], list[float]]:
    """Send each target's paid event; time the acknowledgement and until its waiter run ended."""
    acks, done = [], []
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        for target, trigger_id in targets.items():
            run_id = (await http.get(f"/v1/events/{trigger_id}/runs")).json()["data"][0]["run_id"]
            t = time.time()
            r = await http.post("/e/bench", json={"name": "bench/paid", "data": {"id": target}})
            acks.append((time.time() - t) * 1000)
            assert r.status_code == 200
            while (run := (await http.get(f"/v1/runs/{run_id}")).json()["data"])["status"] != "Completed":
                await asyncio.sleep(0.01)  # ended_at is server time: polling does not skew it
            done.append((parse_iso(run["ended_at"]) - t) * 1000)
    return acks, done


def end_to_end(waits: int, probes: int) -> list[tuple[int, list[float], list[float]]]:
    server, app = start_bench_stack()
    rows = []
    try:
        next_id = 0
        for size in (100 + probes, waits + probes):
            want = size - _waiting(server.url)
            parked = asyncio.run(_park_runs(server.url, list(range(next_id, next_id + want))))
            next_id += want
            wait_until(lambda: _waiting(server.url) >= size, timeout=900, interval=0.5, what=f"{size} waits")
            pending = _waiting(server.url)
            targets = dict(list(parked.items())[-probes:])
            acks, done = asyncio.run(_probe(server.url, targets))
            rows.append((pending, acks, done))
    finally:
        app.stop()
        server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--waits", type=int, default=10_000)
    parser.add_argument("--probes", type=int, default=300)
    args = parser.parse_args()

    print(f"wait index benchmark — store level (SQLite on disk, median of {args.probes} probes)")
    rows = asyncio.run(store_level([100, args.waits, args.waits * 10], args.probes))
    base_hit, base_miss = rows[0][1], rows[0][2]
    print(f"{'pending waits':>14} {'hit µs':>9} {'miss µs':>9} {'hit ratio':>10} {'miss ratio':>11}")
    for size, hit, miss in rows:
        print(f"{size:>14} {hit:>9.0f} {miss:>9.0f} {hit / base_hit:>10.2f} {miss / base_miss:>11.2f}")

    print(f"\nend to end (lockgate dev + official SDK app), {args.probes} probe events sent one at a time")
    print(f"{'pending waits':>14} {'ack p50 ms':>11} {'ack p99 ms':>11} {'done p50 ms':>12} {'done p99 ms':>12}")
    e2e = end_to_end(args.waits, args.probes)
    for size, acks, done in e2e:
        print(f"{size:>14} {pct(acks, 50):>11.1f} {pct(acks, 99):>11.1f} {pct(done, 50):>12.1f} {pct(done, 99):>12.1f}")
    (n0, a0, d0), (n1, a1, d1) = e2e
    print(f"ratio {n1} waits ÷ {n0} waits: ack p50 {pct(a1, 50) / pct(a0, 50):.2f},"
          f" event→resumed run done p50 {pct(d1, 50) / pct(d0, 50):.2f}")


if __name__ == "__main__":
    main()
