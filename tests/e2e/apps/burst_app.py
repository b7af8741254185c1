"""The burst sequence's functions (noop, three steps, a one-second sleep); every request that
reaches a function body is written to the ledger with the attempt the SDK was given."""

from __future__ import annotations

import datetime

import inngest
import inngest.fast_api
from fastapi import FastAPI

from tests.e2e.apps.common_functions import noop_and_steps
from tests.e2e.apps.ledger import record

client = inngest.Inngest(app_id="burst", is_production=False)


def entered(ctx: inngest.Context, function: str) -> None:
    record("call", run_id=ctx.run_id, function=function, attempt=ctx.attempt)


@client.create_function(fn_id="sleeper", trigger=inngest.TriggerEvent(event="burst/sleep"))
async def sleeper(ctx: inngest.Context) -> int:
    entered(ctx, "sleeper")
    await ctx.step.sleep("nap", datetime.timedelta(seconds=1))
    return 1


@client.create_function(fn_id="sleep-until", trigger=inngest.TriggerEvent(event="burst/sleep-until"))
async def sleep_until(ctx: inngest.Context) -> int:
    due = datetime.datetime.fromtimestamp(ctx.event.data["due_ms"] / 1000, tz=datetime.timezone.utc)
    await ctx.step.sleep_until("nap", due)
    return ctx.event.data["i"]


app = FastAPI()
inngest.fast_api.serve(app, client, [*noop_and_steps(client, "burst", entered), sleeper, sleep_until])
