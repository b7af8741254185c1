"""A production-mode (cloud) app: the official SDK verifies our signatures and signs its answers.

Configured only through the SDK's own environment variables: INNGEST_DEV=0,
INNGEST_BASE_URL, INNGEST_SIGNING_KEY, INNGEST_EVENT_KEY.
"""

from __future__ import annotations

import asyncio

import inngest
import inngest.fast_api
from fastapi import FastAPI

from tests.e2e.apps.common_functions import recorded_steps
from tests.e2e.apps.ledger import record

client = inngest.Inngest(app_id="prod")


steps = recorded_steps(client, "steps", "prod/steps")


@client.create_function(fn_id="tick", trigger=inngest.TriggerCron(cron="* * * * *"))
async def tick(ctx: inngest.Context) -> str:
    record("tick", run_id=ctx.run_id, scheduled=ctx.event.data.get("scheduledAt"))
    return "tock"


@client.create_function(fn_id="slow", trigger=inngest.TriggerEvent(event="prod/slow"))
async def slow(ctx: inngest.Context) -> str:
    async def work() -> str:
        record("slow-start", run_id=ctx.run_id)
        await asyncio.sleep(ctx.event.data.get("seconds", 3))
        record("slow-end", run_id=ctx.run_id)
        return "done"

    return await ctx.step.run("work", work)


app = FastAPI()
inngest.fast_api.serve(app, client, [steps, tick, slow])
