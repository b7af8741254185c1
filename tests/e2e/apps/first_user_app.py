"""The app behind tests/e2e/test_first_user.py: a function that fails before any step, one that works, one that gives up (NonRetriableError), one that
waits for an event (to cancel), and an endpoint that refuses QStash deliveries."""

from __future__ import annotations

import datetime

import inngest
import inngest.fast_api
from fastapi import FastAPI, Response

client = inngest.Inngest(app_id="first-user", is_production=False)


@client.create_function(fn_id="boom", trigger=inngest.TriggerEvent(event="first/boom"), retries=0)
async def boom(ctx: inngest.Context) -> None:
    raise ValueError(f"no such customer {ctx.event.data.get('customer')}")


@client.create_function(fn_id="hello", trigger=inngest.TriggerEvent(event="first/hello"))
async def hello(ctx: inngest.Context) -> str:
    return f"hello {ctx.event.data.get('name', 'world')}"


@client.create_function(fn_id="wait", trigger=inngest.TriggerEvent(event="first/wait"))
async def wait(ctx: inngest.Context) -> bool:
    paid = await ctx.step.wait_for_event("payment", event="first/paid", timeout=datetime.timedelta(hours=1),
                                         if_exp="async.data.order_id == event.data.order_id")
    return paid is not None


@client.create_function(fn_id="refuse", trigger=inngest.TriggerEvent(event="first/refuse"), retries=3)
async def refuse(ctx: inngest.Context) -> None:
    raise inngest.NonRetriableError("card declined")


app = FastAPI()
inngest.fast_api.serve(app, client, [boom, hello, wait, refuse])


@app.post("/deliveries/down")
async def down() -> Response:
    return Response("the receiver is down\nsecond line", status_code=503)
