"""The app the benchmarks drive (official SDK): a noop, three steps, and a run waiting for an event."""

from __future__ import annotations

import datetime
import os
import time

import inngest
import inngest.fast_api
from fastapi import FastAPI

from tests.e2e.apps.common_functions import noop_and_steps

# Production mode (signed calls, for `lockgate start`) when started with INNGEST_DEV=0 and a signing key.
client = inngest.Inngest(app_id="bench", is_production=os.environ.get("INNGEST_DEV") == "0")


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
