"""An example app to play with: `lockgate dev --example` serves it beside the server.

Against `lockgate start`, serve it yourself in cloud mode:

    INNGEST_DEV=0 INNGEST_BASE_URL=http://127.0.0.1:8288 INNGEST_SIGNING_KEY=<the server's key> \
        INNGEST_EVENT_KEY=<an event key> uvicorn examples.app:app --port 8000

It uses the official inngest SDK unchanged. Send it events from the shell:

    curl -X POST http://127.0.0.1:8288/e/dev -d '{"name": "video/requested", "data": {"prompt": "a cat"}}'
    curl -X POST http://127.0.0.1:8288/e/dev -d '{"name": "batch/settle", "data": {"amounts": [5, 10, 15, 20]}}'
    curl -X POST http://127.0.0.1:8288/e/dev -d '{"name": "order/placed", "data": {"order_id": "o1"}}'
    curl -X POST http://127.0.0.1:8288/e/dev -d '{"name": "payment/confirmed", "data": {"order_id": "o1"}}'
    curl http://127.0.0.1:8288/v1/runs
"""

from __future__ import annotations

import asyncio
import datetime
import random

import inngest
import inngest.fast_api
from fastapi import FastAPI

# Dev or cloud mode from INNGEST_DEV, as the SDK decides by default: `lockgate dev --example` sets it to the
# server's URL; under `lockgate start` run it with INNGEST_DEV=0, INNGEST_BASE_URL and INNGEST_SIGNING_KEY.
client = inngest.Inngest(app_id="example")


@client.create_function(fn_id="generate-video", trigger=inngest.TriggerEvent(event="video/requested"), retries=3)
async def generate_video(ctx: inngest.Context) -> dict:
    """A slow provider call split into durable steps: a crash never re-bills a finished step."""

    async def submit() -> str:
        await asyncio.sleep(0.2)  # stands in for the provider's API
        return f"job-{random.randint(1000, 9999)}"

    job = await ctx.step.run("submit-to-provider", submit)
    await ctx.step.sleep("let-it-render", datetime.timedelta(seconds=2))

    async def fetch() -> str:
        return f"https://videos.example/{job}.mp4"

    url = await ctx.step.run("fetch-result", fetch)
    return {"prompt": ctx.event.data.get("prompt"), "url": url}


@client.create_function(
    fn_id="checkout",
    trigger=inngest.TriggerEvent(event="order/placed"),
    cancel=[inngest.Cancel(event="order/cancelled", if_exp="async.data.order_id == event.data.order_id")],
)
async def checkout(ctx: inngest.Context) -> dict:
    """Waits for the payment; `async.ts >= event.ts` also accepts one that arrived early (lookback)."""

    async def reserve() -> str:
        return f"reserved {ctx.event.data.get('sku', 'item')}"

    await ctx.step.run("reserve-stock", reserve)
    paid = await ctx.step.wait_for_event(
        "payment",
        event="payment/confirmed",
        if_exp="async.data.order_id == event.data.order_id && async.ts >= event.ts",
        timeout=datetime.timedelta(minutes=10),
    )
    return {"order_id": ctx.event.data.get("order_id"), "paid": paid is not None}


@client.create_function(fn_id="charge-one", trigger=inngest.TriggerEvent(event="charge/one"), retries=1)
async def charge_one(ctx: inngest.Context) -> dict:
    async def charge() -> dict:
        await asyncio.sleep(0.1)  # a slow payment provider
        if random.random() < 0.2:
            raise inngest.NonRetriableError("card declined")
        return {"charged": ctx.event.data["amount"]}

    return await ctx.step.run("charge", charge)


@client.create_function(fn_id="settle-batch", trigger=inngest.TriggerEvent(event="batch/settle"))
async def settle_batch(ctx: inngest.Context) -> dict:
    """Charge every item in parallel; settle what succeeded and refund what failed."""
    items = ctx.event.data.get("amounts", [5, 10, 15])

    def charge(i: int, amount: int):
        async def invoke() -> dict:
            try:
                return await ctx.step.invoke(f"charge-{i}", function=charge_one, data={"amount": amount})
            except inngest.StepError as err:
                return {"failed": amount, "why": err.message}

        return invoke

    results = await ctx.group.parallel(tuple(charge(i, a) for i, a in enumerate(items)))
    settled = sum(r.get("charged", 0) for r in results)
    refunds = [r["failed"] for r in results if "failed" in r]
    return {"settled": settled, "refunded": refunds}


@client.create_function(fn_id="hello", trigger=inngest.TriggerEvent(event="demo/hello"))
async def hello(ctx: inngest.Context) -> str:
    return f"hello {ctx.event.data.get('name', 'world')}"


@client.create_function(fn_id="nightly-cleanup", trigger=inngest.TriggerCron(cron="0 3 * * *"))
async def nightly_cleanup(ctx: inngest.Context) -> str:
    return "cleaned"


app = FastAPI()
inngest.fast_api.serve(app, client, [generate_video, checkout, charge_one, settle_batch, hello, nightly_cleanup])
