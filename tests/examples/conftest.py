import pytest


@pytest.fixture(scope="session")
def lockgate_app_target(lockgate_server):
    # Imported only now: the SDK client reads INNGEST_DEV (set by lockgate_server) when it is created.
    from examples.fastapi_app import app

    return app.app
