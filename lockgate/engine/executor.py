"""Calls an app's SDK endpoint for one queued call and returns what it answered."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncio

import aiohttp
import orjson

from lockgate.connect.gateway import connect_request, reply_as_http
from lockgate.engine.sync import CONNECT_STEP_SCHEMES
from lockgate.models import Function, Job, Run, now_ms
from lockgate.protocol.event_ids import new_ulid
from lockgate.protocol.execution_request import build_execution_body, execution_headers
from lockgate.protocol.jsoncanon import canonical_json
from lockgate.protocol.sdk_response import SdkResult, TransportError, parse_sdk_response
from lockgate.protocol.signing import sign_body, verify_signature

log = logging.getLogger("lockgate.executor")

# Above this the SDK is told to fetch events and step state itself (`use_api`).
USE_API_THRESHOLD = 4 * 1024 * 1024


def step_url(function_url: str, step_id: str) -> str:
    parts = urlsplit(function_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "stepId"]
    query.append(("stepId", step_id))
    return urlunsplit(parts._replace(query=urlencode(query)))


class Executor:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        signing_key: str | None = None,
        signing_key_fallback: str | None = None,
        server_kind: str = "dev",
    ) -> None:
        self.session = session
        self.signing_key = signing_key
        self.server_kind = server_kind
        self.connect: Any = None  # lockgate.connect.gateway.Gateway, for apps whose workers dial in
        self.calls = 0  # requests made to apps, for /v1/stats
        self.calls_use_api = 0  # of which too large to carry their state inline
        # Cloud mode trusts only answers signed with our key (or the one being rotated out).
        self.verify_keys = [k for k in (signing_key, signing_key_fallback) if k] if server_kind == "cloud" else []

    def build_body(self, run: Run, fn: Function, job: Job, memos: dict[str, Any], *, signed: bool = True) -> bytes:
        def body(use_api: bool) -> dict:
            return build_execution_body(
                event=run.events[0],
                events=[] if use_api else run.events,
                steps={} if use_api else memos,
                run_id=run.run_id,
                attempt=job.attempt,
                max_attempts=fn.retries + 1,
                disable_immediate_execution=run.disable_immediate,
                stack=[] if use_api else run.stack,
                request_version=run.request_version,
                use_api=use_api,
                fn_id=fn.id,
                qi_id=job.id,  # fenced by POST /v1/checkpoint/{run}/async
            )

        # A signed body must be canonical (the SDK re-canonicalises before it checks the HMAC);
        # an unsigned one need not be, and orjson is an order of magnitude faster.
        encode = canonical_json if self.signing_key and signed else orjson.dumps
        data = encode(body(False))
        if len(data) > USE_API_THRESHOLD:
            data = encode(body(True))
            self.calls_use_api += 1
        return data

    async def call(self, run: Run, fn: Function, job: Job, memos: dict[str, Any]) -> SdkResult:
        """One call to the app, over whichever transport it is reached by: HTTP, or a Connect worker."""
        if fn.url.startswith(CONNECT_STEP_SCHEMES):
            data = self.build_body(run, fn, job, memos, signed=False)  # the WebSocket is authenticated instead
            self.calls += 1
            if self.connect is None:
                return TransportError("this server has no Connect gateway, but the function is served over Connect")
            request = connect_request(app_name=fn.app_name, function_id=fn.id, function_slug=fn.slug,
                                      step_id=job.step_id or "step", run_id=run.run_id, job_id=job.id,
                                      request_id=new_ulid(), body=data)
            reply = await self.connect.call(request)
            if isinstance(reply, TransportError):
                return reply
            status, headers, body = reply_as_http(reply)
            return parse_sdk_response(status, headers, body, now_ms())
        return await self._post(run, fn, job, memos)

    async def _post(self, run: Run, fn: Function, job: Job, memos: dict[str, Any]) -> SdkResult:
        data = self.build_body(run, fn, job, memos)
        self.calls += 1
        signature = sign_body(data, self.signing_key) if self.signing_key else None
        headers = execution_headers(
            run_id=run.run_id,
            step_id=job.step_id or "step",
            request_version=run.request_version,
            job_id=job.id,
            request_id=new_ulid(),
            signature=signature,
        )
        headers["X-Inngest-Server-Kind"] = self.server_kind
        url = step_url(fn.url, job.step_id or "step")
        try:
            async with self.session.post(url, data=data, headers=headers) as response:
                body = await response.read()
                if self.verify_keys and not verify_signature(
                    response.headers.get("X-Inngest-Signature"), body, self.verify_keys
                ):
                    return TransportError(
                        f"the app at {url} answered without a valid X-Inngest-Signature: make sure it runs with"
                        " the same signing key as this server (INNGEST_SIGNING_KEY)"
                    )
                return parse_sdk_response(response.status, response.headers, body, now_ms())
        except asyncio.TimeoutError:
            return TransportError(f"the app did not answer in time ({url})")
        except aiohttp.ClientError as exc:
            return TransportError(f"could not reach the app at {url}: {exc.__class__.__name__}: {exc}")
