"""Calls an app's SDK endpoint for one queued call and returns what it answered."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncio

import aiohttp
import orjson

from lockgate.models import Function, Job, Run, now_ms
from lockgate.protocol.event_ids import new_ulid
from lockgate.protocol.execution_request import build_execution_body, execution_headers
from lockgate.protocol.jsoncanon import canonical_json
from lockgate.protocol.sdk_response import SdkResult, TransportError, parse_sdk_response
from lockgate.protocol.signing import answer_signature_problem, sign_body

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
        self.calls = 0  # requests made to apps, for /v1/stats
        self.calls_use_api = 0  # of which too large to carry their state inline
        # Cloud mode trusts only answers signed with our key (or the one being rotated out).
        self.verify_keys = [k for k in (signing_key, signing_key_fallback) if k] if server_kind == "cloud" else []

    def build_body(self, run: Run, fn: Function, job: Job, memos: dict[str, Any]) -> bytes:
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
        encode = canonical_json if self.signing_key else orjson.dumps
        data = encode(body(False))
        if len(data) > USE_API_THRESHOLD:
            data = encode(body(True))
            self.calls_use_api += 1
        return data

    async def check_trust(self, url: str, timeout_s: float = 10.0) -> str | None:
        """Trust probe (`POST ?probe=trust`): does the app verify our signature and sign with our key?

        Returns why it cannot be trusted, or None. An app that does not answer in time (say a
        single-worker app still busy with the sync that led here) is given the benefit of the doubt:
        its calls are checked one by one anyway.
        """
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("fnId", "stepId")]
        probe_url = urlunsplit(parts._replace(query=urlencode([*query, ("probe", "trust")])))
        body = b"{}"  # the JS SDK refuses a POST without a body
        headers = {"Content-Type": "application/json", "X-Inngest-Server-Kind": self.server_kind,
                   "X-Inngest-Signature": sign_body(body, self.signing_key)}
        try:
            async with self.session.post(probe_url, data=body, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                answer = await response.read()
                return untrusted_answer(url, response.status, response.headers, answer, self.verify_keys)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("trust probe of %s got no answer (%s); its calls will be checked instead", url,
                        exc.__class__.__name__)
            return None

    async def call(self, run: Run, fn: Function, job: Job, memos: dict[str, Any]) -> SdkResult:
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
                if self.verify_keys:
                    problem = untrusted_answer(url, response.status, response.headers, body, self.verify_keys)
                    if problem:
                        return TransportError(problem)
                return parse_sdk_response(response.status, response.headers, body, now_ms())
        except asyncio.TimeoutError:
            return TransportError(f"the app did not answer in time ({url})")
        except aiohttp.ClientError as exc:
            return TransportError(f"could not reach the app at {url}: {exc.__class__.__name__}: {exc}")


def untrusted_answer(url: str, status: int, headers, body: bytes, keys: list[str]) -> str | None:
    """Why a cloud-mode server must not trust this answer, or None when it is signed with our key."""
    if status == 401:
        return (f"the app at {url} refused this server's request signature (HTTP 401): it holds another signing"
                " key; give it the same INNGEST_SIGNING_KEY as this server's --signing-key")
    problem = answer_signature_problem(status, headers, body, keys)
    if problem == "unsigned":
        return (f"the app at {url} answered without an X-Inngest-Signature: it runs in dev mode, where the SDK"
                " neither checks nor signs anything. Start it with INNGEST_DEV=0 and this server's"
                " INNGEST_SIGNING_KEY (the JS SDK v3 picks dev mode unless INNGEST_DEV=0 or NODE_ENV=production)")
    if problem:
        return (f"the app at {url} signed its answer with another signing key: give it this server's"
                " INNGEST_SIGNING_KEY (while rotating, the old one as INNGEST_SIGNING_KEY_FALLBACK)")
    return None
