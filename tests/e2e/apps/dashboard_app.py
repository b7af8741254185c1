"""The app behind the dashboard browser tests: a run with output, a step that fails with retries,
a run that sleeps (to cancel), and an endpoint that fails QStash deliveries (for the DLQ)."""

from __future__ import annotations

import asyncio
import datetime

import inngest
import inngest.fast_api
from fastapi import FastAPI, Request, Response

from tests.e2e.apps.ledger import record

client = inngest.Inngest(app_id="dash", is_production=False)


@client.create_function(fn_id="greet", trigger=inngest.TriggerEvent(event="dash/greet"))
async def greet(ctx: inngest.Context) -> dict:
    async def look_up() -> dict:
        await asyncio.sleep(float(ctx.event.data.get("delay", 0)))  # long enough to watch it run
        return {"greeting": "hello", "name": ctx.event.data.get("name", "nobody")}

    found = await ctx.step.run("look-up", look_up)
    if ctx.event.data.get("pause"):
        await ctx.step.sleep("pause", datetime.timedelta(milliseconds=50))
    return {"message": f"{found['greeting']} {found['name']}"}


@client.create_function(fn_id="flaky", trigger=inngest.TriggerEvent(event="dash/flaky"), retries=1)
async def flaky(ctx: inngest.Context) -> None:
    async def charge() -> None:
        record("charge-attempt", run_id=ctx.run_id, attempt=ctx.attempt)
        raise ValueError(f"card declined for {ctx.event.data.get('user_id')}")

    await ctx.step.run("charge", charge)


@client.create_function(fn_id="nap", trigger=inngest.TriggerEvent(event="dash/nap"))
async def nap(ctx: inngest.Context) -> str:
    await ctx.step.sleep("long-nap", datetime.timedelta(hours=1))
    return "rested"


@client.create_function(fn_id="yearly", trigger=inngest.TriggerCron(cron="0 0 1 1 *"))
async def yearly(ctx: inngest.Context) -> str:
    return "happy new year"


app = FastAPI()
inngest.fast_api.serve(app, client, [greet, flaky, nap, yearly])


@app.post("/deliveries/fail")
async def failing_delivery(request: Request) -> Response:
    record("delivery", body=(await request.body()).decode())
    return Response("the receiver is down", status_code=500)
