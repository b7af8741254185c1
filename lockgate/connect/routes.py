"""HTTP and WebSocket routes of Connect, and the gateway's wiring into the engine."""

from __future__ import annotations

from typing import Any

import orjson
from google.protobuf.message import DecodeError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from lockgate.connect import messages as pb
from lockgate.connect.gateway import ConnectOptions, Gateway
from lockgate.engine.engine import Engine
from lockgate.engine.sync import CONNECT_APP_SCHEME
from lockgate.interfaces.auth import AccessPolicy
from lockgate.interfaces.errors import error_response
from lockgate.store.connect_operations import CONNECT_CHANNEL

GATEWAY_PATH = "/v0/connect"
MAX_FLUSH_BODY = 8 * 1024 * 1024
PROTOBUF = "application/protobuf"


def build_gateway(engine: Engine, options: ConnectOptions) -> Gateway:
    async def sync_apps(hello: Any) -> str | None:
        """WORKER_CONNECT carries the same function configs as /fn/register: sync each app the same way."""
        for app in hello.apps:
            try:
                functions = orjson.loads(app.functions or b"[]")
            except orjson.JSONDecodeError:
                return f"app {app.app_name!r}: its function configs are not JSON"
            body = {"appName": app.app_name, "url": CONNECT_APP_SCHEME + app.app_name, "functions": functions,
                    "framework": hello.framework or "connect", "sdk": f"{hello.sdk_language}:{hello.sdk_version}"}
            outcome = await engine.register(body, connect=True)
            if outcome.status >= 400:
                return f"app {app.app_name!r} could not be synced: {outcome.body.get('error')}"
        return None

    gateway = Gateway(engine.store, options, sync_apps)
    engine.connect = gateway
    engine.listeners[CONNECT_CHANNEL] = gateway.notified
    return gateway


def routes(gateway: Gateway, access: AccessPolicy) -> list[BaseRoute]:
    async def start(request: Request) -> Response:
        access.check_api(request)
        try:
            ask = pb.StartRequest.FromString(await request.body())
        except DecodeError:
            return error_response(400, "the body must be a protobuf connect.v1.StartRequest")
        status, body = await gateway.start_response(_gateway_url(request), list(ask.exclude_gateways))
        if status != 200:
            return error_response(status, str(body))
        return Response(body, media_type=PROTOBUF)

    async def flush(request: Request) -> Response:
        # A reply whose acknowledgement the worker never saw, sent again over HTTP.
        access.check_api(request)
        raw = await request.body()
        if len(raw) > MAX_FLUSH_BODY:
            return error_response(413, f"a flushed reply may be at most {MAX_FLUSH_BODY} bytes")
        try:
            reply = pb.SDKResponse.FromString(raw)
        except DecodeError:
            return error_response(400, "the body must be a protobuf connect.v1.SDKResponse")
        if not reply.request_id:
            return error_response(400, "the flushed SDKResponse has no request_id")
        await gateway.deliver_reply(reply, raw)
        return Response(pb.FlushResponse(request_id=reply.request_id).SerializeToString(), media_type=PROTOBUF)

    return [
        Route("/v0/connect/start", start, methods=["POST"]),
        Route("/v0/connect/flush", flush, methods=["POST"]),
        WebSocketRoute(GATEWAY_PATH, gateway.serve),
    ]


def _gateway_url(request: Request) -> str:
    """The WebSocket URL of this replica as the worker reached it (behind a TLS proxy: wss)."""
    scheme = "wss" if request.headers.get("x-forwarded-proto", request.url.scheme) == "https" else "ws"
    host = request.headers.get("x-forwarded-host") or request.headers.get("host") or request.url.netloc
    return f"{scheme}://{host}{GATEWAY_PATH}"
