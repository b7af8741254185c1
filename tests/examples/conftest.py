"""The kit's fixtures once per store backend (tests/conftest.py): example 1 runs on SQLite and on
PostgreSQL. Module scope, as the `backend` rounds are per module."""

import importlib
import os

import pytest

from lockgate.testing import LockgateClient
from lockgate.testing.plugin import SERVER_ENV, serve_app, serve_lockgate


@pytest.fixture(scope="module")
def lockgate_server(pytestconfig, backend):
    if os.environ.get(SERVER_ENV) and backend.name == "postgres":
        pytest.skip(f"{SERVER_ENV} names one server: the tests run once, on its store")
    uri = backend.new_database(prefix="lockgate_kit_") if backend.name == "postgres" else None
    yield from serve_lockgate(pytestconfig, postgres_uri=uri)


@pytest.fixture(scope="module")
def lockgate_app_target(lockgate_server):
    # Imported (again) only now: the SDK client reads INNGEST_DEV, set by lockgate_server, when it
    # is created, and each backend round has its own server.
    from examples.fastapi_app import app

    return importlib.reload(app).app


@pytest.fixture(scope="module")
def lockgate_app(pytestconfig, lockgate_server, lockgate_app_target):
    yield from serve_app(pytestconfig, lockgate_server, lockgate_app_target)


@pytest.fixture(scope="module")
def lockgate(lockgate_server, lockgate_app):
    return LockgateClient(lockgate_server)
