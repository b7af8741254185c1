"""A FastAPI app using the official inngest SDK, exercising the core engine."""

from __future__ import annotations

import datetime

import inngest
import inngest.fast_api
from fastapi import FastAPI

from tests.e2e.apps.common_functions import recorded_steps
from tests.e2e.apps.ledger import record

# Dev or cloud mode from the environment (INNGEST_DEV), as a deployed app would be configured.
client = inngest.Inngest(app_id="basic")


@client.create_function(fn_id="hello", trigger=inngest.TriggerEvent(event="test/hello"))
async def hello(ctx: inngest.Context) -> str:
    record("hello", run_id=ctx.run_id)
    return "hello " + ctx.event.data["name"]


three_steps = recorded_steps(client, "three-steps", "test/steps")


@client.create_function(fn_id="flaky-step", trigger=inngest.TriggerEvent(event="test/flaky"), retries=3)
async def flaky_step(ctx: inngest.Context) -> int:
    async def sometimes() -> int:
        record("flaky-attempt", run_id=ctx.run_id, attempt=ctx.attempt)
        if ctx.attempt < 2:
            raise RuntimeError(f"transient failure on attempt {ctx.attempt}")
        return ctx.attempt

    return await ctx.step.run("sometimes", sometimes)


@client.create_function(fn_id="always-fails", trigger=inngest.TriggerEvent(event="test/always-fails"), retries=2)
async def always_fails(ctx: inngest.Context) -> None:
    record("always-fails", run_id=ctx.run_id, attempt=ctx.attempt)
    raise RuntimeError("this function always fails")


async def on_failure_handler(ctx: inngest.Context) -> None:
    record(
        "on-failure",
        run_id=ctx.run_id,
        failed_run_id=ctx.event.data.get("run_id"),
        function_id=ctx.event.data.get("function_id"),
        message=(ctx.event.data.get("error") or {}).get("message"),
        original_name=(ctx.event.data.get("event") or {}).get("name"),
    )


@client.create_function(
    fn_id="non-retriable",
    trigger=inngest.TriggerEvent(event="test/non-retriable"),
    retries=4,
    on_failure=on_failure_handler,
)
async def non_retriable(ctx: inngest.Context) -> None:
    record("non-retriable", run_id=ctx.run_id, attempt=ctx.attempt)
    raise inngest.NonRetriableError("payment card was declined")


@client.create_function(
    fn_id="filtered",
    trigger=inngest.TriggerEvent(event="test/filtered", expression="event.data.x == 1"),
)
async def filtered(ctx: inngest.Context) -> int:
    record("filtered", run_id=ctx.run_id, x=ctx.event.data.get("x"))
    return ctx.event.data["x"]


@client.create_function(fn_id="wildcard", trigger=inngest.TriggerEvent(event="wild/*"))
async def wildcard(ctx: inngest.Context) -> str:
    return ctx.event.name


@client.create_function(fn_id="every-minute", trigger=inngest.TriggerCron(cron="TZ=Europe/Paris * * * * *"))
async def every_minute(ctx: inngest.Context) -> dict:
    record("cron", run_id=ctx.run_id, name=ctx.event.name, cron=ctx.event.data.get("cron"))
    return {"event": ctx.event.name}


@client.create_function(fn_id="step-error-caught", trigger=inngest.TriggerEvent(event="test/caught"), retries=1)
async def step_error_caught(ctx: inngest.Context) -> str:
    async def broken() -> None:
        raise ValueError("broken step")

    try:
        await ctx.step.run("broken", broken)
    except inngest.StepError as err:
        return f"caught: {err.message}"
    return "not caught"


@client.create_function(fn_id="step-gives-up", trigger=inngest.TriggerEvent(event="test/step-gives-up"), retries=2)
async def step_gives_up(ctx: inngest.Context) -> None:
    async def charge() -> None:
        record("charge-attempt", run_id=ctx.run_id, attempt=ctx.attempt)
        raise ValueError("card declined\nsecond line of detail")

    await ctx.step.run("charge", charge)


@client.create_function(fn_id="retry-after", trigger=inngest.TriggerEvent(event="test/retry-after"), retries=1)
async def retry_after(ctx: inngest.Context) -> int:
    record("retry-after", run_id=ctx.run_id, attempt=ctx.attempt)
    if ctx.attempt == 0:
        raise inngest.RetryAfterError("come back later", datetime.timedelta(seconds=2))
    return ctx.attempt


@client.create_function(fn_id="napper", trigger=inngest.TriggerEvent(event="test/nap"))
async def napper(ctx: inngest.Context) -> str:
    async def before() -> None:
        record("nap-before", run_id=ctx.run_id)

    async def after() -> None:
        record("nap-after", run_id=ctx.run_id)

    await ctx.step.run("before", before)
    await ctx.step.sleep("nap", datetime.timedelta(seconds=ctx.event.data.get("seconds", 1)))
    await ctx.step.run("after", after)
    return "rested"


@client.create_function(fn_id="waiter", trigger=inngest.TriggerEvent(event="test/wait"))
async def waiter(ctx: inngest.Context) -> dict | None:
    async def ready() -> None:
        record("waiter-ready", run_id=ctx.run_id, id=ctx.event.data["id"])

    await ctx.step.run("ready", ready)
    approval = await ctx.step.wait_for_event(
        "approval",
        event="test/approve",
        if_exp="async.data.id == event.data.id",
        timeout=datetime.timedelta(seconds=ctx.event.data.get("timeout", 30)),
    )
    return None if approval is None else {"by": approval.data["by"], "ts_is_int": isinstance(approval.ts, int)}


@client.create_function(fn_id="child", trigger=inngest.TriggerEvent(event="test/never-sent"))
async def child(ctx: inngest.Context) -> dict:
    if ctx.event.data.get("fail"):
        raise inngest.NonRetriableError("child refused")
    return {"doubled": ctx.event.data["x"] * 2, "event": ctx.event.name,
            "has_meta": "_inngest" in ctx.event.data}


@client.create_function(fn_id="parent", trigger=inngest.TriggerEvent(event="test/invoke"))
async def parent(ctx: inngest.Context) -> dict:
    try:
        result = await ctx.step.invoke("call-child", function=child,
                                       data={"x": ctx.event.data["x"], "fail": ctx.event.data.get("fail", False)})
    except inngest.StepError as err:
        return {"error": err.message}
    return result


@client.create_function(fn_id="fan-out", trigger=inngest.TriggerEvent(event="test/parallel"))
async def fan_out(ctx: inngest.Context) -> dict:
    def branch(name: str):
        async def run() -> str:
            record("branch", run_id=ctx.run_id, name=name)
            return name

        return lambda: ctx.step.run(name, run)

    results = await ctx.group.parallel((branch("p1"), branch("p2"), branch("p3")))

    async def after() -> int:
        record("after", run_id=ctx.run_id)
        return len(results)

    return {"results": list(results), "after": await ctx.step.run("after", after)}


app = FastAPI()
inngest.fast_api.serve(
    app,
    client,
    [hello, three_steps, flaky_step, always_fails, non_retriable, filtered, wildcard, every_minute,
     step_error_caught, step_gives_up, retry_after, napper, waiter, child, parent, fan_out],
)
