"""Assemble store, engine and HTTP interfaces into one ASGI app, and serve it."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from typing import Any, Callable
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.middleware import Middleware
from starlette.routing import Route

from lockgate import memory
from lockgate.connect import routes as connect_routes
from lockgate.connect.gateway import ConnectOptions
from lockgate.engine.engine import Engine, EngineOptions
from lockgate.engine.operator import OperatorError
from lockgate.engine.retention import Retention
from lockgate.interfaces import checkpoint_api, dashboard, graphql_api, inngest_api, metrics, openapi, realtime_api, rest_v1
from lockgate.interfaces.dashboard import live
from lockgate.interfaces.dashboard.session import DashboardAuth
from lockgate.interfaces.qstash_api import QStashApi
from lockgate.protocol.qstash_signing import DEV_CURRENT_KEY, DEV_NEXT_KEY, DEV_TOKEN, new_signing_key
from lockgate.qstash.service import QStash, QStashOptions
from lockgate.realtime import RealtimeOptions, build_broker
from lockgate.interfaces.auth import AccessPolicy
from lockgate.interfaces.errors import ApiError, error_response, json_response
from lockgate.interfaces.guard import EdgeGuard
from lockgate.interfaces.routing import IndexedRouter
from lockgate.outbound import OutboundPolicy, local_addresses, parse_networks
from lockgate.settings import Settings
from lockgate.startup import StartupProblem
from lockgate.store import operations as ops
from lockgate.store.base import Store
from lockgate.store.sqlite import SQLiteStore

log = logging.getLogger("lockgate.server")


def build_store(settings: Settings) -> Store:
    if settings.postgres_uri:
        from lockgate.store.postgres import PostgresStore

        return PostgresStore(settings.postgres_uri, pool_size=settings.postgres_pool_size,
                             idle_in_transaction_timeout=settings.postgres_idle_in_transaction_timeout)
    return SQLiteStore(
        None if settings.in_memory else settings.data_dir,
        in_memory=settings.in_memory,
        synchronous=settings.sqlite_synchronous,
    )


def build_app(settings: Settings, *, kind: str = "dev", store: Store | None = None, own_port: int | None = None,
              on_ready: Callable[[], None] | None = None, wait_for_apps: list[str] | None = None):
    store = store or build_store(settings)
    limits = settings.limits()
    outbound = outbound_policy(settings, kind, own_port)
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
            own_url=None if own_port is None else f"http://{_reachable_host(settings.host)}:{own_port}",
            lease_ms=int(settings.lease_timeout * 1000),
            replica_name=settings.replica_name,
            # `start` replicas share a PostgreSQL store: never release another process's leases.
            # The dev server is one process by design, so a predecessor's leases lapse at once.
            single_node=kind == "dev" or not settings.postgres_uri,
            limits=limits,
            outbound=outbound,
            retention=Retention(seconds=settings.retention_seconds(kind),
                                sweep_interval_s=settings.housekeeping_interval),
        ),
    )
    # Dev mode stays open; production checks both kinds of key.
    cloud = kind == "cloud"
    access = AccessPolicy(signing_keys=keys if cloud else [], event_keys=list(settings.event_keys) if cloud else [])
    engine.qstash = build_qstash(settings, store, engine, kind)
    gateway = connect_routes.build_gateway(engine, ConnectOptions(
        heartbeat_interval_s=settings.connect_heartbeat_interval,
        extend_lease_interval_s=settings.connect_lease_interval,
        signing_keys=keys if cloud else [],
        single_node=engine.options.single_node,
        endpoint=settings.connect_gateway_url or _gateway_url(settings.host, own_port),
    ))
    engine.realtime = build_broker(store, redis_uri=settings.redis_uri, options=RealtimeOptions(
        retention_s=settings.realtime_retention_seconds,
        retention_messages=settings.realtime_retention_messages,
        max_message_bytes=settings.realtime_max_message_bytes,
        token_ttl_s=settings.realtime_token_ttl,
    ))
    engine.progress.enabled = settings.realtime_progress

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

    api_document = openapi.document(limits)

    async def openapi_json(request: Request) -> Response:
        return json_response(api_document)

    routes = [
        *dashboard.routes(engine, auth, kind=kind),
        *metrics.routes(engine, metrics_allowed),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        *inngest_api.routes(engine, access),
        *checkpoint_api.routes(engine, access, signing_keys=keys),
        *rest_v1.routes(engine, access),
        *graphql_api.routes(engine, access),
        *realtime_api.routes(engine, access, signing_keys=keys),
        *QStashApi(engine.qstash, limits).routes(),
        *connect_routes.routes(gateway, access),
    ]
    largest_body = max(limits.max_request_bytes, limits.max_checkpoint_bytes, limits.max_qstash_body_bytes)
    app = Starlette(
        routes=routes,
        # Inside Starlette's own error layer, so an unexpected exception ends here as a JSON 500.
        # It also announces the server kind on every response, as SDKs expect.
        middleware=[Middleware(EdgeGuard, max_body_bytes=largest_body,
                               headers=[(b"x-inngest-server-kind", kind.encode())])],
        exception_handlers={ApiError: on_api_error, OperatorError: on_operator_error, 404: not_found,
                            405: method_not_allowed},
    )
    app.router = IndexedRouter(routes)  # the same routes, found by their first path segment
    app.state.engine = engine
    app.state.gateway = gateway
    served = app
    if settings.cors_origins:  # browser pages on these origins may call every API
        served = CORSMiddleware(served, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                                allow_headers=["*"], expose_headers=["x-inngest-server-kind"])
    lifecycle = Lifecycle(served, engine, gateway, on_ready=on_ready, wait_for_apps=wait_for_apps)
    return lifecycle, engine


class Lifecycle:
    """Start-up and shutdown, run through uvicorn's lifespan protocol.

    Start-up opens (and migrates) the store and starts the engine before the port is served.
    `on_ready` (the "listening" line) is called only once the apps in `wait_for_apps` are
    synced, so an event sent after it finds their functions. A failed start-up is kept in
    `problem` as one line for the CLI to print, never logged as a traceback.
    """

    def __init__(self, app, engine: Engine, gateway: Any, *, on_ready: Callable[[], None] | None = None,
                 wait_for_apps: list[str] | None = None) -> None:
        self.app = app
        self.engine = engine
        self.gateway = gateway  # connect workers' WebSocket gateway
        self.on_ready = on_ready
        self.wait_for_apps = list(wait_for_apps or [])
        self.problem: str | None = None
        self._announce: asyncio.Task | None = None
        self._memory_keeper: asyncio.Task | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)
        await receive()  # lifespan.startup
        try:
            await self.startup()
        except Exception as exc:
            self.problem = describe_startup_error(exc, self.engine.store)
            await send({"type": "lifespan.startup.failed", "message": ""})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        try:
            await self.shutdown()
        finally:
            await send({"type": "lifespan.shutdown.complete"})

    async def startup(self) -> None:
        memory.tune_allocator()
        store = self.engine.store
        await store.open()
        try:
            for url in self.wait_for_apps:
                await _wait_for_port(url)
            await self.engine.realtime.start()
            await self.engine.start()
            await self.gateway.start()
        except BaseException:
            await store.close()
            raise
        self._announce = asyncio.create_task(self._ready_when_synced(), name="lockgate-ready")
        self._memory_keeper = asyncio.create_task(memory.housekeeping(), name="lockgate-memory")

    async def _ready_when_synced(self) -> None:
        deadline = time.monotonic() + 60
        for url in self.wait_for_apps:
            while time.monotonic() < deadline:
                app = await self.engine.store.read(ops.get_app_by_url, url)
                if app is not None and app.synced_at and not app.error:
                    break
                await asyncio.sleep(0.05)
            else:
                log.warning("the app at %s did not sync within 60 s; serving anyway", url, extra={"url": url})
        if self.on_ready is not None:
            self.on_ready()

    async def shutdown(self) -> None:
        for task in (self._announce, self._memory_keeper):
            if task is not None:
                task.cancel()
        log.info("shutting down: finishing calls in flight, handing back the rest")
        try:
            await self.gateway.drain()
            await self.engine.stop()
            await self.gateway.stop()
            await self.engine.realtime.stop()
        finally:
            await self.engine.store.close()
        log.info("stopped")


async def _wait_for_port(url: str, timeout: float = 30.0) -> None:
    """Wait until an app we started ourselves (--example) accepts connections."""
    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise StartupProblem(f"the app at {url} did not start within {timeout:.0f} s") from None
            await asyncio.sleep(0.05)


def describe_startup_error(exc: BaseException, store: Store) -> str:
    """One line saying what failed at start-up and what to do about it."""
    if isinstance(exc, StartupProblem):
        return str(exc)
    first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
    return (f"could not open the store ({store.description}): {exc.__class__.__name__}: {first}."
            " Check --postgres-uri / --data-dir, then start again (`lockgate doctor` checks the setup)")


def _reachable_host(host: str) -> str:
    """The address an app on this machine uses to reach a server bound to `host`."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def outbound_policy(settings: Settings, kind: str, own_port: int | None) -> OutboundPolicy:
    mode = settings.outbound_policy or ("strict" if kind == "cloud" else "open")
    if mode not in ("strict", "open"):
        raise ValueError(f"outbound_policy must be 'strict' or 'open', got {mode!r}")
    own_ports = {p for p in (own_port, settings.port, settings.qstash_port) if p}
    return OutboundPolicy(
        refuse_special=mode == "strict",
        allow=parse_networks(settings.outbound_allow, "outbound_allow"),
        deny=parse_networks(settings.outbound_deny, "outbound_deny"),
        own_ports=frozenset(own_ports),
        own_hosts=local_addresses(settings.host) if mode == "strict" else frozenset(),
    )


def _gateway_url(host: str, port: int | None) -> str:
    """Where other replicas send this replica's Connect workers when they drain."""
    if port is None:
        return ""
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"ws://{'[' + host + ']' if ':' in host else host}:{port}{connect_routes.GATEWAY_PATH}"


def build_qstash(settings: Settings, store: Store, engine: Engine, kind: str) -> QStash:
    # In dev, answer like the QStash local dev server so its preset .env values just work.
    dev = kind == "dev"
    options = QStashOptions(
        token=settings.qstash_token or (DEV_TOKEN if dev else None),
        current_signing_key=settings.qstash_current_signing_key or (DEV_CURRENT_KEY if dev else new_signing_key()),
        next_signing_key=settings.qstash_next_signing_key or (DEV_NEXT_KEY if dev else new_signing_key()),
        backoff_scale=settings.qstash_backoff_scale,
        outbound=engine.options.outbound,
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


class _DrainingServer(uvicorn.Server):
    """uvicorn closes WebSockets at once on shutdown: first tell Connect workers to reconnect elsewhere."""

    def __init__(self, config: uvicorn.Config, gateway) -> None:
        super().__init__(config)
        self.gateway = gateway

    async def shutdown(self, sockets=None) -> None:
        if self.gateway is not None:
            try:
                await self.gateway.drain()
            except Exception:
                log.exception("draining Connect workers failed")
        await super().shutdown(sockets=sockets)


def serve(app, sock: socket.socket | list[socket.socket], *, log_level: str = "info") -> None:
    config = uvicorn.Config(
        app,
        log_config=None,  # lockgate.terminal formats uvicorn's records too
        log_level=log_level if log_level == "debug" else "warning",
        access_log=log_level == "debug",
        loop="uvloop",
        http="httptools",
        lifespan="on",
        timeout_graceful_shutdown=15,
    )
    server = _DrainingServer(config, getattr(app, "gateway", None))  # the Lifecycle built by build_app
    live.shutting_down = lambda: server.should_exit  # open live pages end at once on shutdown
    # uvicorn drains requests and runs our shutdown (finish in-flight calls, hand back leases) on
    # SIGTERM, then re-raises the signal; a no-op handler here turns that into a clean exit 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    # server.run, not asyncio.run(serve()): that would skip the uvloop loop factory.
    server.run(sockets=sock if isinstance(sock, list) else [sock])
