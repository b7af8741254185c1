"""Functions that the burst tests' app and the benchmarks' app (bench/bench_app.py) both serve."""

from __future__ import annotations

from typing import Callable

import inngest


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
