import pytest

from tests.e2e.browser import desktop_page, launch_browser


@pytest.fixture(autouse=True, scope="module")
def _every_backend(backend):
    """Run each end-to-end test on every store backend (see tests/conftest.py)."""
    return backend


@pytest.fixture(scope="module")
def browser():
    """One chromium per test module (tests/e2e/browser.py)."""
    with launch_browser() as browser:
        yield browser


@pytest.fixture
def page(browser, stack, backend):
    """A laptop-sized page on the module's `stack` server; `page.backend_name` names the store under test."""
    with desktop_page(browser, stack[0].url) as page:
        page.backend_name = backend.name
        yield page
