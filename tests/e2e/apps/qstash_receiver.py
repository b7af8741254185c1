"""A QStash destination: verifies every delivery with the official qstash.Receiver and records it.

`/r/<behaviour>[-<suffix>]` answers by behaviour (ok, nf, fail, nr, ra, flaky, slow, slowfail); the suffix
gives each test its own hit counter and records.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections import Counter

from fastapi import FastAPI, Request, Response
from qstash import Receiver

from tests.e2e.apps.ledger import record

app = FastAPI()
receiver = Receiver(os.environ["QSTASH_CURRENT_SIGNING_KEY"], os.environ["QSTASH_NEXT_SIGNING_KEY"])
hits: Counter[str] = Counter()


@app.api_route("/r/{name}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
async def destination(name: str, request: Request) -> Response:
    import time

    started = time.time()
    body = await request.body()
    hits[request.url.path] += 1
    verified, error = False, None
    try:
        receiver.verify(signature=request.headers.get("upstash-signature", ""), body=body.decode(),
                        url=str(request.url))
        verified = True
    except Exception as exc:  # recorded: the test asserts on it
        error = str(exc)
    behaviour = name.split("-", 1)[0]
    if behaviour in ("slow", "slowfail"):
        await asyncio.sleep(1.0)
    record("delivery", name=name, method=request.method, url=str(request.url), headers=dict(request.headers),
           body=base64.b64encode(body).decode(), verified=verified, error=error, started=started, ended=time.time(),
           hit=hits[request.url.path])
    if behaviour == "nf":
        return Response("404 Not Found", status_code=404)
    if behaviour in ("fail", "slowfail"):
        return Response("boom", status_code=500)
    if behaviour == "nr":
        return Response("stop", status_code=489, headers={"Upstash-NonRetryable-Error": "true"})
    if behaviour == "ra":
        if hits[request.url.path] == 1:
            return Response("later", status_code=503, headers={"Retry-After": "1"})
        return Response("ok")
    if behaviour == "flaky" and hits[request.url.path] <= 2:
        return Response("flaky", status_code=500)
    return Response("ok")
