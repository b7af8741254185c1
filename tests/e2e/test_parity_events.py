"""`inngest/function.failed|finished|cancelled` carry the Inngest server's fields, read through the SDK.

The Inngest server (pkg/execution/executor/finalize.go) builds one data object per run —
`function_id`, `run_id`, `event`, `events`, `error` or `result` (each left out when empty),
`correlation_id` for invokes, and `_inngest: {"status": ...}` — and sends it in all three events;
`failed` and `cancelled` take the run id as their event id. A cancelled run's error is the
server's own: `{"error": "function cancelled", "name": "Error", "message": "function cancelled"}`.
"""

from __future__ import annotations

import uuid

from tests.conftest import stack_fixture, wait_until

stack = stack_fixture("tests.e2e.apps.parity_app")

BASE_KEYS = {"function_id", "run_id", "event", "events", "_inngest"}


def seen(app, kind: str, tag: str) -> list[dict]:
    return [e for e in app.effects(kind) if (e["data"].get("event") or {}).get("data", {}).get("tag") == tag]


def send_tagged(api, name: str) -> tuple[str, dict]:
    """Send one event with a fresh tag; returns the tag and the run it started."""
    tag = uuid.uuid4().hex
    event_id = api.send({"name": name, "data": {"tag": tag}}).json()["ids"][0]
    return tag, api.wait_for_runs(event_id)[0]


def test_failed_event_through_on_failure(stack):
    _, app, api = stack
    tag, run = send_tagged(api, "parity/fail")
    (failure,) = wait_until(lambda: seen(app, "on-failure", tag), what="on_failure")
    data = failure["data"]
    assert failure["name"] == "inngest/function.failed"
    assert failure["id"] == run["run_id"]
    assert set(data) == BASE_KEYS | {"error"}
    assert data["function_id"] == "parity-parity-fails" and data["run_id"] == run["run_id"]
    assert data["event"]["name"] == "parity/fail" and data["event"]["data"] == {"tag": tag}
    assert [e["name"] for e in data["events"]] == ["parity/fail"]
    assert data["error"]["name"] == "ValueError" and data["error"]["message"] == f"boom: {tag}"
    assert data["_inngest"] == {"status": "Failed"}
    (finished,) = wait_until(lambda: seen(app, "finished", tag), what="function.finished")
    assert finished["name"] == "inngest/function.finished" and finished["id"] != run["run_id"]
    assert finished["data"] == data  # one data object for both events


def test_finished_event_of_a_completed_run(stack):
    _, app, api = stack
    tag, run = send_tagged(api, "parity/ok")
    (finished,) = wait_until(lambda: seen(app, "finished", tag), what="function.finished")
    data = finished["data"]
    assert set(data) == BASE_KEYS | {"result"}
    assert data["result"] == {"tag": tag, "ok": True}
    assert data["run_id"] == run["run_id"] and data["function_id"] == "parity-parity-ok"
    assert data["_inngest"] == {"status": "Completed"}


def test_cancelled_event(stack):
    _, app, api = stack
    tag, run = send_tagged(api, "parity/wait")
    wait_until(lambda: api.run(run["run_id"])["status"] == "Running", what="the run to wait")
    api.send({"name": "parity/cancel", "data": {"tag": tag}})
    (cancelled,) = wait_until(lambda: seen(app, "cancelled", tag), what="function.cancelled")
    data = cancelled["data"]
    assert cancelled["name"] == "inngest/function.cancelled" and cancelled["id"] == run["run_id"]
    assert set(data) == BASE_KEYS | {"error"}
    assert data["error"] == {"error": "function cancelled", "name": "Error", "message": "function cancelled"}
    assert data["_inngest"] == {"status": "Cancelled"}
    (finished,) = wait_until(lambda: seen(app, "finished", tag), what="function.finished")
    assert finished["data"] == data
    assert not seen(app, "on-failure", tag)  # a cancellation is not a failure


def test_runs_started_by_these_events_emit_none(stack):
    # The Inngest server sends no function.finished/failed for a run whose own trigger was one of them.
    _, app, api = stack
    tag, _ = send_tagged(api, "parity/ok")
    wait_until(lambda: seen(app, "finished", tag), what="the watcher to run")
    watcher_runs = wait_until(lambda: [r for r in api.http.get("/v1/runs", params={"limit": 200}).json()["data"]
                                       if r["function_slug"] == "parity-watch-finished"
                                       and r["status"] == "Completed"], what="the watcher run to end")
    finished = api.http.get("/v1/events", params={"name": "inngest/function.finished", "limit": 200}).json()["data"]
    about = {e["data"]["run_id"] for e in finished}
    assert about and not about & {r["run_id"] for r in watcher_runs}
