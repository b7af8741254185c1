"""Official-SDK functions for the operations tests: runs that sleep, wait, retry, queue or finish
across an upgrade or a restore, and functions whose flow control leaves expiring state behind.

GATE_PATH names a file: while it is absent, `ops-flaky` fails and `ops-queued` holds its
concurrency slot, so the test decides when those runs may get on."""

from __future__ import annotations

import asyncio
import datetime
import os

import inngest
import inngest.fast_api
from fastapi import FastAPI

from tests.e2e.apps.ledger import record

client = inngest.Inngest(app_id="ops", is_production=False)


def gate_open() -> bool:
    return os.path.exists(os.environ["GATE_PATH"])


@client.create_function(fn_id="ops-noop", trigger=inngest.TriggerEvent(event="ops/noop"))
async def noop(ctx: inngest.Context) -> dict:
    record("noop", run_id=ctx.run_id, i=ctx.event.data.get("i"))
    return {"i": ctx.event.data.get("i")}


@client.create_function(fn_id="ops-sleeper", trigger=inngest.TriggerEvent(event="ops/sleep"))
async def sleeper(ctx: inngest.Context) -> str:
    async def before() -> None:
        record("sleep-before", run_id=ctx.run_id)

    async def after() -> None:
        record("sleep-after", run_id=ctx.run_id)

    await ctx.step.run("before", before)
    await ctx.step.sleep("nap", datetime.timedelta(seconds=ctx.event.data["seconds"]))
    await ctx.step.run("after", after)
    return "slept"


@client.create_function(fn_id="ops-waiter", trigger=inngest.TriggerEvent(event="ops/wait"))
async def waiter(ctx: inngest.Context) -> str:
    async def before() -> None:
        record("wait-before", run_id=ctx.run_id)

    await ctx.step.run("before", before)
    got = await ctx.step.wait_for_event("go", event="ops/go", if_exp="async.data.id == event.data.id",
                                        timeout=datetime.timedelta(minutes=10))
    record("wait-after", run_id=ctx.run_id, got=got is not None)
    return "matched" if got is not None else "timed out"


@client.create_function(fn_id="ops-flaky", trigger=inngest.TriggerEvent(event="ops/flaky"), retries=20)
async def flaky(ctx: inngest.Context) -> str:
    async def gate() -> str:
        record("flaky-attempt", run_id=ctx.run_id, open=gate_open())
        if not gate_open():
            raise RuntimeError("gate closed")
        return "through"

    return await ctx.step.run("gate", gate)


@client.create_function(fn_id="ops-queued", trigger=inngest.TriggerEvent(event="ops/queue"),
                        concurrency=[inngest.Concurrency(limit=1)])
async def queued(ctx: inngest.Context) -> str:
    async def hold() -> None:
        record("queued-hold", run_id=ctx.run_id)
        for _ in range(600):  # keep the only slot while the gate is closed (others stay Queued)
            if gate_open():
                return
            await asyncio.sleep(0.05)

    await ctx.step.run("hold", hold)
    return "got a slot"


# Flow control whose bookkeeping must expire: idempotency keys, debounce and batch windows,
# rate-limit buckets.
@client.create_function(fn_id="ops-idempotent", trigger=inngest.TriggerEvent(event="ops/idem"),
                        idempotency="event.data.key")
async def idempotent(ctx: inngest.Context) -> None:
    record("idem", key=ctx.event.data.get("key"))


@client.create_function(fn_id="ops-debounced", trigger=inngest.TriggerEvent(event="ops/debounce"),
                        debounce=inngest.Debounce(period=datetime.timedelta(seconds=1), key="event.data.key"))
async def debounced(ctx: inngest.Context) -> None:
    record("debounced", key=ctx.event.data.get("key"))


@client.create_function(fn_id="ops-batched", trigger=inngest.TriggerEvent(event="ops/batch"),
                        batch_events=inngest.Batch(max_size=5, timeout=datetime.timedelta(seconds=1)))
async def batched(ctx: inngest.Context) -> None:
    record("batched", n=len(ctx.events))


@client.create_function(fn_id="ops-rate-limited", trigger=inngest.TriggerEvent(event="ops/rate"),
                        rate_limit=inngest.RateLimit(limit=100, period=datetime.timedelta(seconds=1),
                                                     key="event.data.key"))
async def rate_limited(ctx: inngest.Context) -> None:
    record("rate", key=ctx.event.data.get("key"))


app = FastAPI()
inngest.fast_api.serve(app, client, [noop, sleeper, waiter, flaky, queued, idempotent, debounced, batched,
                                     rate_limited])
