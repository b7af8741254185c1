"""An example app to play with: `lockgate dev --example` serves it beside the server.

It uses the official inngest SDK unchanged. Send it events from the shell:

    curl -X POST http://127.0.0.1:8288/e/dev -d '{"name": "video/requested", "data": {"prompt": "a cat"}}'
    curl http://127.0.0.1:8288/v1/runs
"""

from __future__ import annotations

import asyncio
import datetime
import random

import inngest
import inngest.fast_api
from fastapi import FastAPI

client = inngest.Inngest(app_id="example", is_production=False)


@client.create_function(fn_id="generate-video", trigger=inngest.TriggerEvent(event="video/requested"), retries=3)
async def generate_video(ctx: inngest.Context) -> dict:
    """A slow provider call split into durable steps: a crash never re-bills a finished step."""

    async def submit() -> str:
        await asyncio.sleep(0.2)  # stands in for the provider's API
        return f"job-{random.randint(1000, 9999)}"

    job = await ctx.step.run("submit-to-provider", submit)
    await ctx.step.sleep("let-it-render", datetime.timedelta(seconds=2))

    async def fetch() -> str:
        return f"https://videos.example/{job}.mp4"

    url = await ctx.step.run("fetch-result", fetch)
    return {"prompt": ctx.event.data.get("prompt"), "url": url}


@client.create_function(fn_id="hello", trigger=inngest.TriggerEvent(event="demo/hello"))
async def hello(ctx: inngest.Context) -> str:
    return f"hello {ctx.event.data.get('name', 'world')}"


@client.create_function(fn_id="nightly-cleanup", trigger=inngest.TriggerCron(cron="0 3 * * *"))
async def nightly_cleanup(ctx: inngest.Context) -> str:
    return "cleaned"


app = FastAPI()
inngest.fast_api.serve(app, client, [generate_video, hello, nightly_cleanup])
