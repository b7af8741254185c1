import pytest


@pytest.fixture(autouse=True, scope="module")
def _every_backend(backend):
    """Run each end-to-end test on every store backend (see tests/conftest.py)."""
    return backend
