"""Example 1 tested end to end with the pytest kit: the real lockgate, the real SDK, real HTTP."""

from __future__ import annotations

import os
import time
import uuid

import httpx
import pytest

from lockgate.testing import LockgateError


def order_id() -> str:
    # unique: the kit may be pointed at a long-lived server (LOCKGATE_TEST_SERVER)
    return f"o-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def shop(lockgate_app):
    from examples.fastapi_app import app

    with httpx.Client(base_url=lockgate_app.removesuffix("/api/inngest"), timeout=10) as http:
        yield http, app


def test_health_reports_the_functions_lockgate_synced(shop, lockgate, backend):
    http, _ = shop
    store = lockgate.request("GET", "/v1/server")[1]["data"]["store"]
    if not os.environ.get("LOCKGATE_TEST_SERVER"):  # else the server named there, on its own store
        assert ("PostgreSQL" in store) == (backend.name == "postgres"), store
    synced = lockgate.request("GET", "/v1/apps")[1]["data"]
    assert [a["name"] for a in synced] == ["shop"]
    assert http.get("/health").json() == {"status": "ok", "functions": len(synced[0]["functions"])} == \
        {"status": "ok", "functions": 3}
    crons = [t["cron"] for f in synced[0]["functions"] for t in f["triggers"] if "cron" in t]
    assert crons == ["0 */6 * * *"]


def test_an_order_is_charged_once_and_a_day_later_asks_for_a_review(shop, lockgate):
    http, app = shop
    oid = order_id()
    event_ids = http.post("/orders", json={"order_id": oid, "item": "mug", "quantity": 2}).json()["event_ids"]
    started = time.monotonic()
    run = lockgate.wait_for_run(event_ids[0], status="Completed", fast_forward=True)
    assert time.monotonic() - started < 10  # the day-long sleep was skipped
    assert run.output == {"charged_cents": 2400, "stock_left": 98}
    assert [s["name"] for s in run.steps] == ["reserve-stock", "charge-card", "wait-for-delivery", "ask-for-review"]
    assert [c for c in app.CHARGES if c["order_id"] == oid] == [{"order_id": oid, "cents": 2400}]
    # the event sent by the last step started the review function
    sent = lockgate.request("GET", "/v1/events?name=shop/review.requested")[1]["data"]
    [review_event] = [e["id"] for e in sent if e["data"] == {"order_id": oid}]
    review = lockgate.wait_for_run(review_event, status="Completed")
    assert review.output == f"review requested for {oid}"


def test_without_fast_forward_the_run_sleeps(shop, lockgate):
    http, _ = shop
    event_id = http.post("/orders", json={"order_id": order_id(), "item": "mug", "quantity": 1}).json()["event_ids"][0]
    with pytest.raises(LockgateError, match="fast_forward=True"):
        lockgate.wait_for_run(event_id, timeout=1.5)
    assert lockgate.wait_for_run(event_id, fast_forward=True).status == "Completed"


def test_out_of_stock_fails_once_without_retries_or_charge(shop, lockgate):
    http, app = shop
    oid = order_id()
    event_id = http.post("/orders", json={"order_id": oid, "item": "poster", "quantity": 9}).json()["event_ids"][0]
    run = lockgate.wait_for_run(event_id, status="Failed")
    assert "only 3 poster left" in run.error["message"]
    assert not [c for c in app.CHARGES if c["order_id"] == oid]
    with pytest.raises(LockgateError, match="ended Failed, not Completed"):
        lockgate.wait_for_run(event_id, status="Completed")


def test_bad_orders_are_refused_and_send_nothing(shop, lockgate):
    http, _ = shop
    before = lockgate.request("GET", "/v1/events?limit=100")[1]["data"]
    assert http.post("/orders", json={"order_id": "o-4", "item": "mug", "quantity": 0}).status_code == 422
    unknown = http.post("/orders", json={"order_id": "o-5", "item": "sofa", "quantity": 1})
    assert unknown.status_code == 404 and "mug" in unknown.json()["detail"]
    assert lockgate.request("GET", "/v1/events?limit=100")[1]["data"] == before
