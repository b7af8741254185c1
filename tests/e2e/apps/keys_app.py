"""Official-SDK functions that leave a key row behind in the store for each distinct key they use:
concurrency keys (`flow_limits`), singleton keys (`flow_singletons`) and the event names and match
paths of waits (`wait_keys`). Housekeeping must delete those rows once nothing uses them."""

from __future__ import annotations

import datetime

import inngest
import inngest.fast_api
from fastapi import FastAPI

from tests.e2e.apps.ledger import record

client = inngest.Inngest(app_id="keys", is_production=False)


@client.create_function(fn_id="keys-keyed", trigger=inngest.TriggerEvent(event="keys/keyed"),
                        concurrency=[inngest.Concurrency(limit=1, key="event.data.key")])
async def keyed(ctx: inngest.Context) -> None:
    record("keyed", key=ctx.event.data["key"])


@client.create_function(fn_id="keys-single", trigger=inngest.TriggerEvent(event="keys/single"),
                        singleton=inngest.Singleton(key="event.data.key", mode="skip"))
async def single(ctx: inngest.Context) -> None:
    record("single", key=ctx.event.data["key"])


@client.create_function(fn_id="keys-ping", trigger=inngest.TriggerEvent(event="keys/ping"))
async def ping(ctx: inngest.Context) -> None:
    """Waits briefly for an event named in the trigger, which never comes: one wait key per name."""
    got = await ctx.step.wait_for_event("pong", event=ctx.event.data["await"], timeout=datetime.timedelta(seconds=1))
    record("ping", timed_out=got is None)


@client.create_function(fn_id="keys-hold", trigger=inngest.TriggerEvent(event="keys/hold"),
                        singleton=inngest.Singleton(key="event.data.id", mode="skip"))
async def hold(ctx: inngest.Context) -> str:
    """Live work: a singleton run waiting for its release, keeping its singleton and wait keys."""
    async def before() -> None:
        record("hold-waiting", id=ctx.event.data["id"])

    await ctx.step.run("before", before)
    got = await ctx.step.wait_for_event("release", event="keys/release", if_exp="async.data.id == event.data.id",
                                        timeout=datetime.timedelta(minutes=10))
    record("hold-released", id=ctx.event.data["id"], got=got is not None)
    return "released"


app = FastAPI()
inngest.fast_api.serve(app, client, [keyed, single, ping, hold])
