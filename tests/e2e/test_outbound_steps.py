"""Steps whose request the server makes: `step.ai.infer` (official Python SDK adapters) against a local
fake provider. The app never calls the provider; lockgate does, with the adapter's auth."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import NodeAppProcess, start_stack, wait_until
from tests.e2e.fake_provider import FakeProvider


def with_provider(tmp_path, module: str, **options):
    """A fake provider, and a lockgate with an app that points its steps at that provider."""
    provider = FakeProvider()
    server, app, api = start_stack(tmp_path, module, app_env={"FAKE_PROVIDER_URL": provider.url}, **options)
    yield provider, app, api
    app.stop()
    server.stop()
    provider.close()


@pytest.fixture(scope="module")
def ai(tmp_path_factory, backend):
    yield from with_provider(tmp_path_factory.mktemp("ai"), "tests.e2e.apps.ai_app")


def run_of(api, name: str, data: dict) -> dict:
    event_id = api.send({"name": name, "data": data}).json()["ids"][0]
    run = api.wait_for_runs(event_id)[0]
    return api.wait_for_end(run["run_id"])


def completed_with_request(api, provider, event: str, data: dict) -> tuple[dict, dict]:
    """Run to completion; returns the run and the one request the server made to data["path"]."""
    run = run_of(api, event, data)
    assert run["status"] == "Completed", run
    (request,) = provider.on(data["path"])
    return run, request


def test_openai_format_request_made_by_the_server(ai):
    provider, app, api = ai
    path = f"/t-{uuid.uuid4().hex}"
    run, request = completed_with_request(api, provider, "ai/openai", {"q": "meaning of life?", "path": path})
    assert request["method"] == "POST" and request["path"] == f"{path}/chat/completions"
    assert request["headers"]["authorization"] == "Bearer sk-test"
    assert json.loads(request["body"]) == {"messages": [{"role": "user", "content": "meaning of life?"}],
                                           "model": "gpt-test"}
    answer = run["output"]["answer"]
    assert answer["choices"][0]["message"]["content"] == "42" and answer["path"] == request["path"]
    steps = api.http.get(f"/v1/runs/{run['run_id']}/steps").json()["data"]
    assert [(s["name"], s["op"], s["status"]) for s in steps] == [("ask", "AIGateway", "completed")]
    assert len(app.effects("after-infer", run_id=run["run_id"])) == 1


def test_anthropic_format_gets_its_headers(ai):
    provider, _, api = ai
    before = len(provider.on("/messages"))
    run = run_of(api, "ai/anthropic", {"q": "hi"})
    assert run["status"] == "Completed", run
    request = provider.on("/messages")[before]
    assert request["headers"]["x-api-key"] == "ak-test"
    assert request["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request["headers"]
    assert json.loads(request["body"])["max_tokens"] == 64


def test_provider_error_is_a_step_error_that_retries(ai):
    provider, _, api = ai
    path = f"/fail-once-{uuid.uuid4().hex}"
    run = run_of(api, "ai/openai", {"q": "again", "path": path})
    assert run["status"] == "Completed", run
    assert len(provider.on(path)) == 2  # the 500, then the retry that succeeded


def test_refused_request_fails_the_step_without_retry(ai):
    provider, _, api = ai
    path = f"/refuse-{uuid.uuid4().hex}"
    run = run_of(api, "ai/openai", {"q": "x", "path": path})
    assert run["status"] == "Failed", run
    assert len(provider.on(path)) == 1  # a 401 will not change on retry
    assert "HTTP 401" in run["error"]["message"]


class OutboundJsApp(NodeAppProcess):
    script = "outbound_app.cjs"


@pytest.fixture(scope="module")
def js(tmp_path_factory, backend):
    yield from with_provider(tmp_path_factory.mktemp("js-outbound"), "v4", app_cls=OutboundJsApp)


def test_js_step_ai_infer(js):
    provider, app, api = js
    path = f"/js-{uuid.uuid4().hex}"
    run, request = completed_with_request(api, provider, "js-outbound/infer", {"q": "hello?", "path": path})
    assert request["path"] == f"{path}/chat/completions"
    assert request["headers"]["authorization"] == "Bearer sk-js"
    assert json.loads(request["body"])["model"] == "gpt-js"
    assert run["output"] == {"content": "42", "path": request["path"]}
    assert len(app.effects("after-infer", run_id=run["run_id"])) == 1


def test_js_step_fetch_is_made_by_the_server(js):
    provider, _, api = js
    path = f"/fetch-{uuid.uuid4().hex}"
    run, request = completed_with_request(api, provider, "js-outbound/fetch", {"path": path, "hello": "world"})
    assert request["method"] == "POST" and request["headers"]["x-token"] == "t-1"
    assert json.loads(request["body"]) == {"hello": "world"}
    assert run["output"] == {"status": 200, "fake": "yes", "echo": {"hello": "world"}}
    steps = api.http.get(f"/v1/runs/{run['run_id']}/steps").json()["data"]
    assert [s["op"] for s in steps] == ["Gateway"]


# -- step.waitForSignal and POST /v1/signals (JS v4) ---------------------------------------------


def waiting_run(api, signal: str, **data) -> dict:
    event_id = api.send({"name": "js-outbound/wait-signal", "data": {"signal": signal, **data}}).json()["ids"][0]
    run = api.wait_for_runs(event_id)[0]
    wait_until(lambda: any(s["status"] == "waiting" for s in
                           api.http.get(f"/v1/runs/{run['run_id']}/steps").json()["data"]), what="the signal wait")
    return run


def test_signal_resumes_the_waiting_run(js):
    _, _, api = js
    signal = f"sig-{uuid.uuid4().hex}"
    run = waiting_run(api, signal)
    answer = api.http.post("/v1/signals", json={"signal": signal, "data": {"approved": True}})
    assert answer.status_code == 200 and answer.json() == {"data": {"run_id": run["run_id"]}}
    done = api.wait_for_end(run["run_id"])
    assert done["status"] == "Completed", done
    assert done["output"] == {"got": {"signal": signal, "data": {"approved": True}}}
    again = api.http.post("/v1/signals", json={"signal": signal, "data": {}})
    assert again.status_code == 404  # consumed: a signal resumes one wait once


def test_signal_nobody_waits_for_and_sdk_send_signal(js):
    _, _, api = js
    signal = f"sig-{uuid.uuid4().hex}"
    nobody = api.http.post("/v1/signals", json={"signal": signal})
    assert nobody.status_code == 404 and "no run is waiting" in nobody.json()["error"]
    # through the SDK: no waiter is "no run id"; a waiter gets resumed and its id comes back
    assert run_of(api, "js-outbound/send-signal", {"signal": signal, "payload": 1})["output"] == {"runId": None}
    waiter = waiting_run(api, signal)
    sender = run_of(api, "js-outbound/send-signal", {"signal": signal, "payload": {"n": 7}})
    assert sender["output"] == {"runId": waiter["run_id"]}
    assert api.wait_for_end(waiter["run_id"])["output"] == {"got": {"signal": signal, "data": {"n": 7}}}


def test_signal_wait_times_out_with_null(js):
    _, _, api = js
    signal = f"sig-{uuid.uuid4().hex}"
    run = waiting_run(api, signal, timeout="2s")
    done = api.wait_for_end(run["run_id"])
    assert done["status"] == "Completed" and done["output"] == {"got": None}


def test_signal_conflicts_replace_or_fail(js):
    _, _, api = js
    signal = f"sig-{uuid.uuid4().hex}"
    first = waiting_run(api, signal, timeout="4s")
    refused = run_of(api, "js-outbound/wait-signal", {"signal": signal, "conflict": "fail"})
    assert refused["status"] == "Failed" and "already waiting for signal" in refused["error"]["message"]
    second = waiting_run(api, signal, conflict="replace")
    answer = api.http.post("/v1/signals", json={"signal": signal, "data": "to the newest"})
    assert answer.json()["data"]["run_id"] == second["run_id"]
    assert api.wait_for_end(second["run_id"])["output"] == {"got": {"signal": signal, "data": "to the newest"}}
    assert api.wait_for_end(first["run_id"])["output"] == {"got": None}  # replaced: it lapses at its timeout


def test_bad_signal_requests_get_400(js):
    _, _, api = js
    for body in ({}, {"signal": ""}, [1]):
        answer = api.http.post("/v1/signals", json=body)
        assert answer.status_code == 400 and "signal" in answer.json()["error"]

