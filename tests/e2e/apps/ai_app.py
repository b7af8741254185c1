"""`step.ai.infer` with the official SDK's adapters, pointed at a fake provider (FAKE_PROVIDER_URL)."""

from __future__ import annotations

import os

import inngest
import inngest.fast_api
from fastapi import FastAPI
from inngest.experimental.ai import anthropic, openai

from tests.e2e.apps.ledger import record

client = inngest.Inngest(app_id="ai", is_production=False)
PROVIDER = os.environ.get("FAKE_PROVIDER_URL", "http://127.0.0.1:9")


def question(ctx: inngest.Context) -> dict:
    return {"messages": [{"role": "user", "content": ctx.event.data["q"]}]}


@client.create_function(fn_id="ask-openai", trigger=inngest.TriggerEvent(event="ai/openai"), retries=2)
async def ask_openai(ctx: inngest.Context) -> dict:
    base = PROVIDER + ctx.event.data.get("path", "")
    answer = await ctx.step.ai.infer(
        "ask", adapter=openai.Adapter(auth_key="sk-test", base_url=base, model="gpt-test"), body=question(ctx))
    record("after-infer", run_id=ctx.run_id)
    return {"answer": answer}


@client.create_function(fn_id="ask-anthropic", trigger=inngest.TriggerEvent(event="ai/anthropic"), retries=0)
async def ask_anthropic(ctx: inngest.Context) -> dict:
    body = {**question(ctx), "max_tokens": 64}
    answer = await ctx.step.ai.infer(
        "ask", adapter=anthropic.Adapter(auth_key="ak-test", base_url=PROVIDER, model="claude-test"), body=body)
    return {"answer": answer}


app = FastAPI()
inngest.fast_api.serve(app, client, [ask_openai, ask_anthropic])
