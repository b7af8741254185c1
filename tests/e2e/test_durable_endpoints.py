"""Durable endpoints with the official JS SDK v4: HTTP handlers wrapped with `inngest.endpoint(...)`
run their steps inside the caller's request and checkpoint them to lockgate (sync mode).

tests/e2e/js_app/durable_app.cjs is served with `inngest/node`'s `createEndpointServer`; each
side effect goes to a ledger tagged with the caller's `key`, so a step that ran twice shows.
Every scenario runs against `lockgate dev` and `lockgate start` (signed continuation calls).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import (ROOT, SIGNING_KEY, Api, LockgateProcess, NodeAppProcess, cloud_app_env, free_port,
                            wait_until)
from tests.e2e.browser import launch_browser

MODES = ("dev", "cloud")


class DurableApp(NodeAppProcess):
    script = "durable_app.cjs"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def steps_of(self, key: str) -> dict[str, int]:
        """How many times each step of the request tagged `key` ran."""
        counts: dict[str, int] = {}
        for entry in self.effects("step", key=key):
            counts[entry["step"]] = counts.get(entry["step"], 0) + 1
        return counts


@pytest.fixture(scope="module", params=MODES)
def stack(request, tmp_path_factory, backend):  # backend: one stack per store backend
    tmp = tmp_path_factory.mktemp(f"durable-{request.param}")
    common = ["--poll-interval", "0.5", "--retry-interval", "0.2"]
    if request.param == "cloud":
        args, data_dir = ["start", "--signing-key", SIGNING_KEY, "--event-key", "test-key", *common], tmp / "data"
    else:
        args, data_dir = ["dev", "--in-memory", "--no-discovery", *common], None
    server = LockgateProcess(args=args, data_dir=data_dir, log_path=tmp / "lockgate.log").start()
    env = {**cloud_app_env(), "INNGEST_BASE_URL": server.url} if request.param == "cloud" else {}
    app = DurableApp(module="v4", port=free_port(), server_url=server.url, ledger=tmp / "ledger.jsonl",
                     extra_env=env).start()
    api = Api(server.url, SIGNING_KEY if request.param == "cloud" else None)
    yield server, app, api
    app.stop()
    server.stop()


def call(app: DurableApp, path: str, **params) -> tuple[str, httpx.Response]:
    """Call an endpoint with a fresh key, following the redirect it gives once its run went on in the background."""
    key = uuid.uuid4().hex
    response = httpx.get(f"{app.origin}{path}", params={"key": key, **params}, follow_redirects=True, timeout=60)
    return key, response


def run_of(api: Api, app: DurableApp, path: str, key: str) -> dict:
    """The run lockgate holds for one request (its trigger event records the query string)."""
    runs = api.http.get("/v1/runs").json()["data"]
    mine = [r for r in runs if r["function_slug"] == f"GET {app.origin}{path}"
            and key in event_of(api, r)["data"]["query_params"]]
    assert len(mine) == 1, mine
    return api.wait_for_end(mine[0]["run_id"])


def event_of(api: Api, run: dict) -> dict:
    return api.http.get(f"/v1/events/{run['event_id']}").json()["data"]


def step_names(api: Api, run_id: str) -> list[str]:
    return [s["name"] for s in api.http.get(f"/v1/runs/{run_id}/steps").json()["data"]]


def test_steps_run_inside_the_request_and_the_run_is_recorded(stack):
    _, app, api = stack
    key, response = call(app, "/api/steps", x=4)
    # the endpoint's own answer, unchanged
    assert response.status_code == 201 and response.history == []
    assert response.json() == {"a": 5, "b": 10, "method": "GET"}
    assert response.headers["x-endpoint"] == "yes"
    assert app.steps_of(key) == {"add-one": 1, "double": 1}
    run = run_of(api, app, "/api/steps", key)
    assert run["status"] == "Completed"
    assert step_names(api, run["run_id"]) == ["add-one", "double"]
    event = event_of(api, run)
    assert event["name"] == "inngest/http.request"
    assert event["data"]["method"] == "GET" and event["data"]["path"] == "/api/steps"
    # the endpoint shows as a function of an app named after the request's origin
    apps = {a["name"]: a for a in api.http.get("/v1/apps").json()["data"]}
    assert f"GET {app.origin}/api/steps" in [f["slug"] for f in apps[app.origin]["functions"]]
    # ... which is not synced like an app that serves functions
    resync = api.http.post(f"/v1/apps/{app.origin}/resync")
    assert resync.status_code == 400 and "durable endpoints" in resync.json()["error"]


def test_a_failing_step_is_retried_by_the_server_and_no_saved_step_runs_again(stack):
    _, app, api = stack
    key, response = call(app, "/api/flaky")
    # the caller was redirected to lockgate, which answered once the retries had succeeded
    assert [r.status_code for r in response.history] == [302]
    assert "/v1/http/runs/" in response.history[0].headers["location"]
    assert response.status_code == 200
    # (the SDK sends a Response returned after the hand-over as a JSON string of its body)
    assert json.loads(response.json()) == {"before": "ok", "value": "recovered after 3", "after": "done"}
    assert app.steps_of(key) == {"before": 1, "flaky": 3, "after": 1}
    run = run_of(api, app, "/api/flaky", key)
    assert run["status"] == "Completed"
    trace = api.http.get(f"/v1/runs/{run['run_id']}/steps").json()["data"]
    assert [(s["name"], s["attempts"]) for s in trace] == [("before", 1), ("flaky", 3), ("after", 1)]


def test_a_sleep_hands_the_run_over_and_it_resumes_after(stack):
    _, app, api = stack
    key, response = call(app, "/api/sleep")
    assert response.status_code == 200
    assert json.loads(response.json()) == {"slept": True, "after": 2}
    assert app.steps_of(key) == {"before-sleep": 1, "after-sleep": 1}
    run = run_of(api, app, "/api/sleep", key)
    assert step_names(api, run["run_id"]) == ["before-sleep", "nap", "after-sleep"]


def test_a_non_retriable_step_error_reaches_the_endpoint_code_once(stack):
    _, app, api = stack
    key, response = call(app, "/api/doomed")
    assert json.loads(response.json()) == {"handled": "cannot work"}
    assert app.steps_of(key) == {"doomed": 1, "handled": 1}
    run = run_of(api, app, "/api/doomed", key)
    trace = {s["name"]: s["status"] for s in api.http.get(f"/v1/runs/{run['run_id']}/steps").json()["data"]}
    assert trace == {"doomed": "failed", "handled": "completed"}


def test_a_streaming_caller_gets_the_result_over_the_realtime_redirect(stack):
    _, app, api = stack
    key = uuid.uuid4().hex
    with httpx.stream("GET", f"{app.origin}/api/sleep", params={"key": key},
                      headers={"Accept": "text/event-stream"}, timeout=30) as response:
        text = "".join(response.iter_text())
    redirect = [json.loads(line[len("data: "):]) for line in text.splitlines()
                if line.startswith("data: ") and '"url"' in line][0]
    assert redirect["url"].startswith(f"{api.base}/v1/realtime/sse?token=")
    received = ""
    # The run sleeps 1 s before it ends: the SDK's result event is teed to this subscriber.
    with httpx.stream("GET", redirect["url"], timeout=30) as stream:
        assert stream.status_code == 200
        for chunk in stream.iter_text():
            received += chunk
            if "event: inngest.response" in received and received.endswith("\n\n"):
                break
    result = json.loads(received.split("event: inngest.response\ndata: ", 1)[1].split("\n", 1)[0])
    assert result["status"] == "succeeded"
    assert json.loads(result["response"]["body"]) == {"slept": True, "after": 2}
    assert app.steps_of(key) == {"before-sleep": 1, "after-sleep": 1}


def test_the_dashboard_shows_the_run_with_its_steps(stack):
    server, app, api = stack
    if api.cloud:
        pytest.skip("the dashboard of `lockgate start` needs a login; dev mode is enough to see the page")
    key, _ = call(app, "/api/steps", x=1)
    run = run_of(api, app, "/api/steps", key)
    with launch_browser() as browser:
        page = browser.new_page(base_url=server.url)
        page.goto(f"/runs/{run['run_id']}")
        body = page.locator("body")
        for text in ("add-one", "double", "Completed", f"GET {app.origin}/api/steps"):
            expect(body).to_contain_text(text)


def test_bad_checkpoint_input_gets_a_clear_error(stack):
    _, app, api = stack
    http = api.http
    good_event = {"name": "inngest/http.request", "data": {"domain": app.origin, "method": "GET", "path": "/x"}}
    assert http.post("/v1/checkpoint", json={"run_id": "nope", "event": good_event}).status_code == 400
    missing = http.post("/v1/checkpoint", json={"run_id": "01J0000000000000000000000Z", "event": {"data": {}}})
    assert missing.status_code == 400 and "event.data.domain" in missing.json()["error"]
    bad_steps = http.post("/v1/checkpoint", json={"run_id": "01J0000000000000000000000Z", "event": good_event,
                                                  "steps": [{"op": "StepRun"}]})
    assert bad_steps.status_code == 400 and "id" in bad_steps.json()["error"]
    assert http.post("/v1/checkpoint/01J0000000000000000000000Y/steps", json={"steps": []}).status_code == 404
    # a repeated run creation (the SDK retries when an answer is lost) is answered again, once
    run_id = "01J00000000000000000000001"
    body = {"run_id": run_id, "event": good_event,
            "steps": [{"op": "StepRun", "id": "a" * 40, "displayName": "s", "data": 1}]}
    first, again = http.post("/v1/checkpoint", json=body), http.post("/v1/checkpoint", json=body)
    assert first.status_code == again.status_code == 200
    assert first.json()["data"]["run_id"] == run_id and first.json()["data"]["realtime_token"]
    assert step_names(api, run_id) == ["s"]
    output = http.get(f"/v1/http/runs/{run_id}/output", params={"token": "forged"})
    assert output.status_code == 401
    other = http.post("/v1/checkpoint", json={**body, "run_id": "01J00000000000000000000002"}).json()["data"]
    refused = http.get(f"/v1/checkpoint/{run_id}/output", params={"token": other["token"]})
    assert refused.status_code == 401 and "another run" in refused.json()["error"]
    # a cancelled run tells the endpoint to stop
    assert http.post(f"/v1/runs/{other['run_id']}/cancel").status_code == 200
    stopped = http.post(f"/v1/checkpoint/{other['run_id']}/steps", json={"steps": []})
    assert stopped.status_code == 409 and "cancelled" in stopped.json()["error"]
    # finishing the run through /steps serves its response to a redirected caller
    done = http.post(f"/v1/checkpoint/{run_id}/steps", json={"fn_id": first.json()["data"]["fn_id"], "steps": [
        {"op": "RunComplete", "id": "c" * 40, "data": {"status": 202, "headers": {"X-Done": "1"}, "body": "fin"}}]})
    assert done.status_code == 200
    served = httpx.get(f"{api.base}/v1/http/runs/{run_id}/output", params={"token": first.json()["data"]["token"]})
    assert (served.status_code, served.text, served.headers["x-done"]) == (202, "fin", "1")
    assert api.run(run_id)["status"] == "Completed"


def test_a_handed_over_run_survives_kill9_of_lockgate(tmp_path, backend):
    port = free_port()
    server = LockgateProcess(args=["dev", "--no-discovery", "--retry-interval", "0.2"], data_dir=tmp_path / "data",
                             port=port, log_path=tmp_path / "lockgate.log").start()
    app = DurableApp(module="v4", port=free_port(), server_url=server.url, ledger=tmp_path / "ledger.jsonl").start()
    api = Api(server.url)
    try:
        key = uuid.uuid4().hex
        handed_over = httpx.get(f"{app.origin}/api/sleep", params={"key": key}, timeout=30)
        # The 302 comes once the sleep was checkpointed: the run is lockgate's from here on.
        assert handed_over.status_code == 302
        server.kill9()
        server.port = port
        server.start()
        done = httpx.get(handed_over.headers["location"], timeout=60)
        assert done.status_code == 200 and json.loads(done.json()) == {"slept": True, "after": 2}
        assert app.steps_of(key) == {"before-sleep": 1, "after-sleep": 1}
        assert run_of(api, app, "/api/sleep", key)["status"] == "Completed"
    finally:
        app.stop()
        server.stop()


def test_parallel_steps_are_handed_over_and_each_runs_once(stack):
    _, app, api = stack
    key, response = call(app, "/api/parallel")
    assert response.status_code == 200 and json.loads(response.json()) == {"both": "LR"}
    assert app.steps_of(key) == {"left": 1, "right": 1}
    run = run_of(api, app, "/api/parallel", key)
    assert sorted(step_names(api, run["run_id"])) == ["left", "right"]


def test_an_endpoint_waits_for_an_event(stack):
    _, app, api = stack
    key = uuid.uuid4().hex
    handed_over = httpx.get(f"{app.origin}/api/approval", params={"key": key}, timeout=30)
    assert handed_over.status_code == 302
    run_id = handed_over.headers["location"].split("/v1/http/runs/")[1].split("/")[0]
    wait_until(lambda: "waiting for event durable/approved" in (api.run(run_id)["reason"] or ""),
               what="the wait to be registered")
    api.send({"name": "durable/approved", "data": {"key": "someone else", "by": "mallory"}})
    api.send({"name": "durable/approved", "data": {"key": key, "by": "alice"}})
    done = httpx.get(handed_over.headers["location"], timeout=60)
    assert json.loads(done.json()) == {"by": "alice"}
    assert app.steps_of(key) == {"ask": 1}


def test_doctor_does_not_call_an_endpoint_origin_an_app(stack):
    server, app, api = stack
    if api.cloud:
        pytest.skip("one mode is enough: doctor reads the apps the server lists")
    call(app, "/api/steps", x=2)
    report = subprocess.run([sys.executable, "-m", "lockgate", "doctor", "--port", str(server.port)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert app.origin not in report.stdout + report.stderr, report.stdout


def test_a_step_that_keeps_failing_fails_the_run_after_its_retries(stack):
    _, app, api = stack
    key, response = call(app, "/api/broken")
    # the redirected caller learns how the run ended
    assert response.status_code == 500
    assert response.json()["status"] == "Failed" and "broken on try 4" in response.json()["error"]["message"]
    assert app.steps_of(key) == {"broken": 4}  # the first try and the endpoint's 3 retries
    run = run_of(api, app, "/api/broken", key)
    assert run["status"] == "Failed"
