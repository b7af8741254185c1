"""Example 1: a FastAPI app with durable functions, configured from the environment only.

The same code runs against `lockgate dev` and `lockgate start`; only environment variables change:

    INNGEST_DEV          http://127.0.0.1:8288 in development; 0 in production (cloud mode)
    INNGEST_BASE_URL     lockgate's URL in production (the event API and the SDK API)
    INNGEST_SIGNING_KEY  production only: the key `lockgate start --signing-key` holds
    INNGEST_EVENT_KEY    production only: one of `lockgate start --event-key`
    APP_ID               the app's id in lockgate (default "shop")
    REVIEW_DELAY_SECONDS how long after delivery to ask for a review (default 86400, a day)
"""

from __future__ import annotations

import datetime
import logging
import os

import inngest
import inngest.fast_api
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

logger = logging.getLogger("shop")

# No mode or URL in code: the SDK reads INNGEST_DEV / INNGEST_BASE_URL / keys from the environment.
client = inngest.Inngest(app_id=os.environ.get("APP_ID", "shop"), logger=logger)

# Stand-ins for the shop's database and payment provider, so the effects can be inspected.
STOCK: dict[str, int] = {"mug": 100, "poster": 3}
CHARGES: list[dict] = []
PRICES = {"mug": 1200, "poster": 2500}  # cents


@client.create_function(fn_id="fulfil-order", trigger=inngest.TriggerEvent(event="shop/order.placed"), retries=3)
async def fulfil_order(ctx: inngest.Context) -> dict:
    """Reserve, charge, wait for delivery, then ask for a review: each step runs once, even across crashes."""
    order = ctx.event.data

    def reserve() -> int:
        left = STOCK.get(order["item"], 0)
        if left < order["quantity"]:
            raise inngest.NonRetriableError(f"only {left} {order['item']} left, {order['quantity']} ordered")
        STOCK[order["item"]] = left - order["quantity"]
        return STOCK[order["item"]]

    def charge() -> dict:
        receipt = {"order_id": order["order_id"], "cents": PRICES[order["item"]] * order["quantity"]}
        CHARGES.append(receipt)
        return receipt

    left = await ctx.step.run("reserve-stock", reserve)
    receipt = await ctx.step.run("charge-card", charge)
    delay = datetime.timedelta(seconds=float(os.environ.get("REVIEW_DELAY_SECONDS", "86400")))
    await ctx.step.sleep("wait-for-delivery", delay)
    await ctx.step.send_event("ask-for-review", inngest.Event(name="shop/review.requested",
                                                              data={"order_id": order["order_id"]}))
    return {"charged_cents": receipt["cents"], "stock_left": left}


@client.create_function(fn_id="stock-report", trigger=inngest.TriggerCron(cron="0 */6 * * *"))
async def stock_report(ctx: inngest.Context) -> dict:
    """Every 6 hours: what is running low."""
    return await ctx.step.run("count", lambda: {item: n for item, n in STOCK.items() if n < 10})


@client.create_function(fn_id="request-review", trigger=inngest.TriggerEvent(event="shop/review.requested"))
async def request_review(ctx: inngest.Context) -> str:
    return f"review requested for {ctx.event.data['order_id']}"


FUNCTIONS = [fulfil_order, stock_report, request_review]


class Order(BaseModel):
    order_id: str = Field(min_length=1)
    item: str
    quantity: int = Field(gt=0, le=100)


app = FastAPI(title="shop")


@app.post("/orders", status_code=202)
async def place_order(order: Order) -> dict:
    if order.item not in PRICES:
        raise HTTPException(404, f"unknown item {order.item!r}; try one of {sorted(PRICES)}")
    ids = await client.send(inngest.Event(name="shop/order.placed", data=order.model_dump()))
    return {"event_ids": ids}


@app.get("/health")
async def health() -> dict:
    return {"status": "ok", "functions": len(FUNCTIONS)}


inngest.fast_api.serve(app, client, FUNCTIONS)  # at /api/inngest
