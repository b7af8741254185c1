"""How the executor classifies, logs and counts failed calls to an app, over real HTTP."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from aiohttp import web

from lockgate.engine.app_client import AppHttpClient
from lockgate.engine.executor import APP_KEEPALIVE_S, AppConnector, Executor
from lockgate.models import Function, Job, Run
from lockgate.outbound import OutboundPolicy, parse_networks
from lockgate.protocol.sdk_response import FunctionCompleted, FunctionErrored, TransportError
from tests.conftest import free_port
from tests.stale_proxy import StaleKeepAliveProxy

SDK_HEADERS = {"X-Inngest-SDK": "inngest-py:v0.5.19", "Content-Type": "application/json"}


async def sdk_ok(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b'"done"', headers=SDK_HEADERS)


async def sdk_error(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=500, body=b'{"name": "ValueError", "message": "boom\\nsecond line"}', headers=SDK_HEADERS)


async def sdk_slow(request: web.Request) -> web.Response:
    await asyncio.sleep(2)
    return web.Response(body=b'"late"', headers=SDK_HEADERS)


async def sdk_chunked(request: web.Request) -> web.StreamResponse:
    await request.read()
    response = web.StreamResponse(headers=SDK_HEADERS)
    response.enable_chunked_encoding()
    await response.prepare(request)
    for part in (b'{"parts":', b' [1, 2', b", 3]}"):
        await response.write(part)
    await response.write_eof()
    return response


async def sdk_closing(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b'"closed after"', headers={**SDK_HEADERS, "Connection": "close"})


async def moved(request: web.Request) -> web.Response:
    raise web.HTTPTemporaryRedirect("/ok")


@pytest.fixture
async def app_server():
    app = web.Application()
    app.router.add_post("/ok", sdk_ok)
    app.router.add_post("/chunked", sdk_chunked)
    app.router.add_post("/closing", sdk_closing)
    app.router.add_post("/moved", moved)
    app.router.add_post("/error", sdk_error)
    app.router.add_post("/slow", sdk_slow)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


@pytest.fixture(params=["lean", "aiohttp"])
async def sessions(request):
    """The executor's clients: the lean one for http:// apps (as the engine sets it up), or aiohttp alone."""
    pooled = aiohttp.ClientSession(
        connector=AppConnector(keepalive_timeout=APP_KEEPALIVE_S),
        timeout=aiohttp.ClientTimeout(total=0.5))
    fresh = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                  timeout=aiohttp.ClientTimeout(total=0.5))
    lean = AppHttpClient(keepalive_s=APP_KEEPALIVE_S, connect_timeout_s=10, limit=10) \
        if request.param == "lean" else None
    yield pooled, fresh, lean
    await pooled.close()
    await fresh.close()
    if lean is not None:
        await lean.close()


def call_args(url: str, attempt: int = 0):
    run = Run(run_id="01RUNTESTEXECUTOR000000000", function_id="f1", function_slug="app-fn", function_version=1,
              status="Running", events=[{"name": "t/e", "data": {}, "id": "e1", "ts": 1, "user": {}}],
              event_ids=["e1"], created_at=1)
    fn = Function(id="f1", slug="app-fn", app_name="app", name="fn", url=url, config={})
    job = Job(id="job-1", kind="call", due_at=0, run_id=run.run_id, step_id="step", attempt=attempt)
    return run, fn, job, {}


def failure_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "lockgate.executor" and r.levelno == logging.WARNING]


async def test_a_call_on_a_stale_keep_alive_connection_is_sent_again_at_once_without_using_an_attempt(
        app_server, sessions, caplog):
    pooled, fresh, lean = sessions
    proxy = StaleKeepAliveProxy("127.0.0.1", app_server).start()
    try:
        executor = Executor(pooled, fresh_session=fresh, app_client=lean)
        url = f"http://127.0.0.1:{proxy.port}/ok"
        first = await executor.call(*call_args(url))
        assert isinstance(first, FunctionCompleted)
        with caplog.at_level(logging.WARNING, logger="lockgate.executor"):
            second = await executor.call(*call_args(url))  # goes out on the pooled connection, which the app drops
        assert isinstance(second, FunctionCompleted) and second.output == "done"
        assert proxy.closed_on_reuse == 1
        assert executor.failures == {"stale_connection": 1}
        (record,) = failure_records(caplog)
        assert (record.run_id, record.function, record.attempt, record.reason) == (
            "01RUNTESTEXECUTOR000000000", "app-fn", 0, "stale_connection")
        assert record.retried_at_once is True and "no attempt used" in record.getMessage()
    finally:
        proxy.stop()


async def test_refused_timeout_and_error_status_are_logged_with_their_reason(app_server, sessions, caplog):
    pooled, fresh, lean = sessions
    executor = Executor(pooled, fresh_session=fresh, app_client=lean)
    closed_port = free_port()
    with caplog.at_level(logging.WARNING, logger="lockgate.executor"):
        refused = await executor.call(*call_args(f"http://127.0.0.1:{closed_port}/ok", attempt=2))
        late = await executor.call(*call_args(f"http://127.0.0.1:{app_server}/slow"))
        errored = await executor.call(*call_args(f"http://127.0.0.1:{app_server}/error", attempt=1))
    assert isinstance(refused, TransportError) and refused.reason == "connection_refused"
    assert isinstance(late, TransportError) and late.reason == "timeout"
    assert isinstance(errored, FunctionErrored)
    assert executor.failures == {"connection_refused": 1, "timeout": 1, "http_status": 1}
    records = failure_records(caplog)
    assert [(r.reason, r.attempt) for r in records] == [("connection_refused", 2), ("timeout", 0), ("http_status", 1)]
    assert records[2].detail == "HTTP 500: ValueError: boom"
    assert all(r.retried_at_once is False for r in records)


async def test_an_unsigned_answer_in_cloud_mode_is_a_bad_signature(app_server, sessions, caplog):
    pooled, fresh, lean = sessions
    key = "signkey-test-" + "ab" * 32
    executor = Executor(pooled, fresh_session=fresh, signing_key=key, server_kind="cloud", app_client=lean)
    with caplog.at_level(logging.WARNING, logger="lockgate.executor"):
        result = await executor.call(*call_args(f"http://127.0.0.1:{app_server}/ok"))
    assert isinstance(result, TransportError) and result.reason == "bad_signature"
    assert "INNGEST_SIGNING_KEY" in result.message
    assert executor.failures == {"bad_signature": 1}
    assert failure_records(caplog)[0].reason == "bad_signature"


async def test_chunked_closing_and_redirected_answers_are_read_whole(app_server, sessions, caplog):
    pooled, fresh, lean = sessions
    executor = Executor(pooled, fresh_session=fresh, app_client=lean)
    base = f"http://127.0.0.1:{app_server}"
    with caplog.at_level(logging.WARNING, logger="lockgate.executor"):
        chunked = await executor.call(*call_args(f"{base}/chunked"))
        closing = [await executor.call(*call_args(f"{base}/closing")) for _ in range(3)]
        moved = await executor.call(*call_args(f"{base}/moved"))
    assert isinstance(chunked, FunctionCompleted) and chunked.output == {"parts": [1, 2, 3]}
    assert [r.output for r in closing] == ["closed after"] * 3
    assert isinstance(moved, FunctionCompleted) and moved.output == "done"  # a 307 keeps the POST
    assert executor.failures == {} and failure_records(caplog) == []


@pytest.mark.parametrize("client", ["lean", "aiohttp"])
async def test_a_call_the_outbound_policy_forbids_fails_with_the_rule(app_server, client, caplog):
    policy = OutboundPolicy(deny=parse_networks(["127.0.0.0/8"], "outbound_deny"))
    pooled = aiohttp.ClientSession(connector=AppConnector(socket_factory=policy.socket_factory),
                                   timeout=aiohttp.ClientTimeout(total=2))
    lean = AppHttpClient(keepalive_s=APP_KEEPALIVE_S, connect_timeout_s=2, limit=10,
                         socket_factory=policy.socket_factory) if client == "lean" else None
    try:
        executor = Executor(pooled, app_client=lean)
        with caplog.at_level(logging.WARNING, logger="lockgate.executor"):
            result = await executor.call(*call_args(f"http://127.0.0.1:{app_server}/ok"))
        assert isinstance(result, TransportError) and result.reason == "connect_failed"
        assert "outbound policy" in result.message and "outbound_deny" in result.message
        assert executor.failures == {"connect_failed": 1}
    finally:
        await pooled.close()
        if lean is not None:
            await lean.close()
