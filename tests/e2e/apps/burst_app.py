"""The burst sequence's functions (noop, three steps, a one-second sleep); every request that
reaches a function body is written to the ledger with the attempt the SDK was given."""

from __future__ import annotations

import datetime

import inngest
import inngest.fast_api
from fastapi import FastAPI

from tests.e2e.apps.ledger import record

client = inngest.Inngest(app_id="burst", is_production=False)


def entered(ctx: inngest.Context, function: str) -> None:
    record("call", run_id=ctx.run_id, function=function, attempt=ctx.attempt)


@client.create_function(fn_id="noop", trigger=inngest.TriggerEvent(event="burst/noop"))
async def noop(ctx: inngest.Context) -> int:
    entered(ctx, "noop")
    return 1


@client.create_function(fn_id="three-steps", trigger=inngest.TriggerEvent(event="burst/steps"))
async def three_steps(ctx: inngest.Context) -> int:
    entered(ctx, "three-steps")

    async def one() -> int:
        return 1

    total = 0
    for name in ("a", "b", "c"):
        total += await ctx.step.run(name, one)
    return total


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
inngest.fast_api.serve(app, client, [noop, three_steps, sleeper, sleep_until])
