"""Assemble store, engine and HTTP interfaces into one ASGI app, and serve it."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
from typing import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from lockgate.engine.engine import Engine, EngineOptions
from lockgate.engine.operator import OperatorError
from lockgate.interfaces import dashboard, graphql_api, inngest_api, metrics, rest_v1
from lockgate.interfaces.dashboard import live
from lockgate.interfaces.dashboard.session import DashboardAuth
from lockgate.interfaces.qstash_api import QStashApi
from lockgate.protocol.qstash_signing import DEV_CURRENT_KEY, DEV_NEXT_KEY, DEV_TOKEN, new_signing_key
from lockgate.qstash.service import QStash, QStashOptions
from lockgate.interfaces.auth import AccessPolicy
from lockgate.interfaces.errors import ApiError, error_response
from lockgate.settings import Settings
from lockgate.store.base import Store
from lockgate.store.sqlite import SQLiteStore

log = logging.getLogger("lockgate")


def build_store(settings: Settings) -> Store:
    if settings.postgres_uri:
        from lockgate.store.postgres import PostgresStore

        return PostgresStore(settings.postgres_uri, pool_size=settings.postgres_pool_size)
    return SQLiteStore(
        None if settings.in_memory else settings.data_dir,
        in_memory=settings.in_memory,
        synchronous=settings.sqlite_synchronous,
    )


class ServerKindHeader:
    """Announce the server kind on every response, as SDKs expect."""

    def __init__(self, app, kind: str) -> None:
        self.app = app
        self.header = (b"x-inngest-server-kind", kind.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_header(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [self.header]
            await send(message)

        return await self.app(scope, receive, send_with_header)


def build_app(settings: Settings, *, kind: str = "dev", store: Store | None = None, own_port: int | None = None):
    store = store or build_store(settings)
    keys = [k for k in (settings.signing_key, settings.signing_key_fallback) if k]
    engine = Engine(
        store,
        EngineOptions(
            server_kind=kind,
            signing_key=settings.signing_key,
            signing_key_fallback=settings.signing_key_fallback,
            sdk_urls=list(settings.sdk_urls),
            discovery=settings.discovery,
            poll=settings.poll,
            poll_interval_s=settings.poll_interval,
            retry_interval_s=settings.retry_interval,
            workers=settings.workers,
            own_port=own_port,
            lease_ms=int(settings.lease_timeout * 1000),
            # `start` replicas share a PostgreSQL store: never release another process's leases.
            # The dev server is one process by design, so a predecessor's leases lapse at once.
            single_node=kind == "dev" or not settings.postgres_uri,
        ),
    )
    # Dev mode stays open; production checks both kinds of key.
    cloud = kind == "cloud"
    access = AccessPolicy(signing_keys=keys if cloud else [], event_keys=list(settings.event_keys) if cloud else [])
    engine.qstash = build_qstash(settings, store, engine, kind)

    @contextlib.asynccontextmanager
    async def lifespan(app) -> AsyncIterator[None]:
        await store.open()
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()
            await store.close()

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.message, **exc.extra)

    async def on_operator_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OperatorError)  # rerun/replay refused: the same 4xx REST clients get for bad input
        return error_response(exc.status, str(exc))

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, f"no route for {request.method} {request.url.path}")

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return error_response(405, f"{request.method} is not allowed on {request.url.path}")

    # The dashboard: open in dev; in production a login (admin password or the signing-key token).
    auth = DashboardAuth(required=cloud, signing_key=settings.signing_key if cloud else None,
                         admin_password=settings.dashboard_password)

    def metrics_allowed(request: Request) -> None:
        # Scrapers send the signing key as a bearer token; a signed-in browser may look too.
        if cloud and not auth.session(request):
            access.check_api(request)

    routes = [
        *dashboard.routes(engine, auth, kind=kind),
        *metrics.routes(engine, metrics_allowed),
        *inngest_api.routes(engine, access),
        *rest_v1.routes(engine, access),
        *graphql_api.routes(engine, access),
        *QStashApi(engine.qstash).routes(),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: on_api_error, OperatorError: on_operator_error, 404: not_found,
                            405: method_not_allowed},
    )
    app.state.engine = engine
    return ServerKindHeader(app, kind), engine


def build_qstash(settings: Settings, store: Store, engine: Engine, kind: str) -> QStash:
    # In dev, answer like the QStash local dev server so its preset .env values just work.
    dev = kind == "dev"
    options = QStashOptions(
        token=settings.qstash_token or (DEV_TOKEN if dev else None),
        current_signing_key=settings.qstash_current_signing_key or (DEV_CURRENT_KEY if dev else new_signing_key()),
        next_signing_key=settings.qstash_next_signing_key or (DEV_NEXT_KEY if dev else new_signing_key()),
        backoff_scale=settings.qstash_backoff_scale,
    )
    return QStash(store, options, engine.dispatcher.wake)


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before starting so a taken port is reported clearly and --port 0 works."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this: without it a response written in two parts (headers,
    # body) waits ~40 ms for the client's delayed ACK on every keep-alive request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(app, sock: socket.socket | list[socket.socket], *, log_level: str = "info") -> None:
    config = uvicorn.Config(
        app,
        log_level=log_level if log_level == "debug" else "warning",
        access_log=log_level == "debug",
        loop="uvloop",
        http="httptools",
        lifespan="on",
        timeout_graceful_shutdown=15,
    )
    server = uvicorn.Server(config)
    live.shutting_down = lambda: server.should_exit  # open live pages end at once on shutdown
    # uvicorn drains requests and runs our shutdown (finish in-flight calls, hand back leases) on
    # SIGTERM, then re-raises the signal; a no-op handler here turns that into a clean exit 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    # server.run, not asyncio.run(serve()): that would skip the uvloop loop factory.
    server.run(sockets=sock if isinstance(sock, list) else [sock])
