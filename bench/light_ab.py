"""Light load, two versions side by side: one event at a time, alternating between them.

    .venv/bin/python bench/light_ab.py --compare-with /tmp/old [--runs 300] [--backends both] [--mode start]

Starts this version's stack and the other version's (`--compare-with`: a folder holding its
`lockgate/` package) at once, each with its own app and store (a fresh PostgreSQL database each),
and sends single events to one, then the other, so that drifting load on a shared machine weighs
on both alike. Prints p50/p90 event→done per version, per function, and the median of the paired
differences (this − other).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.run import api_headers, parse_iso, pct, start_bench_stack  # noqa: E402


async def one_run(http: httpx.AsyncClient, name: str, i: int) -> float:
    t = time.time()
    event_id = (await http.post("/e/bench", json={"name": name, "data": {"i": i}})).json()["ids"][0]
    while True:
        runs = (await http.get(f"/v1/events/{event_id}/runs")).json()["data"]
        if runs and runs[0]["status"] == "Completed":
            return (parse_iso(runs[0]["ended_at"]) - t) * 1000
        await asyncio.sleep(0.025)  # ended_at is server time: slow polling does not skew it


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compare-with", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--backends", default="both")
    parser.add_argument("--mode", default="start", choices=("dev", "start"))
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backends == "both" else args.backends.split(",")
    from tests import pgtools

    for backend in backends:
        stacks, databases = {}, []
        try:
            for label, root in (("this", ROOT), ("other", args.compare_with.resolve())):
                uri = pgtools.create_database(pgtools.ADMIN_URI) if backend == "postgres" else None
                if uri:
                    databases.append(uri)
                stacks[label] = start_bench_stack("--workers", "100", postgres_uri=uri, server_root=root,
                                                  mode=args.mode)
            auth = api_headers(args.mode)

            async def drive() -> dict[tuple[str, str], list[float]]:
                got: dict[tuple[str, str], list[float]] = {}
                clients = {label: httpx.AsyncClient(base_url=server.url, timeout=60, headers=auth)
                           for label, (server, _) in stacks.items()}
                try:
                    for name in ("bench/noop", "bench/steps"):
                        for i in range(args.runs + 10):
                            order = ("this", "other") if i % 2 == 0 else ("other", "this")
                            for label in order:
                                ms = await one_run(clients[label], name, i)
                                if i >= 10:  # warm-up
                                    got.setdefault((name, label), []).append(ms)
                finally:
                    for client in clients.values():
                        await client.aclose()
                return got

            load = __import__("os").getloadavg()[0]
            got = asyncio.run(drive())
            print(f"\n{backend}, lockgate {args.mode}, {args.runs} runs per version and function, alternating;"
                  f" load average {load:.1f} → {__import__('os').getloadavg()[0]:.1f}")
            for name in ("bench/noop", "bench/steps"):
                this, other = got[(name, "this")], got[(name, "other")]
                diffs = [a - b for a, b in zip(this, other)]
                print(f"  {name:<12} this p50 {pct(this, 50):6.1f} p90 {pct(this, 90):6.1f} | other p50"
                      f" {pct(other, 50):6.1f} p90 {pct(other, 90):6.1f} | paired difference median"
                      f" {statistics.median(diffs):+.2f} ms")
        finally:
            for server, app in stacks.values():
                app.stop()
                server.stop()
            for uri in databases:
                pgtools.drop_database(uri, pgtools.ADMIN_URI)


if __name__ == "__main__":
    main()
