"""Makes the HTTP request a step hands to the server (step.ai.infer, step.fetch); never raises."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from lockgate.protocol import outbound

TIMEOUT = aiohttp.ClientTimeout(total=600, sock_connect=10)  # model calls can take minutes


async def perform(session: aiohttp.ClientSession, op: str, opts: Any) -> outbound.OutboundResult:
    try:
        request = outbound.build_request(op, opts)
    except outbound.OutboundError as exc:
        return outbound.OutboundResult(error={"name": "Error", "message": str(exc)}, retriable=False)
    try:
        async with session.request(request.method, request.url, headers=request.headers, data=request.body,
                                   timeout=TIMEOUT) as response:
            body = await response.read()
            if op == outbound.FETCH_OP:
                headers = {str(k): v for k, v in response.headers.items()}  # plain str keys: they are stored as JSON
                return outbound.fetch_result(response.status, headers, body)
            return outbound.ai_result(response.status, body)
    except asyncio.TimeoutError:
        return outbound.unreachable(request.url, "no answer in time")
    except aiohttp.ClientError as exc:
        return outbound.unreachable(request.url, f"{exc.__class__.__name__}: {exc}")
