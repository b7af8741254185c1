"""The app behind tests/e2e/test_first_user.py: a function that fails before any step, one that works, and an
endpoint that refuses QStash deliveries."""

from __future__ import annotations

import inngest
import inngest.fast_api
from fastapi import FastAPI, Response

client = inngest.Inngest(app_id="first-user", is_production=False)


@client.create_function(fn_id="boom", trigger=inngest.TriggerEvent(event="first/boom"), retries=0)
async def boom(ctx: inngest.Context) -> None:
    raise ValueError(f"no such customer {ctx.event.data.get('customer')}")


@client.create_function(fn_id="hello", trigger=inngest.TriggerEvent(event="first/hello"))
async def hello(ctx: inngest.Context) -> str:
    return f"hello {ctx.event.data.get('name', 'world')}"


app = FastAPI()
inngest.fast_api.serve(app, client, [boom, hello])


@app.post("/deliveries/down")
async def down() -> Response:
    return Response("the receiver is down\nsecond line", status_code=503)
