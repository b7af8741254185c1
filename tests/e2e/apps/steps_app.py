"""Official-SDK functions for the step primitives: cancellation, idempotency, several triggers,
lookback waits, races, large state, output limits, invoke by id and in chains, send_event."""

from __future__ import annotations

import asyncio
import datetime

import inngest
import inngest.fast_api
from fastapi import FastAPI

from tests.e2e.apps.ledger import record

# Dev or cloud mode from the environment (INNGEST_DEV), as a deployed app would be configured.
client = inngest.Inngest(app_id="steps")


async def cancellable_failure(ctx: inngest.Context) -> None:
    record("cancellable-on-failure", run_id=ctx.run_id)


@client.create_function(
    fn_id="cancellable",
    trigger=inngest.TriggerEvent(event="steps/cancellable"),
    cancel=[inngest.Cancel(event="steps/cancel", if_exp="async.data.id == event.data.id")],
    on_failure=cancellable_failure,
)
async def cancellable(ctx: inngest.Context) -> str:
    async def before() -> None:
        record("cancellable-before", run_id=ctx.run_id, id=ctx.event.data["id"])

    async def after() -> None:
        record("cancellable-after", run_id=ctx.run_id, id=ctx.event.data["id"])

    await ctx.step.run("before", before)
    await ctx.step.sleep("long-nap", datetime.timedelta(seconds=ctx.event.data.get("seconds", 60)))
    await ctx.step.run("after", after)
    return "finished"


@client.create_function(fn_id="cancel-watcher", trigger=inngest.TriggerEvent(event="inngest/function.cancelled"))
async def cancel_watcher(ctx: inngest.Context) -> None:
    record("cancelled-event", run_id=ctx.event.data.get("run_id"), function_id=ctx.event.data.get("function_id"),
           error=ctx.event.data.get("error"))


@client.create_function(fn_id="idempotent", trigger=inngest.TriggerEvent(event="steps/charge"),
                        idempotency="event.data.order_id")
async def idempotent(ctx: inngest.Context) -> None:
    record("charge", run_id=ctx.run_id, order_id=ctx.event.data.get("order_id"), n=ctx.event.data.get("n"))


@client.create_function(
    fn_id="multi-trigger",
    trigger=[inngest.TriggerEvent(event="multi/a"), inngest.TriggerEvent(event="multi/b", expression="event.data.ok")],
)
async def multi_trigger(ctx: inngest.Context) -> str:
    record("multi", run_id=ctx.run_id, name=ctx.event.name)
    return ctx.event.name


@client.create_function(fn_id="lookback-waiter", trigger=inngest.TriggerEvent(event="steps/order"))
async def lookback_waiter(ctx: inngest.Context) -> dict | None:
    async def prepare() -> None:
        record("order-preparing", run_id=ctx.run_id, id=ctx.event.data["id"])
        await asyncio.sleep(ctx.event.data.get("prepare_s", 1.5))  # the confirmation arrives meanwhile

    await ctx.step.run("prepare", prepare)
    condition = "async.data.id == event.data.id"
    if ctx.event.data.get("lookback"):
        condition += " && async.ts >= event.ts"
    confirmed = await ctx.step.wait_for_event("confirmed", event="steps/confirmed", if_exp=condition,
                                              timeout=datetime.timedelta(seconds=ctx.event.data.get("timeout", 3)))
    return None if confirmed is None else {"by": confirmed.data["by"]}


@client.create_function(fn_id="racer", trigger=inngest.TriggerEvent(event="steps/race"))
async def racer(ctx: inngest.Context) -> dict:
    async def fast() -> str:
        record("race-branch", run_id=ctx.run_id, name="fast")
        return "fast"

    async def slow() -> str:
        record("race-branch", run_id=ctx.run_id, name="slow")
        await asyncio.sleep(2)
        return "slow"

    results = await ctx.group.parallel(
        (lambda: ctx.step.run("fast", fast), lambda: ctx.step.run("slow", slow)),
        parallel_mode=inngest.ParallelMode.RACE,
    )
    return {"results": list(results)}


@client.create_function(fn_id="big-state", trigger=inngest.TriggerEvent(event="steps/big-state"))
async def big_state(ctx: inngest.Context) -> dict:
    size = ctx.event.data["size"]
    chunks = []
    for name in ("a", "b", "c"):

        async def make(name: str = name) -> str:
            record("big-step", run_id=ctx.run_id, name=name)
            return name * size

        chunks.append(await ctx.step.run(name, make))
    return {"lengths": [len(c) for c in chunks], "first": [c[0] for c in chunks]}


@client.create_function(fn_id="too-big", trigger=inngest.TriggerEvent(event="steps/too-big"), retries=0)
async def too_big(ctx: inngest.Context) -> None:
    async def huge() -> str:
        record("huge-step", run_id=ctx.run_id)
        return "x" * (5 * 1024 * 1024)

    await ctx.step.run("huge", huge)


@client.create_function(fn_id="chain-leaf", trigger=inngest.TriggerEvent(event="steps/never"))
async def chain_leaf(ctx: inngest.Context) -> dict:
    record("chain", run_id=ctx.run_id, level="leaf")
    return {"path": ["leaf"], "x": ctx.event.data["x"] + 1}


@client.create_function(fn_id="chain-mid", trigger=inngest.TriggerEvent(event="steps/never"))
async def chain_mid(ctx: inngest.Context) -> dict:
    async def note() -> None:  # in a step: code outside steps runs again on every call
        record("chain", run_id=ctx.run_id, level="mid")

    await ctx.step.run("note", note)
    below = await ctx.step.invoke_by_id("leaf", function_id="chain-leaf", data={"x": ctx.event.data["x"] * 10})
    return {"path": ["mid", *below["path"]], "x": below["x"]}


@client.create_function(fn_id="chain-top", trigger=inngest.TriggerEvent(event="steps/chain"))
async def chain_top(ctx: inngest.Context) -> dict:
    below = await ctx.step.invoke("mid", function=chain_mid, data={"x": ctx.event.data["x"]})
    return {"path": ["top", *below["path"]], "x": below["x"]}


@client.create_function(fn_id="slow-child", trigger=inngest.TriggerEvent(event="steps/never"))
async def slow_child(ctx: inngest.Context) -> str:
    await ctx.step.sleep("dawdle", datetime.timedelta(seconds=30))
    return "too late"


@client.create_function(fn_id="impatient", trigger=inngest.TriggerEvent(event="steps/impatient"))
async def impatient(ctx: inngest.Context) -> dict:
    try:
        await ctx.step.invoke("ask", function=slow_child, data={}, timeout=datetime.timedelta(seconds=1))
    except inngest.StepError as err:
        return {"error": err.name, "message": err.message}
    return {"error": None}


@client.create_function(fn_id="sender", trigger=inngest.TriggerEvent(event="steps/send"))
async def sender(ctx: inngest.Context) -> list[str]:
    ids = await ctx.step.send_event("fan", [inngest.Event(name="steps/sent", data={"i": i}) for i in range(3)])
    await ctx.step.sleep_until("until", datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1))
    return list(ids)


@client.create_function(fn_id="receiver", trigger=inngest.TriggerEvent(event="steps/sent"))
async def receiver(ctx: inngest.Context) -> None:
    record("received", run_id=ctx.run_id, i=ctx.event.data["i"])


@client.create_function(fn_id="patient", trigger=inngest.TriggerEvent(event="steps/patient"))
async def patient(ctx: inngest.Context) -> dict:
    # A day's sleep and a day's wait: tests fast-forward them (POST /v1/runs/{id}/fast-forward).
    await ctx.step.sleep("a-day", datetime.timedelta(days=1))
    await ctx.step.run("awake", lambda: record("patient-awake", run_id=ctx.run_id))
    reply = await ctx.step.wait_for_event("reply", event="steps/reply", timeout=datetime.timedelta(days=1))
    return {"reply": reply.data if reply else None}


app = FastAPI()
inngest.fast_api.serve(
    app,
    client,
    [cancellable, cancel_watcher, idempotent, multi_trigger, lookback_waiter, racer, big_state, too_big,
     chain_leaf, chain_mid, chain_top, slow_child, impatient, sender, receiver, patient],
)
