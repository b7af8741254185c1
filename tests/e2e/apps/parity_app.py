"""Functions whose system events (`inngest/function.failed|finished|cancelled`) the parity tests read,
each through the official SDK: `on_failure`, and functions triggered by the system events."""

from __future__ import annotations

import datetime

import inngest
import inngest.fast_api
from fastapi import FastAPI

from tests.e2e.apps.ledger import record

client = inngest.Inngest(app_id="parity", is_production=False)
WATCHED = " || ".join(f"event.data.function_id == 'parity-parity-{fn}'" for fn in ("ok", "fails", "cancellable"))


async def record_failure(ctx: inngest.Context) -> None:
    record("on-failure", name=ctx.event.name, id=ctx.event.id, data=ctx.event.data)


@client.create_function(fn_id="parity-fails", trigger=inngest.TriggerEvent(event="parity/fail"), retries=0,
                        on_failure=record_failure)
async def fails(ctx: inngest.Context) -> None:
    raise ValueError("boom: " + ctx.event.data["tag"])


@client.create_function(fn_id="parity-ok", trigger=inngest.TriggerEvent(event="parity/ok"))
async def ok(ctx: inngest.Context) -> dict:
    return {"tag": ctx.event.data["tag"], "ok": True}


@client.create_function(fn_id="parity-cancellable", trigger=inngest.TriggerEvent(event="parity/wait"),
                        cancel=[inngest.Cancel(event="parity/cancel", if_exp="async.data.tag == event.data.tag")])
async def cancellable(ctx: inngest.Context) -> None:
    await ctx.step.wait_for_event("never", event="parity/never", timeout=datetime.timedelta(hours=1))


@client.create_function(fn_id="watch-finished",
                        trigger=inngest.TriggerEvent(event="inngest/function.finished", expression=WATCHED))
async def watch_finished(ctx: inngest.Context) -> None:
    record("finished", name=ctx.event.name, id=ctx.event.id, data=ctx.event.data)


@client.create_function(fn_id="watch-cancelled",
                        trigger=inngest.TriggerEvent(event="inngest/function.cancelled", expression=WATCHED))
async def watch_cancelled(ctx: inngest.Context) -> None:
    record("cancelled", name=ctx.event.name, id=ctx.event.id, data=ctx.event.data)


app = FastAPI()
inngest.fast_api.serve(app, client, [fails, ok, cancellable, watch_finished, watch_cancelled])
