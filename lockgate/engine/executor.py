"""Calls an app's SDK endpoint for one queued call and returns what it answered."""

from __future__ import annotations

import asyncio
import contextvars
import errno
import functools
import logging
import weakref
from collections import Counter
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import orjson
from yarl import URL

from lockgate.connect.gateway import connect_request, reply_as_http
from lockgate.engine.app_client import AppConnectError, AppConnectionLost, AppHttpClient, Target, target_of
from lockgate.engine import endpoints
from lockgate.engine.sync import CONNECT_STEP_SCHEMES
from lockgate.models import Function, Job, Run, now_ms
from lockgate.protocol.event_ids import new_ulid
from lockgate.protocol.execution_request import build_execution_body, execution_headers
from lockgate.protocol.jsoncanon import canonical_json
from lockgate.protocol.sdk_response import FunctionErrored, SdkResult, TransportError, parse_sdk_response
from lockgate.protocol.signing import answer_signature_problem, sign_body

log = logging.getLogger("lockgate.executor")

# Above this the SDK is told to fetch events and step state itself (`use_api`).
USE_API_THRESHOLD = 4 * 1024 * 1024

# Idle connections to apps are closed after this long. App servers close theirs after 5 s
# (uvicorn, Node's http) or less; closing ours first keeps a request from going out on a
# connection the app is closing at that very moment.
APP_KEEPALIVE_S = 4.0

# Why a call to an app failed: the `reason` of its log record and its counter in /v1/stats.
FAILURE_REASONS = {
    "timeout": "the app did not answer in time",
    "connection_refused": "nothing accepts connections at the app's address",
    "connect_failed": "could not open a connection to the app",
    "stale_connection": "the app closed a reused keep-alive connection as the request went out",
    "connection_reset": "the connection broke before the app's answer was complete",
    "bad_signature": "the signature of the request or of the answer did not match",
    "http_status": "the app answered with an error status",
    "bad_response": "the app's answer is not one an SDK gives",
    "connect": "the call could not go over Connect",
    "connect_no_worker": "no Connect worker of the app was ready to take the call",
    "connect_lease_lost": "the Connect worker stopped extending its lease (it crashed or lost its connection)",
    "connect_replica_lost": "the lockgate replica holding the Connect worker stopped",
}


def step_url(function_url: str, step_id: str) -> str:
    parts = urlsplit(function_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "stepId"]
    query.append(("stepId", step_id))
    return urlunsplit(parts._replace(query=urlencode(query)))


@functools.lru_cache(maxsize=4096)
def _step_target(function_url: str, step_id: str) -> tuple[str, URL, Target | None]:
    """`step_url`, its parsed form and, for plain http, the lean client's target: once per
    function and step (most calls are "step")."""
    url = step_url(function_url, step_id)
    parsed = URL(url)
    lean = target_of(parsed) if parsed.scheme == "http" and parsed.raw_host and not parsed.raw_user else None
    return url, parsed, lean


class Executor:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        fresh_session: aiohttp.ClientSession | None = None,
        signing_key: str | None = None,
        signing_key_fallback: str | None = None,
        server_kind: str = "dev",
        app_client: AppHttpClient | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.session = session
        # Calls to http:// apps, when given; https, redirects and the rest go through aiohttp.
        self.app_client = app_client
        self.timeout_s = timeout_s if timeout_s is not None else session.timeout.total
        # A new connection per request: where a call goes once a reused connection proved stale.
        self.fresh_session = fresh_session or session
        self.signing_key = signing_key
        self.server_kind = server_kind
        self.connect: Any = None  # lockgate.connect.gateway.Gateway, for apps whose workers dial in
        self.calls = 0  # requests made to apps, for /v1/stats
        self.calls_use_api = 0  # of which too large to carry their state inline
        self.failures: Counter[str] = Counter()  # failed calls by reason, for /v1/stats
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
        """One call to the app, over whichever transport reaches it: HTTP, or a Connect worker."""
        if endpoints.is_endpoint(fn):
            result = await self._call_endpoint(run, fn, job)
        elif fn.url.startswith(CONNECT_STEP_SCHEMES):
            result = await self._call_connect(run, fn, job, memos)
        else:
            result = await self._call_http(run, fn, job, memos)
        if isinstance(result, (TransportError, FunctionErrored)):
            self._failed(run, fn, job, result)
        return result

    async def _call_connect(self, run: Run, fn: Function, job: Job, memos: dict[str, Any]) -> SdkResult:
        data = self.build_body(run, fn, job, memos, signed=False)  # the WebSocket is authenticated instead
        self.calls += 1
        if self.connect is None:
            return TransportError("this server has no Connect gateway, but the function is served over Connect",
                                  reason="connect")
        request = connect_request(app_name=fn.app_name, function_id=fn.id, function_slug=fn.slug,
                                  step_id=job.step_id or "step", run_id=run.run_id, job_id=job.id,
                                  request_id=new_ulid(), body=data)
        reply = await self.connect.call(request)
        if isinstance(reply, TransportError):
            return reply
        status, headers, body = reply_as_http(reply)
        return parse_sdk_response(status, headers, body, now_ms())

    async def _call_http(self, run: Run, fn: Function, job: Job, memos: dict[str, Any]) -> SdkResult:
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
        url, target, lean = _step_target(fn.url, job.step_id or "step")

        async def send(fresh: bool) -> SdkResult:
            if lean is not None and self.app_client is not None:
                result = await self._post_lean(url, lean, data, headers, fresh=fresh)
                if result is not None:
                    return result
                # Redirected: aiohttp follows it.
            return await self._post(self.fresh_session if fresh else self.session, url, data, headers, target=target)

        result = await send(fresh=False)
        if isinstance(result, TransportError) and result.reason == "stale_connection":
            # The app never saw this request (it closed the idle connection as it went out):
            # send it again at once on a new connection, without using up an attempt.
            self._failed(run, fn, job, result, retried=True)
            result = await send(fresh=True)
        return result

    async def _post_lean(self, url: str, target: Target, data: bytes, headers: dict, *,
                         fresh: bool = False) -> SdkResult | None:
        """`_post` over the lean client; None when the app redirects (aiohttp then follows)."""
        assert self.app_client is not None
        try:
            async with asyncio.timeout(self.timeout_s):
                answer = await self.app_client.post(target, headers, data, fresh=fresh)
        except TimeoutError:
            return TransportError(f"the app did not answer in time ({url})", reason="timeout")
        except AppConnectError as exc:
            reason = "connection_refused" if exc.refused else "connect_failed"
            return TransportError(f"could not reach the app at {url}: ClientConnectorError: {exc}", reason=reason)
        except AppConnectionLost as exc:
            # Only a connection that had served earlier requests, and broke before any answer came
            # back, was closed by the app while idle.
            reason = "stale_connection" if exc.reused and not exc.answered else "connection_reset"
            name = "ServerDisconnectedError" if not exc.answered else "ClientPayloadError"
            return TransportError(f"could not reach the app at {url}: {name}: {exc}", reason=reason)
        if answer.status in (301, 302, 303, 307, 308) and "location" in answer.headers:
            return None
        if self.verify_keys:
            problem = untrusted_answer(url, answer.status, answer.headers, answer.body, self.verify_keys)
            if problem:
                return TransportError(problem, reason="bad_signature")
        return parse_sdk_response(answer.status, answer.headers, answer.body, now_ms())

    async def _call_endpoint(self, run: Run, fn: Function, job: Job) -> SdkResult:
        """Continue a durable endpoint's run: its original request again, marked with the run id.

        The SDK recognises the call by `X-Run-Id` and `X-Inngest-Signature` (empty in dev mode) and
        fetches the run's event and recorded steps over the API itself."""
        method, url, body, content_type = endpoints.continuation(run, fn)
        signed = b""
        if body is not None:
            try:  # the SDK parses a JSON body and checks the signature of its canonical form
                body = signed = canonical_json(orjson.loads(body))
            except orjson.JSONDecodeError:
                signed = body
        headers = {
            "Content-Type": content_type,
            "X-Inngest-Signature": sign_body(signed, self.signing_key) if self.signing_key else "",
            "X-Run-Id": run.run_id,
            "X-Request-Id": new_ulid(),
            "X-Inngest-Job-Id": job.id,
            "X-Inngest-Req-Version": str(run.request_version if run.request_version >= 0 else 2),
            "X-Inngest-Server-Kind": self.server_kind,
        }
        if job.step_id and job.step_id != "step":  # one planned step of a parallel group
            headers["X-Inngest-Step-Id"] = job.step_id
        if run.disable_immediate:
            headers["X-Inngest-Force-Step-Plan"] = "true"
        self.calls += 1
        return await self._post(self.session, url, body, headers, method=method)

    async def _post(self, session: aiohttp.ClientSession, url: str, data: bytes | None, headers: dict, *,
                    method: str = "POST", target: URL | None = None) -> SdkResult:
        probe = SimpleNamespace(reused=False)  # set by `AppConnector` when the request goes out on a pooled connection
        _reuse_probe.set(probe)
        answered = False
        try:
            async with session.request(method, target or url, data=data, headers=headers) as response:
                answered = True
                body = await response.read()
                if self.verify_keys:
                    problem = untrusted_answer(url, response.status, response.headers, body, self.verify_keys)
                    if problem:
                        return TransportError(problem, reason="bad_signature")
                return parse_sdk_response(response.status, response.headers, body, now_ms())
        except asyncio.TimeoutError:
            return TransportError(f"the app did not answer in time ({url})", reason="timeout")
        except aiohttp.ClientError as exc:
            reason = _connection_failure(exc, reused=probe.reused, answered=answered)
            return TransportError(f"could not reach the app at {url}: {exc.__class__.__name__}: {exc}", reason=reason)

    def _failed(self, run: Run, fn: Function, job: Job, result: SdkResult, *, retried: bool = False) -> None:
        """Count a failed call by reason and say why in the log (one warning per failed request)."""
        if isinstance(result, FunctionErrored):
            reason, detail = "http_status", f"HTTP {result.status}: {_first_line(result.error)}"
        else:
            reason, detail = result.reason, result.message
        self.failures[reason] += 1
        if retried:
            then = "sent again at once on a new connection (no attempt used)"
        elif not result.retriable:
            then = "the app marked it not retriable, so it will not be retried"
        else:
            then = "the run's retry policy applies"
        log.warning(
            "call to %s failed: %s (run %s, attempt %d): %s; %s",
            fn.slug, FAILURE_REASONS.get(reason, reason), run.run_id, job.attempt, detail, then,
            extra={"run_id": run.run_id, "function": fn.slug, "attempt": job.attempt, "reason": reason,
                   "detail": detail, "url": fn.url, "retried_at_once": retried,
                   "retriable": result.retriable},
        )


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


def _connection_failure(exc: aiohttp.ClientError, *, reused: bool, answered: bool) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        refused = isinstance(exc.os_error, ConnectionRefusedError) or exc.os_error.errno == errno.ECONNREFUSED
        return "connection_refused" if refused else "connect_failed"
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return "timeout"
    dropped = isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError))
    # Only a connection that had served earlier requests, and broke before any answer came back,
    # was closed by the app while idle; a fresh one that breaks means the app failed mid-request.
    if dropped and reused and not answered:
        return "stale_connection"
    return "connection_reset"


def _first_line(error: Any) -> str:
    """An error answer in one line: HTTP status aside, its name and the first line of its message."""
    if isinstance(error, dict):
        name, message = error.get("name"), error.get("message")
        text = f"{name}: {message}" if name and message is not None else str(message if message is not None else error)
    else:
        text = str(error)
    line = text.strip().splitlines()[0] if text.strip() else "(empty body)"
    return line[:300]


# The probe of the request `Executor._post` is making in this task; `AppConnector` marks it.
_reuse_probe: contextvars.ContextVar[SimpleNamespace | None] = contextvars.ContextVar("lockgate_reuse_probe",
                                                                                      default=None)


class AppConnector(aiohttp.TCPConnector):
    """The pool of connections to apps; tells `Executor._post` whether its request went out on a
    connection that had served an earlier request (a stale keep-alive connection is then sent
    again at once). Cheaper than an aiohttp TraceConfig, whose signals cost every request a
    dozen awaits and parameter objects."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._served: weakref.WeakSet = weakref.WeakSet()  # protocols that carried a request before

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        if protocol in self._served:
            probe = _reuse_probe.get()
            if probe is not None:
                probe.reused = True
        elif protocol is not None:
            self._served.add(protocol)
        return connection
