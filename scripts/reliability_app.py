"""The app scripts/reliability.py drives: two recorded steps per run, each execution in a ledger.

Many retries with the default backoff, so a run rides out an app outage of several minutes.
Production mode (signed requests) when INNGEST_DEV=0, as `lockgate start` wants.
"""

from __future__ import annotations

import os

import inngest
import inngest.fast_api
from fastapi import FastAPI

from tests.e2e.apps.ledger import record

client = inngest.Inngest(app_id="reliability", is_production=os.environ.get("INNGEST_DEV") == "0")


@client.create_function(fn_id="two-steps", trigger=inngest.TriggerEvent(event="rel/work"), retries=20)
async def two_steps(ctx: inngest.Context) -> dict:
    outputs = []
    for name in ("one", "two"):

        async def effect(name: str = name) -> dict:
            token = record("step", run_id=ctx.run_id, step=name)
            return {"step": name, "token": token}

        outputs.append(await ctx.step.run(name, effect))
    return {"steps": outputs}


app = FastAPI()
inngest.fast_api.serve(app, client, [two_steps])
