"""A FastAPI app using the official inngest SDK with one function per flow-control setting.

Each step records "start" and "end" in the ledger, so tests can compute the real overlap of
executions and the order in which runs started.
"""

from __future__ import annotations

import asyncio
import datetime

import inngest
import inngest.fast_api
from fastapi import FastAPI

from tests.e2e.apps.ledger import record

client = inngest.Inngest(app_id="flow", is_production=False)


async def work(ctx: inngest.Context, fn: str, default_s: float = 1.0) -> dict:
    """One step that takes a while, bracketed by ledger entries."""
    data = ctx.event.data

    async def body() -> dict:
        record("start", fn=fn, run_id=ctx.run_id, customer=data.get("customer"), n=data.get("n"))
        await asyncio.sleep(float(data.get("sleep", default_s)))
        record("end", fn=fn, run_id=ctx.run_id, customer=data.get("customer"), n=data.get("n"))
        return {"n": data.get("n")}

    return await ctx.step.run("work", body)


@client.create_function(fn_id="limit-two", trigger=inngest.TriggerEvent(event="flow/limit-two"),
                        concurrency=[inngest.Concurrency(limit=2)])
async def limit_two(ctx: inngest.Context) -> dict:
    return await work(ctx, "limit-two")


@client.create_function(fn_id="parallel-two", trigger=inngest.TriggerEvent(event="flow/parallel-two"),
                        concurrency=[inngest.Concurrency(limit=2)])
async def parallel_two(ctx: inngest.Context) -> list:
    """Four parallel steps per run: the limit counts steps in flight, not runs."""

    def branch(name: str):
        async def body() -> str:
            record("start", fn="parallel-two", run_id=ctx.run_id, n=name)
            await asyncio.sleep(0.5)
            record("end", fn="parallel-two", run_id=ctx.run_id, n=name)
            return name

        return lambda: ctx.step.run(name, body)

    return list(await ctx.group.parallel(tuple(branch(f"b{i}") for i in range(4))))


@client.create_function(fn_id="per-customer", trigger=inngest.TriggerEvent(event="flow/per-customer"),
                        concurrency=[inngest.Concurrency(limit=1, key="event.data.customer")])
async def per_customer(ctx: inngest.Context) -> dict:
    return await work(ctx, "per-customer")


@client.create_function(
    fn_id="two-limits",
    trigger=inngest.TriggerEvent(event="flow/two-limits"),
    concurrency=[inngest.Concurrency(limit=3), inngest.Concurrency(limit=1, key="event.data.customer")],
)
async def two_limits(ctx: inngest.Context) -> dict:
    return await work(ctx, "two-limits")


# Two functions sharing one account-wide limit: the counter is per key value, across functions.
SHARED = [inngest.Concurrency(limit=1, key="event.data.account", scope="env")]


@client.create_function(fn_id="shared-a", trigger=inngest.TriggerEvent(event="flow/shared-a"), concurrency=SHARED)
async def shared_a(ctx: inngest.Context) -> dict:
    return await work(ctx, "shared")


@client.create_function(fn_id="shared-b", trigger=inngest.TriggerEvent(event="flow/shared-b"), concurrency=SHARED)
async def shared_b(ctx: inngest.Context) -> dict:
    return await work(ctx, "shared")


@client.create_function(fn_id="throttled", trigger=inngest.TriggerEvent(event="flow/throttled"),
                        throttle=inngest.Throttle(limit=1, period=datetime.timedelta(seconds=2), burst=1))
async def throttled(ctx: inngest.Context) -> dict:
    return await work(ctx, "throttled", 0.0)


@client.create_function(
    fn_id="rate-limited",
    trigger=inngest.TriggerEvent(event="flow/rate-limited"),
    rate_limit=inngest.RateLimit(limit=2, period=datetime.timedelta(minutes=1), key="event.data.user"),
)
async def rate_limited(ctx: inngest.Context) -> dict:
    return await work(ctx, "rate-limited", 0.0)


@client.create_function(fn_id="idempotent", trigger=inngest.TriggerEvent(event="flow/idempotent"),
                        idempotency="event.data.order")
async def idempotent(ctx: inngest.Context) -> dict:
    return await work(ctx, "idempotent", 0.0)


@client.create_function(
    fn_id="debounced",
    trigger=inngest.TriggerEvent(event="flow/debounced"),
    debounce=inngest.Debounce(period=datetime.timedelta(seconds=2), key="event.data.k"),
)
async def debounced(ctx: inngest.Context) -> dict:
    record("debounced", run_id=ctx.run_id, n=ctx.event.data.get("n"), events=len(ctx.events))
    return {"n": ctx.event.data.get("n")}


@client.create_function(
    fn_id="batched",
    trigger=inngest.TriggerEvent(event="flow/batched"),
    batch_events=inngest.Batch(max_size=3, timeout=datetime.timedelta(seconds=2), key="event.data.group",
                               if_exp="event.data.solo != true"),
)
async def batched(ctx: inngest.Context) -> list:
    ns = [e.data.get("n") for e in ctx.events]
    record("batched", run_id=ctx.run_id, ns=ns, first=ctx.event.data.get("n"))
    return ns


@client.create_function(
    fn_id="prioritized",
    trigger=inngest.TriggerEvent(event="flow/prioritized"),
    concurrency=[inngest.Concurrency(limit=1)],
    priority=inngest.Priority(run="event.data.priority"),
)
async def prioritized(ctx: inngest.Context) -> dict:
    return await work(ctx, "prioritized", 0.1)


@client.create_function(
    fn_id="start-timeout",
    trigger=inngest.TriggerEvent(event="flow/start-timeout"),
    concurrency=[inngest.Concurrency(limit=1)],
    timeouts=inngest.Timeouts(start=datetime.timedelta(seconds=2)),
)
async def start_timeout(ctx: inngest.Context) -> dict:
    return await work(ctx, "start-timeout")


@client.create_function(
    fn_id="finish-timeout",
    trigger=inngest.TriggerEvent(event="flow/finish-timeout"),
    timeouts=inngest.Timeouts(finish=datetime.timedelta(seconds=2)),
)
async def finish_timeout(ctx: inngest.Context) -> str:
    await work(ctx, "finish-timeout", 0.0)
    await ctx.step.sleep("nap", datetime.timedelta(seconds=30))
    record("finish-timeout-after-nap", run_id=ctx.run_id)
    return "woke"


@client.create_function(
    fn_id="singleton-skip",
    trigger=inngest.TriggerEvent(event="flow/singleton-skip"),
    singleton=inngest.Singleton(key="event.data.k", mode="skip"),
)
async def singleton_skip(ctx: inngest.Context) -> dict:
    return await work(ctx, "singleton-skip", 2.0)


@client.create_function(
    fn_id="singleton-cancel",
    trigger=inngest.TriggerEvent(event="flow/singleton-cancel"),
    singleton=inngest.Singleton(key="event.data.k", mode="cancel"),
)
async def singleton_cancel(ctx: inngest.Context) -> str:
    await work(ctx, "singleton-cancel", 0.0)
    await ctx.step.sleep("nap", datetime.timedelta(seconds=float(ctx.event.data.get("nap", 30))))
    return "done"


app = FastAPI()
inngest.fast_api.serve(
    app,
    client,
    [limit_two, parallel_two, per_customer, two_limits, shared_a, shared_b, throttled, rate_limited, idempotent, debounced, batched, prioritized, start_timeout,
     finish_timeout, singleton_skip, singleton_cancel],
)
