"""Functions that several apps serve: the test apps and the benchmarks' (bench/bench_app.py)."""

from __future__ import annotations

from typing import Callable

import inngest

from tests.e2e.apps.ledger import record


def noop_and_steps(client: inngest.Inngest, prefix: str,
                   entered: Callable[[inngest.Context, str], None] | None = None) -> list:
    """The noop and three-step functions on `client`, triggered by `<prefix>/noop` and `<prefix>/steps`;
    `entered(ctx, function id)` is called whenever a request reaches a function's body."""

    @client.create_function(fn_id="noop", trigger=inngest.TriggerEvent(event=f"{prefix}/noop"))
    async def noop(ctx: inngest.Context) -> int:
        if entered:
            entered(ctx, "noop")
        return 1

    @client.create_function(fn_id="three-steps", trigger=inngest.TriggerEvent(event=f"{prefix}/steps"))
    async def three_steps(ctx: inngest.Context) -> int:
        if entered:
            entered(ctx, "three-steps")

        async def one() -> int:
            return 1

        total = 0
        for name in ("a", "b", "c"):
            total += await ctx.step.run(name, one)
        return total

    return [noop, three_steps]


def recorded_steps(client: inngest.Inngest, fn_id: str, event: str, *, retries: int = 2):
    """Three steps, each writing its execution to the ledger under a fresh token and returning it: the
    output {"n", "steps": [{"step", "token"}, …]} is what tests.conftest.step_reruns checks the ledger against."""

    @client.create_function(fn_id=fn_id, trigger=inngest.TriggerEvent(event=event), retries=retries)
    async def steps(ctx: inngest.Context) -> dict:
        outputs = []
        for name in ("one", "two", "three"):

            async def effect(name: str = name) -> dict:
                token = record("step", run_id=ctx.run_id, step=name, n=ctx.event.data.get("n"))
                return {"step": name, "token": token}

            outputs.append(await ctx.step.run(name, effect))
        return {"n": ctx.event.data.get("n"), "steps": outputs}

    return steps
