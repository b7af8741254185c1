"""Realtime benchmarks: publish→receive latency per backend, SSE fan-out, resume under load.

    .venv/bin/python bench/realtime.py [--only latency,fanout,resume] [--subscribers 1000]

Every figure comes from real `lockgate dev` processes over HTTP: publishes are
`POST /v1/realtime/publish`, subscribers are SSE streams (`GET /v1/realtime/sse`).

- latency: one subscriber; messages carry their send time; p50/p99 of receive − send, at light
  load (one message every 20 ms) and at 1,000 messages/s, on SQLite (in-process broker),
  PostgreSQL (table + NOTIFY) and Redis Streams (`--redis-uri`).
- fanout: N idle SSE subscribers on one channel (SQLite); the server's RSS before and after
  (KB per idle subscriber), then messages delivered per second to all of them.
- resume: a subscriber dropped and reconnected 100 times with Last-Event-ID while messages arrive
  at 200/s; counts gaps and duplicates.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path

import aiohttp
import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import pgtools  # noqa: E402
from tests.conftest import LockgateProcess  # noqa: E402

REDIS_URI = os.environ.get("LOCKGATE_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def token(base: str, channel: str, topics: list[str]) -> str:
    body = [{"channel": channel, "name": t, "kind": "run"} for t in topics]
    return httpx.post(f"{base}/v1/realtime/token", json=body).json()["jwt"]


async def sse_messages(session: aiohttp.ClientSession, base: str, jwt: str, *, after: str | None = None):
    """Yield (id, message) from an SSE stream until the caller stops."""
    headers = {"Last-Event-ID": after} if after else {}
    async with session.get(f"{base}/v1/realtime/sse", params={"token": jwt}, headers=headers,
                           timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as response:
        assert response.status == 200, await response.text()
        event_id, data = None, None
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and data is not None:
                yield event_id, orjson.loads(data)
                event_id, data = None, None


def start_server(*args: str, postgres_uri: str | None = None) -> LockgateProcess:
    return LockgateProcess(args=["dev", "--no-discovery", "--no-poll", "--in-memory", *args], data_dir=None,
                           postgres_uri=postgres_uri).start()


# -- latency ---------------------------------------------------------------------------------------


async def measure_latency(base: str, rate: float, count: int) -> list[float]:
    channel = f"lat-{random.getrandbits(32)}"
    jwt = token(base, channel, ["t"])
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        ready = asyncio.Event()

        async def consume() -> None:
            async for _, message in sse_messages(session, base, jwt):
                if message.get("kind") != "data":
                    continue
                if message["data"].get("warmup"):
                    ready.set()
                    continue
                latencies.append((time.time_ns() - message["data"]["sent"]) / 1e6)
                if len(latencies) >= count:
                    return

        consumer = asyncio.create_task(consume())
        url = f"{base}/v1/realtime/publish"
        params = {"channel": channel, "topic": "t"}
        while not ready.is_set():  # the stream is open once a warm-up message comes through
            await session.post(url, params=params, data=orjson.dumps({"warmup": True}))
            try:
                await asyncio.wait_for(ready.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
        interval = 1.0 / rate
        start = time.perf_counter()
        sends = []
        for i in range(count):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            body = orjson.dumps({"sent": time.time_ns(), "i": i})
            sends.append(asyncio.create_task(session.post(url, params=params, data=body)))
        await asyncio.gather(*sends)
        await asyncio.wait_for(consumer, 60)
    return latencies


def bench_latency(light: int, loaded_rate: float, loaded_seconds: float) -> None:
    print("\n## Publish → SSE receive latency (ms)\n")
    print("| backend | load | messages | p50 | p99 |")
    print("|---|---|---:|---:|---:|")
    backends = [("SQLite (in-process)", [], False), ("PostgreSQL (table + NOTIFY)", [], True),
                ("Redis Streams", ["--redis-uri", REDIS_URI], False)]
    for name, args, pg in backends:
        database = pgtools.create_database() if pg else None
        server = start_server(*args, postgres_uri=database)
        try:
            for label, rate, count in (("light (50/s)", 50.0, light),
                                       (f"{int(loaded_rate)}/s", loaded_rate, int(loaded_rate * loaded_seconds))):
                values = asyncio.run(measure_latency(server.url, rate, count))
                print(f"| {name} | {label} | {len(values)} | {pct(values, 50):.1f} | {pct(values, 99):.1f} |")
        finally:
            server.stop()
            if database:
                pgtools.drop_database(database)


# -- fan-out ---------------------------------------------------------------------------------------


async def measure_fanout(server: LockgateProcess, subscribers: int, messages: int) -> None:
    base = server.url
    channel = f"fan-{random.getrandbits(32)}"
    jwt = token(base, channel, ["t"])
    connector = aiohttp.TCPConnector(limit=0)
    got = [0] * subscribers
    all_done = asyncio.Event()
    finished = 0
    async with aiohttp.ClientSession(connector=connector) as session:
        before = rss_kb(server.proc.pid)

        async def subscriber(index: int) -> None:
            nonlocal finished
            async for _, message in sse_messages(session, base, jwt):
                if message.get("kind") == "data":
                    got[index] += 1
                    if got[index] == messages:
                        finished += 1
                        if finished == subscribers:
                            all_done.set()
                        return

        async def open_all() -> list[asyncio.Task]:
            tasks = []
            for i in range(subscribers):
                tasks.append(asyncio.create_task(subscriber(i)))
                if i % 50 == 49:
                    await asyncio.sleep(0.05)
            return tasks

        tasks = await open_all()
        # Give the server time to accept every stream, then measure its memory with them idle.
        await asyncio.sleep(3.0)
        idle = rss_kb(server.proc.pid)
        per_sub = (idle - before) / subscribers
        print(f"| idle subscribers | {subscribers} |")
        print(f"| server RSS before / with them | {before / 1024:.1f} MiB / {idle / 1024:.1f} MiB |")
        print(f"| RSS per idle subscriber | {per_sub:.1f} KB |")
        url = f"{base}/v1/realtime/publish"
        start = time.perf_counter()
        for i in range(messages):
            await session.post(url, params={"channel": channel, "topic": "t"}, data=orjson.dumps({"i": i}))
        await asyncio.wait_for(all_done.wait(), 300)
        elapsed = time.perf_counter() - start
        delivered = subscribers * messages
        print(f"| messages published | {messages} |")
        print(f"| deliveries (messages × subscribers) | {delivered} in {elapsed:.2f} s = {delivered / elapsed:,.0f}/s |")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def bench_fanout(subscribers: int, messages: int) -> None:
    print(f"\n## Fan-out: {subscribers} SSE subscribers on one channel (SQLite, in-process broker)\n")
    print("| measure | value |")
    print("|---|---|")
    server = start_server()
    try:
        asyncio.run(measure_fanout(server, subscribers, messages))
    finally:
        server.stop()


# -- resume ----------------------------------------------------------------------------------------


async def measure_resume(base: str, reconnects: int, rate: float) -> tuple[int, int, int, int]:
    channel = f"res-{random.getrandbits(32)}"
    jwt = token(base, channel, ["t"])
    received: list[int] = []
    stop_producing = asyncio.Event()
    sent = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def produce() -> None:
            nonlocal sent
            start = time.perf_counter()
            while not stop_producing.is_set():
                delay = start + sent / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await session.post(f"{base}/v1/realtime/publish", params={"channel": channel, "topic": "t"},
                                   data=orjson.dumps({"i": sent}))
                sent += 1

        producer = asyncio.create_task(produce())
        last_id = "0"
        for _ in range(reconnects):
            take = random.randint(3, 25)
            async for event_id, message in sse_messages(session, base, jwt, after=last_id):
                if message.get("kind") != "data":
                    continue
                received.append(message["data"]["i"])
                last_id = event_id
                take -= 1
                if take == 0:
                    break  # drop the connection mid-stream
        stop_producing.set()
        await producer
        async for event_id, message in sse_messages(session, base, jwt, after=last_id):
            received.append(message["data"]["i"])
            if message["data"]["i"] == sent - 1:
                break
    duplicates = len(received) - len(set(received))
    gaps = len(set(range(sent)) - set(received))
    return sent, len(received), gaps, duplicates


def bench_resume(reconnects: int, rate: float) -> None:
    print(f"\n## Resume: {reconnects} reconnects with Last-Event-ID under {rate:.0f} messages/s\n")
    print("| backend | messages published | received | gaps | duplicates |")
    print("|---|---:|---:|---:|---:|")
    for name, args, pg in (("SQLite", [], False), ("PostgreSQL", [], True), ("Redis", ["--redis-uri", REDIS_URI], False)):
        database = pgtools.create_database() if pg else None
        server = start_server(*args, postgres_uri=database)
        try:
            sent, got, gaps, dups = asyncio.run(measure_resume(server.url, reconnects, rate))
            print(f"| {name} | {sent} | {got} | {gaps} | {dups} |")
        finally:
            server.stop()
            if database:
                pgtools.drop_database(database)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="latency,fanout,resume")
    parser.add_argument("--light", type=int, default=300, help="messages at light load")
    parser.add_argument("--rate", type=float, default=1000.0, help="messages/s for the loaded latency run")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the loaded latency run")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--fanout-messages", type=int, default=20)
    parser.add_argument("--reconnects", type=int, default=100)
    parser.add_argument("--resume-rate", type=float, default=200.0)
    args = parser.parse_args()
    only = set(args.only.split(","))
    if "latency" in only:
        bench_latency(args.light, args.rate, args.seconds)
    if "fanout" in only:
        bench_fanout(args.subscribers, args.fanout_messages)
    if "resume" in only:
        bench_resume(args.reconnects, args.resume_rate)


if __name__ == "__main__":
    main()
