"""Soak a running lockgate with valid and hostile traffic and sample its RSS.

    python scripts/soak.py --url http://127.0.0.1:8288 --pid <server pid> --seconds 600

Prints one line per sample (seconds, RSS MiB, requests, 5xx) and a summary: the RSS after the
first minute and at the end. Any 5xx answer is counted and shown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time

import httpx

QSTASH_DEV_TOKEN = "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0="


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _nested(depth: int) -> dict:
    value: dict = {"x": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


def requests(rng: random.Random, event_key: str, headers: dict[str, str]):
    """One request of the mix: mostly valid events and reads, some hostile, some large."""
    n = rng.random()
    if n < 0.45:
        return "POST", f"/e/{event_key}", {"json": [{"name": "soak/event", "data": {"i": rng.randrange(10**9),
                                                                                   "pad": "x" * rng.randrange(2000)}}
                                                   for _ in range(rng.randrange(1, 20))]}
    if n < 0.6:
        return "GET", rng.choice(["/v1/runs", "/v1/events", "/v1/stats", "/health", "/v1/runs/nope"]), {}
    if n < 0.68:
        return "POST", f"/e/{event_key}", {"json": {"name": "soak/deep", "data": _nested(rng.randrange(50, 900))}}
    if n < 0.74:
        return "POST", f"/e/{event_key}", {"json": {"name": "soak/big", "data": {"blob": "y" * rng.randrange(10**5, 3 * 10**6)}}}
    if n < 0.8:
        query = "{ " + " ".join(f"a{i}: run(runID: \"r{i}\") {{ id status }}" for i in range(rng.randrange(1, 80))) + " }"
        return "POST", "/v0/gql", {"json": {"query": query}}
    if n < 0.85:
        return "POST", "/v0/gql", {"json": {"query": "{ run(runID: \"x\") " + "{ trace " * 2000 + "}" * 2000 + " }"}}
    if n < 0.9:
        return "GET", f"/v1/runs/{rng.choice(['%00', 'a' * 5000, 'ü'])}", {}
    if n < 0.95:
        return "POST", f"/e/{event_key}", {"json": {"name": "soak/id", "id": "i" * rng.randrange(100, 100_000)}}
    return "POST", "/v2/publish/http://127.0.0.1:9/soak", {
        "content": b"z" * rng.randrange(1, 10**5),
        "headers": {"Authorization": f"Bearer {os.environ.get('QSTASH_TOKEN', QSTASH_DEV_TOKEN)}",
                    "Upstash-Delay": "1d", "Upstash-Retries": "0"}}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8288")
    parser.add_argument("--pid", type=int, required=True, help="the server process to sample")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--sample", type=float, default=10, help="seconds between RSS samples")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--event-key", default="soak")
    parser.add_argument("--signing-key", default=None)
    parser.add_argument("--json", default=None, help="also write the samples here")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.signing_key}"} if args.signing_key else {}
    counts = {"requests": 0, "5xx": 0, "errors": 0}
    deadline = time.monotonic() + args.seconds
    start = time.monotonic()
    samples = [(0.0, rss_mib(args.pid))]
    print(f"{'s':>6} {'RSS MiB':>8} {'requests':>9} {'5xx':>4}", flush=True)
    print(f"{0:6.0f} {samples[0][1]:8.1f} {0:9d} {0:4d}", flush=True)

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(base_url=args.url, timeout=30, headers=headers) as client:
            while time.monotonic() < deadline:
                method, path, extra = requests(rng, args.event_key, headers)
                extra_headers = {**headers, **extra.pop("headers", {})}
                try:
                    response = await client.request(method, path, headers=extra_headers, **extra)
                except httpx.HTTPError:
                    counts["errors"] += 1
                    continue
                counts["requests"] += 1
                if response.status_code >= 500:
                    counts["5xx"] += 1
                    print(f"5xx: {method} {path[:60]} -> {response.status_code} {response.text[:200]}", flush=True)

    async def sampler() -> None:
        while time.monotonic() < deadline:
            await asyncio.sleep(min(args.sample, max(0.0, deadline - time.monotonic())))
            elapsed = time.monotonic() - start
            samples.append((elapsed, rss_mib(args.pid)))
            print(f"{elapsed:6.0f} {samples[-1][1]:8.1f} {counts['requests']:9d} {counts['5xx']:4d}", flush=True)

    await asyncio.gather(sampler(), *(worker(i) for i in range(args.concurrency)))
    after_minute = next((rss for t, rss in samples if t >= 60), samples[-1][1])
    summary = {"seconds": round(samples[-1][0]), "rss_start_mib": round(samples[0][1], 1),
               "rss_after_1min_mib": round(after_minute, 1), "rss_end_mib": round(samples[-1][1], 1),
               "rss_max_mib": round(max(r for _, r in samples), 1), **counts}
    print(json.dumps(summary), flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"summary": summary, "samples": samples}, out)


if __name__ == "__main__":
    asyncio.run(main())
