"""A worker process using the official inngest SDK's Connect mode (no HTTP endpoint of its own).

Run as `python -m tests.e2e.apps.connect_worker`; INNGEST_DEV (or INNGEST_BASE_URL plus keys in
production mode) points it at lockgate, WORKER_NAME tells its ledger entries apart.
"""

from __future__ import annotations

import asyncio
import os
import time

import inngest
from inngest.connect import connect

from tests.e2e.apps.ledger import record

WORKER = os.environ.get("WORKER_NAME", "w")
client = inngest.Inngest(app_id="connect-py", app_version=os.environ.get("APP_VERSION", "v1"),
                         is_production=os.environ.get("INNGEST_DEV") in (None, "0"))


@client.create_function(fn_id="steps", trigger=inngest.TriggerEvent(event="connect/steps"), retries=3)
async def steps(ctx: inngest.Context) -> dict:
    async def one() -> str:
        record("step", run_id=ctx.run_id, step="one", worker=WORKER)
        return "one"

    async def two() -> str:
        # `pause` seconds inside the step's first attempt: time to kill the worker, or to outlive a heartbeat
        record("step-start", run_id=ctx.run_id, step="two", worker=WORKER, attempt=ctx.attempt)
        if ctx.attempt == 0:
            await asyncio.sleep(float(ctx.event.data.get("pause", 0)))
        record("step", run_id=ctx.run_id, step="two", worker=WORKER)
        return "two"

    first = await ctx.step.run("one", one)
    second = await ctx.step.run("two", two)
    return {"steps": [first, second], "n": ctx.event.data.get("n")}


@client.create_function(fn_id="quick", trigger=inngest.TriggerEvent(event="connect/quick"), retries=0)
async def quick(ctx: inngest.Context) -> dict:
    record("quick", run_id=ctx.run_id, worker=WORKER, n=ctx.event.data.get("n"))
    time.sleep(float(ctx.event.data.get("hold", 0)))  # hold the worker so a burst spreads over several
    return {"worker": WORKER}


async def main() -> None:
    conn = connect([(client, [steps, quick])], instance_id=WORKER)
    await conn.start()


if __name__ == "__main__":
    asyncio.run(main())
