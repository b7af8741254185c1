"""The app the benchmark drives: a noop function and a three-step function (official SDK)."""

from __future__ import annotations

import inngest
import inngest.fast_api
from fastapi import FastAPI

client = inngest.Inngest(app_id="bench", is_production=False)


@client.create_function(fn_id="noop", trigger=inngest.TriggerEvent(event="bench/noop"))
async def noop(ctx: inngest.Context) -> int:
    return 1


@client.create_function(fn_id="three-steps", trigger=inngest.TriggerEvent(event="bench/steps"))
async def three_steps(ctx: inngest.Context) -> int:
    async def one() -> int:
        return 1

    total = 0
    for name in ("a", "b", "c"):
        total += await ctx.step.run(name, one)
    return total


app = FastAPI()
inngest.fast_api.serve(app, client, [noop, three_steps])
