"""The app the benchmarks drive (official SDK): a noop, three steps, and a run waiting for an event."""

from __future__ import annotations

import datetime
import os
import time

import inngest
import inngest.fast_api
from fastapi import FastAPI

# Production mode (signed calls, for `lockgate start`) when started with INNGEST_DEV=0 and a signing key.
client = inngest.Inngest(app_id="bench", is_production=os.environ.get("INNGEST_DEV") == "0")


def noop_and_steps(client: inngest.Inngest, prefix: str) -> list:
    """The noop and three-step functions on `client`, triggered by `<prefix>/noop` and `<prefix>/steps`."""

    @client.create_function(fn_id="noop", trigger=inngest.TriggerEvent(event=f"{prefix}/noop"))
    async def noop(ctx: inngest.Context) -> int:
        return 1

    @client.create_function(fn_id="three-steps", trigger=inngest.TriggerEvent(event=f"{prefix}/steps"))
    async def three_steps(ctx: inngest.Context) -> int:
        async def one() -> int:
            return 1

        total = 0
        for name in ("a", "b", "c"):
            total += await ctx.step.run(name, one)
        return total

    return [noop, three_steps]


@client.create_function(fn_id="waiter", trigger=inngest.TriggerEvent(event="bench/order"))
async def waiter(ctx: inngest.Context) -> str | None:
    paid = await ctx.step.wait_for_event("paid", event="bench/paid", if_exp="async.data.id == event.data.id",
                                         timeout=datetime.timedelta(hours=1))
    return None if paid is None else paid.data["id"]


@client.create_function(fn_id="sleeper", trigger=inngest.TriggerEvent(event="bench/sleep"))
async def sleeper(ctx: inngest.Context) -> int:
    due = datetime.datetime.fromtimestamp(ctx.event.data["due_ms"] / 1000, tz=datetime.timezone.utc)
    await ctx.step.sleep_until("nap", due)
    return int(time.time() * 1000)  # when the function body went on after the sleep


app = FastAPI()
inngest.fast_api.serve(app, client, [*noop_and_steps(client, "bench"), waiter, sleeper])
