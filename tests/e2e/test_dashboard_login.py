"""The dashboard under `lockgate start`: a login is required (admin password or the token derived from the
signing key), the session cookie is HttpOnly and SameSite, and an action without its CSRF token is refused."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.conftest import PYTHON, ROOT, Api, LockgateProcess
from tests.e2e.browser import screenshot

SIGNING_KEY = "signkey-prod-" + "5eed" * 16
EVENT_KEY = "dash-event-key"
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def server(tmp_path_factory, backend):
    tmp = tmp_path_factory.mktemp("dashboard-login")
    server = LockgateProcess(args=["start", "--signing-key", SIGNING_KEY, "--event-key", EVENT_KEY,
                                   "--dashboard-password", PASSWORD], data_dir=tmp / "data",
                             log_path=tmp / "lockgate.log").start()
    yield server
    server.stop()


def dashboard_token() -> str:
    done = subprocess.run([PYTHON, "-m", "lockgate", "dashboard-token", "--signing-key", SIGNING_KEY], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def sign_in(browser, server, secret: str):
    context = browser.new_context(base_url=server.url)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto("/runs")
    assert "/login" in page.url  # every page wants a session first
    page.fill("input[name=secret]", secret)
    page.click("button:has-text('Sign in')")
    return context, page


def test_pages_need_a_login_and_both_secrets_work(browser, server, backend):
    anonymous = httpx.get(server.url + "/events", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login?next=/events")
    assert httpx.get(server.url + "/ui/live").status_code == 401
    assert httpx.get(server.url + "/metrics").status_code == 401  # scrapers send the signing key
    assert httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {SIGNING_KEY}"}).status_code == 200

    context, page = sign_in(browser, server, "not the password")
    assert "neither the admin password nor the dashboard token" in page.locator(".error").inner_text()
    screenshot(page, "login", backend.name)
    context.close()

    for secret in (PASSWORD, dashboard_token()):
        context, page = sign_in(browser, server, secret)
        page.wait_for_url("**/runs")
        assert page.locator("h1").inner_text() == "Runs"
        cookie = next(c for c in context.cookies() if c["name"] == "lockgate_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        page.click("text=Sign out")
        page.wait_for_url("**/login")
        page.goto("/runs")
        assert "/login" in page.url
        context.close()


def test_an_action_without_the_csrf_token_is_refused(browser, server):
    api = Api(server.url, signing_key=SIGNING_KEY)
    context, page = sign_in(browser, server, PASSWORD)
    try:
        page.wait_for_url("**/runs")
        event = '{"name": "csrf/probe", "data": {"n": 1}}'
        # The session cookie alone is not enough: no token, or a wrong one, is refused and nothing happens.
        for form in ({"event": event}, {"event": event, "csrf": "forged"}):
            refused = page.request.post(server.url + "/ui/events/send", form=form)
            assert refused.status == 403 and "CSRF" in refused.text()
        assert not [e for e in api.http.get("/v1/events").json()["data"] if e["name"] == "csrf/probe"]
        # The page's own form carries the token and goes through.
        page.goto("/events")
        page.fill("#event-json", event)
        page.click("text=Send event")
        page.wait_for_url("**/events/*")
        assert [e for e in api.http.get("/v1/events").json()["data"] if e["name"] == "csrf/probe"]
        # And without a session at all, an action is refused before anything else.
        token = page.locator("input[name=csrf]").first.get_attribute("value")
        anonymous = httpx.post(server.url + "/ui/events/send", data={"event": event, "csrf": token})
        assert anonymous.status_code == 401
    finally:
        context.close()
