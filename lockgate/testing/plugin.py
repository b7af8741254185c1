"""pytest plugin (registered on install): fixtures that run your functions on a real lockgate.

    lockgate_server  session  `lockgate dev --in-memory` on a free port (or LOCKGATE_TEST_SERVER)
    lockgate_app     session  your app served and synced; its serve URL
    lockgate         session  a LockgateClient: send(), wait_for_run(), fast_forward()

Say which app to serve with the `lockgate_app` ini option ("package.module:app" for an ASGI app,
or the serve URL of an app you run yourself), or by overriding the `lockgate_app_target` fixture.
Nothing starts unless a test asks for one of these fixtures.

A narrower scope (a server per module, say one on SQLite and one on PostgreSQL) is an override
of the four fixtures at that scope; `serve_lockgate` and `serve_app` are the fixtures' bodies:

    @pytest.fixture(scope="module")
    def lockgate_server(pytestconfig):
        yield from serve_lockgate(pytestconfig, postgres_uri="postgresql://…/mytests")

    (then lockgate_app_target, lockgate_app with `yield from serve_app(...)`, and lockgate)
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Iterator

import pytest

from lockgate.testing.kit import LockgateClient, LockgateServer, ServedApp, point_sdk_at, restore_env

SERVER_ENV = "LOCKGATE_TEST_SERVER"  # a lockgate already running: use it instead of starting one


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("lockgate_app", "ASGI app to serve ('package.module:attribute') or an app's serve URL", default="")
    parser.addini("lockgate_serve_path", "path the app serves the SDK on", default="/api/inngest")
    parser.addini("lockgate_retry_interval", "seconds between retries of a failed step (production backs off)",
                  default="0.5")


@pytest.fixture(scope="session")
def lockgate_server(pytestconfig: pytest.Config) -> Iterator[str]:
    """The URL of a lockgate dev server for this session; the SDKs are pointed at it."""
    yield from serve_lockgate(pytestconfig)


def serve_lockgate(pytestconfig: pytest.Config, *, postgres_uri: str | None = None) -> Iterator[str]:
    """Start a server (on postgres_uri if given, else in-memory SQLite) unless LOCKGATE_TEST_SERVER
    names one; point the SDKs at it; yield its URL; stop it."""
    existing = os.environ.get(SERVER_ENV)
    server = None
    if existing:
        url = existing.rstrip("/")
    else:
        interval = pytestconfig.getini("lockgate_retry_interval")
        server = LockgateServer(retry_interval=float(interval) if interval else None,
                                postgres_uri=postgres_uri).start()
        url = server.url
    previous = point_sdk_at(url)
    try:
        yield url
    finally:
        restore_env(previous)
        if server is not None:
            server.stop()


@pytest.fixture(scope="session")
def lockgate_app_target(request: pytest.FixtureRequest, pytestconfig: pytest.Config) -> Any:
    """What to serve: an ASGI app object or a serve URL. Override it to build the app yourself
    (take `lockgate_server` and import your app inside the fixture: the SDK client reads
    INNGEST_DEV when it is created)."""
    target = pytestconfig.getini("lockgate_app")
    if not target:
        raise pytest.UsageError(
            "lockgate: say which app to test: set `lockgate_app = \"package.module:app\"` under [tool.pytest.ini_options]"
            " (or a serve URL), or override the `lockgate_app_target` fixture")
    if target.startswith(("http://", "https://")):
        return target
    request.getfixturevalue("lockgate_server")  # started (and INNGEST_DEV set) before the app is imported
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)  # after lockgate_server: the SDK client sees INNGEST_DEV
    try:
        return getattr(module, attribute or "app")
    except AttributeError:
        raise pytest.UsageError(f"lockgate: {module_name} has no attribute {attribute or 'app'!r}") from None


@pytest.fixture(scope="session")
def lockgate_app(pytestconfig: pytest.Config, lockgate_server: str, lockgate_app_target: Any) -> Iterator[str]:
    """The app's serve URL, once its functions are registered with lockgate."""
    yield from serve_app(pytestconfig, lockgate_server, lockgate_app_target)


def serve_app(pytestconfig: pytest.Config, lockgate_server: str, lockgate_app_target: Any) -> Iterator[str]:
    """Serve the target (unless it is a URL), sync it with the server, yield its serve URL."""
    served = None
    if isinstance(lockgate_app_target, str):
        url = lockgate_app_target
    else:
        served = ServedApp(lockgate_app_target, pytestconfig.getini("lockgate_serve_path")).start()
        url = served.url
    try:
        LockgateClient(lockgate_server).sync(url)
        yield url
    finally:
        if served is not None:
            served.stop()


@pytest.fixture(scope="session")
def lockgate(lockgate_server: str, lockgate_app: str) -> LockgateClient:
    """Send events and await runs of your synced app's functions."""
    return LockgateClient(lockgate_server)
