"""A small app for the visibility tests: a greeter, a cron job, a failing function, a sleeper, a waiter."""

from __future__ import annotations

import datetime

import inngest
import inngest.fast_api
from fastapi import FastAPI

from tests.e2e.apps.ledger import record

client = inngest.Inngest(app_id="vis", is_production=False)


@client.create_function(fn_id="generate-video", trigger=inngest.TriggerEvent(event="video/requested"))
async def generate_video(ctx: inngest.Context) -> dict:
    record("video", run_id=ctx.run_id, event=ctx.event.name, data=ctx.event.data)
    return {"prompt": ctx.event.data.get("prompt"), "event": ctx.event.name}


# New Year only: never fires by itself during a test, so any run of it was invoked by hand.
@client.create_function(fn_id="yearly-report", trigger=inngest.TriggerCron(cron="TZ=UTC 0 0 1 1 *"))
async def yearly_report(ctx: inngest.Context) -> dict:
    record("report", run_id=ctx.run_id, event=ctx.event.name, data=ctx.event.data)
    return {"event": ctx.event.name, "year": ctx.event.data.get("year")}


@client.create_function(fn_id="charge-card", trigger=inngest.TriggerEvent(event="card/charge"), retries=1)
async def charge_card(ctx: inngest.Context) -> None:
    record("charge", run_id=ctx.run_id, attempt=ctx.attempt)
    raise RuntimeError("card declined by the provider\nsecond line of detail")


@client.create_function(
    fn_id="nap",
    trigger=inngest.TriggerEvent(event="nap/start"),
    timeouts=inngest.Timeouts(finish=datetime.timedelta(hours=1)),
)
async def nap(ctx: inngest.Context) -> str:
    await ctx.step.sleep("long-nap", datetime.timedelta(minutes=10))
    return "rested"


@client.create_function(fn_id="await-payment", trigger=inngest.TriggerEvent(event="order/placed"))
async def await_payment(ctx: inngest.Context) -> bool:
    paid = await ctx.step.wait_for_event("paid", event="order/paid", timeout=datetime.timedelta(minutes=5),
                                         if_exp="async.data.order == event.data.order")
    return paid is not None


app = FastAPI()
inngest.fast_api.serve(app, client, [generate_video, yearly_report, charge_card, nap, await_payment])
