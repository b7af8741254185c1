"""Example 1 in production: the same code against `lockgate start`, only the environment differs."""

from __future__ import annotations

import httpx

from tests.conftest import start_stack

APP = "examples.fastapi_app.app"


def test_the_example_runs_signed_against_lockgate_start(tmp_path):
    server, app, api = start_stack(tmp_path, APP, mode="cloud", app_env={"REVIEW_DELAY_SECONDS": "1"})
    try:
        base = app.url.removesuffix("/api/inngest")
        assert httpx.get(f"{base}/health").json() == {"status": "ok", "functions": 3}
        # the route sends with INNGEST_EVENT_KEY to INNGEST_BASE_URL; lockgate calls back signed
        sent = httpx.post(f"{base}/orders", json={"order_id": "p-1", "item": "mug", "quantity": 3}, timeout=10)
        assert sent.status_code == 202, sent.text
        run = api.wait_for_end(api.wait_for_runs(sent.json()["event_ids"][0])[0]["run_id"])
        assert run["status"] == "Completed", run
        assert run["output"] == {"charged_cents": 3600, "stock_left": 97}
        steps = api.http.get(f"/v1/runs/{run['run_id']}/steps").json()["data"]
        assert [s["name"] for s in steps] == ["reserve-stock", "charge-card", "wait-for-delivery", "ask-for-review"]
    finally:
        app.stop()
        server.stop()
