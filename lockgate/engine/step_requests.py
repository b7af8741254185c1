"""Makes the HTTP request a step hands to the server (step.ai.infer, step.fetch); never raises."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from lockgate.protocol import step_requests as protocol

TIMEOUT = aiohttp.ClientTimeout(total=600, sock_connect=10)  # model calls can take minutes


async def perform(session: aiohttp.ClientSession, op: str, opts: Any) -> protocol.StepRequestResult:
    try:
        request = protocol.build_request(op, opts)
    except protocol.StepRequestError as exc:
        return protocol.StepRequestResult(error={"name": "Error", "message": str(exc)}, retriable=False)
    try:
        async with session.request(request.method, request.url, headers=request.headers, data=request.body,
                                   timeout=TIMEOUT) as response:
            body = await response.read()
            if op == protocol.FETCH_OP:
                headers = {str(k): v for k, v in response.headers.items()}  # plain str keys: they are stored as JSON
                return protocol.fetch_result(response.status, headers, body)
            return protocol.ai_result(response.status, body)
    except asyncio.TimeoutError:
        return protocol.unreachable(request.url, "no answer in time")
    except aiohttp.ClientError as exc:
        return protocol.unreachable(request.url, f"{exc.__class__.__name__}: {exc}")
