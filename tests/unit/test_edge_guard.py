"""The edge guard: an unexpected handler exception becomes a JSON 500 with a request id that the
log names too; the traceback stays in the log."""

from __future__ import annotations

import logging

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lockgate.interfaces.guard import EdgeGuard


def _app() -> Starlette:
    async def broken(request):
        raise KeyError("secret-internal-detail")

    async def fine(request):
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/broken", broken), Route("/fine", fine)],
                     middleware=[Middleware(EdgeGuard, max_body_bytes=1000)])


async def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(), raise_app_exceptions=False),
                             base_url="http://test")


async def test_unexpected_exception_is_a_json_500_with_a_logged_request_id(caplog):
    async with await _client() as client:
        with caplog.at_level(logging.ERROR, logger="lockgate.http"):
            response = await client.get("/broken")
    assert response.status_code == 500
    body = response.json()
    assert body["status"] == 500 and body["request_id"] == response.headers["x-request-id"]
    assert "secret-internal-detail" not in response.text and "Traceback" not in response.text
    record = next(r for r in caplog.records if body["request_id"] in r.getMessage())
    assert record.exc_info and "secret-internal-detail" in str(record.exc_info[1])


async def test_every_answer_carries_a_request_id_and_limits_hold_before_reading():
    async with await _client() as client:
        ok = await client.get("/fine")
        assert ok.text == "ok" and len(ok.headers["x-request-id"]) == 16
        big = await client.post("/fine", content=b"x" * 1001)
        assert big.status_code == 413 and "limit is 1000" in big.json()["error"]
        nul = await client.get("/fine?x=%00")
        assert nul.status_code == 400 and "NUL" in nul.json()["error"]
