"""A FastAPI app whose functions publish realtime messages with the official Python SDK."""

from __future__ import annotations

import inngest
import inngest.fast_api
from fastapi import FastAPI
from inngest.experimental import realtime

client = inngest.Inngest(app_id="realtime-py", is_production=False)


@client.create_function(fn_id="report-progress", trigger=inngest.TriggerEvent(event="rt/progress"))
async def report_progress(ctx: inngest.Context) -> str:
    channel = ctx.event.data["channel"]

    async def work() -> int:
        for percent in (10, 50):
            await realtime.publish(client, channel, "status", {"percent": percent})
        # The synchronous helper speaks the same API.
        realtime.publish_sync(client, channel, "status", {"percent": 100})
        await realtime.publish(client, channel, "other-topic", {"hidden": True})
        return 3

    await ctx.step.run("work", work)
    return "done"


@client.create_function(fn_id="three-steps", trigger=inngest.TriggerEvent(event="rt/steps"))
async def three_steps(ctx: inngest.Context) -> dict:
    async def one() -> int:
        return 1

    async def big() -> str:
        return "x" * 40_000  # past the progress stream's output limit: sent truncated

    a = await ctx.step.run("one", one)
    b = await ctx.step.run("big", big)
    return {"a": a, "b_len": len(b)}


@client.create_function(fn_id="nap", trigger=inngest.TriggerEvent(event="rt/nap"))
async def nap(ctx: inngest.Context) -> str:
    await ctx.step.sleep("nap", 200)  # milliseconds: woken by the dispatcher's bulk timer path
    return "rested"


app = FastAPI()
inngest.fast_api.serve(app, client, [report_progress, three_steps, nap])
