"""The core engine against the official Python SDK, over real HTTP, on a real SQLite store."""

from __future__ import annotations

import time

import inngest
import pytest

from tests.conftest import EVENT_KEY, stack_fixture, wait_until

APP = "tests.e2e.apps.basic_app"


# Every scenario runs against `lockgate dev` and, signed, against `lockgate start` (cloud mode).
stack = stack_fixture(APP, modes=("dev", "cloud"))


def test_sync_registers_every_function_with_failure_handler(stack):
    _, _, api = stack
    slugs = {f["slug"] for f in api.functions()}
    assert "basic-hello" in slugs
    assert "basic-non-retriable-failure" in slugs  # on_failure arrives as its own function
    assert len(slugs) == 17


def test_sdk_client_send_and_function_output(stack):
    server, app, api = stack
    client = inngest.Inngest(app_id="sender", is_production=api.cloud, event_key=EVENT_KEY, api_base_url=server.url,
                             event_api_base_url=server.url)
    ids = client.send_sync(inngest.Event(name="test/hello", data={"name": "Ada"}))
    assert len(ids) == 1
    run = api.wait_for_runs(ids[0])[0]
    ended = api.wait_for_end(run["run_id"])
    assert ended["status"] == "Completed"
    assert ended["output"] == "hello Ada"


def test_three_steps_each_run_exactly_once(stack):
    _, app, api = stack
    event_id = api.send({"name": "test/steps", "data": {"n": 7}}).json()["ids"][0]
    run = api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])
    assert run["status"] == "Completed"
    steps = app.effects("step", run_id=run["run_id"])
    assert [s["step"] for s in steps] == ["one", "two", "three"]
    assert [s["token"] for s in steps] == [o["token"] for o in run["output"]["steps"]]
    trace = api.http.get(f"/v1/runs/{run['run_id']}/steps").json()["data"]
    assert [s["name"] for s in trace] == ["one", "two", "three"]


def test_step_retries_count_attempts_per_step(stack):
    _, app, api = stack
    event_id = api.send({"name": "test/flaky"}).json()["ids"][0]
    run = api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])
    assert run["status"] == "Completed"
    assert run["output"] == 2
    assert [e["attempt"] for e in app.effects("flaky-attempt", run_id=run["run_id"])] == [0, 1, 2]


def test_function_error_retries_then_fails(stack):
    _, app, api = stack
    event_id = api.send({"name": "test/always-fails"}).json()["ids"][0]
    run = api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])
    assert run["status"] == "Failed"
    assert "always fails" in run["error"]["message"]
    assert run["reason"] == "the function failed after 3 attempts: RuntimeError: this function always fails"
    assert [e["attempt"] for e in app.effects("always-fails", run_id=run["run_id"])] == [0, 1, 2]


def test_a_step_that_exhausts_its_retries_fails_the_run_naming_the_step(stack):
    _, app, api = stack
    event_id = api.send({"name": "test/step-gives-up"}).json()["ids"][0]
    run = api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])
    assert run["status"] == "Failed"
    assert run["reason"] == "step 'charge' failed after 3 attempts: ValueError: card declined"
    assert [e["attempt"] for e in app.effects("charge-attempt", run_id=run["run_id"])] == [0, 1, 2]
    [step] = api.http.get(f"/v1/runs/{run['run_id']}/steps").json()["data"]
    assert (step["name"], step["status"], step["attempts"]) == ("charge", "failed", 3)


def test_non_retriable_failure_runs_once_and_calls_on_failure(stack):
    _, app, api = stack
    event_id = api.send({"name": "test/non-retriable", "data": {"order": 1}}).json()["ids"][0]
    run = api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])
    assert run["status"] == "Failed"
    assert run["reason"] == "the function failed (not retriable): NonRetriableError: payment card was declined"
    assert len(app.effects("non-retriable", run_id=run["run_id"])) == 1
    handled = wait_until(lambda: app.effects("on-failure", failed_run_id=run["run_id"]), what="on_failure handler")
    assert handled[0]["function_id"] == "basic-non-retriable"
    assert handled[0]["message"] == "payment card was declined"
    assert handled[0]["original_name"] == "test/non-retriable"
    # The failure events are stored and queryable like any other event.
    failed = api.http.get("/v1/events", params={"name": "inngest/function.failed"}).json()["data"]
    assert any(e["id"] == run["run_id"] for e in failed)


def test_step_error_can_be_caught_by_user_code(stack):
    _, _, api = stack
    event_id = api.send({"name": "test/caught"}).json()["ids"][0]
    run = api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])
    assert run["status"] == "Completed"
    assert run["output"] == "caught: broken step"


def test_retry_after_delays_the_next_attempt(stack):
    _, app, api = stack
    event_id = api.send({"name": "test/retry-after"}).json()["ids"][0]
    run = api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])
    assert run["status"] == "Completed"
    attempts = app.effects("retry-after", run_id=run["run_id"])
    assert [a["attempt"] for a in attempts] == [0, 1]
    assert attempts[1]["at"] - attempts[0]["at"] >= 1.5  # asked for 2 s; far above the 0.2 s retry interval


def test_expression_filter_and_wildcard(stack):
    _, app, api = stack
    yes = api.send({"name": "test/filtered", "data": {"x": 1}}).json()["ids"][0]
    no = api.send({"name": "test/filtered", "data": {"x": 2}}).json()["ids"][0]
    run = api.wait_for_end(api.wait_for_runs(yes)[0]["run_id"])
    assert run["output"] == 1
    wild = api.send({"name": "wild/thing.happened"}).json()["ids"][0]
    assert api.wait_for_end(api.wait_for_runs(wild)[0]["run_id"])["output"] == "wild/thing.happened"
    assert api.event_runs(no) == []


def test_event_id_dedupe_and_seed_determinism(stack):
    _, app, api = stack
    first = api.send({"name": "test/hello", "id": "order-42", "data": {"name": "x"}}).json()["ids"][0]
    second = api.send({"name": "test/hello", "id": "order-42", "data": {"name": "y"}}).json()["ids"][0]
    assert first != second
    api.wait_for_runs(first)
    time.sleep(0.5)
    assert len(api.event_runs(first)) == 1
    assert api.event_runs(second) == []  # same producer id: no second run

    seed = {"X-Inngest-Event-Id-Seed": "1700000000000,AAECAwQFBgcICQ=="}
    body = [{"name": "other/thing"}, {"name": "other/thing"}]
    a = api.send(body, headers=seed).json()["ids"]
    b = api.send(body, headers=seed).json()["ids"]
    assert a == b and len(set(a)) == 2


def test_future_ts_delays_the_run(stack):
    _, app, api = stack
    due = int(time.time() * 1000) + 2000
    event_id = api.send({"name": "test/hello", "data": {"name": "later"}, "ts": due}).json()["ids"][0]
    run = api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"], timeout=30)
    assert run["status"] == "Completed"
    hello = [e for e in app.effects("hello", run_id=run["run_id"])]
    assert hello[0]["at"] * 1000 >= due - 50


def test_sleep_resumes_after_its_time(stack):
    _, app, api = stack
    event_id = api.send({"name": "test/nap", "data": {"seconds": 1}}).json()["ids"][0]
    run = api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])
    assert run["output"] == "rested"
    before = app.effects("nap-before", run_id=run["run_id"])
    after = app.effects("nap-after", run_id=run["run_id"])
    assert len(before) == 1 and len(after) == 1
    assert after[0]["at"] - before[0]["at"] >= 0.95


def test_cancel_a_sleeping_run(stack):
    _, app, api = stack
    event_id = api.send({"name": "test/nap", "data": {"seconds": 30}}).json()["ids"][0]
    run_id = api.wait_for_runs(event_id)[0]["run_id"]
    wait_until(lambda: app.effects("nap-before", run_id=run_id), what="first step")
    wait_until(lambda: any(s["status"] == "sleeping" for s in api.http.get(f"/v1/runs/{run_id}/steps").json()["data"]))
    resp = api.http.post(f"/v1/runs/{run_id}/cancel")
    assert resp.status_code == 200
    assert api.run(run_id)["status"] == "Cancelled"
    assert api.http.get(f"/v1/runs/{run_id}/jobs").json()["data"] == []
    assert api.http.post("/v1/runs/01JUNKNOWNRUN0000000000000/cancel").status_code == 404


def test_cron_function_runs_on_the_minute(stack):
    _, app, api = stack
    if api.cloud:
        pytest.skip("waits up to a minute; cron in cloud mode is covered by test_production's replicas")
    entries = wait_until(lambda: app.effects("cron"), timeout=75, interval=0.5, what="a cron tick")
    assert entries[0]["name"] == "inngest/scheduled.timer"
    assert entries[0]["cron"] == "TZ=Europe/Paris * * * * *"


def test_graphql_subset_used_by_sdk_test_helpers(stack):
    _, _, api = stack
    event_id = api.send({"name": "test/steps", "data": {"n": 1}}).json()["ids"][0]
    run_id = api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])["run_id"]
    gql = lambda q, v: api.http.post("/v0/gql", json={"query": q, "variables": v}).json()  # noqa: E731
    res = gql("query($e: ID!){ event(query:{eventId:$e}){ functionRuns { id } } }", {"e": event_id})
    assert res["data"]["event"]["functionRuns"] == [{"id": run_id}]
    res = gql("query($r: String!){ run(runID:$r){ status output trace { childrenSpans { name outputID } } }"
              " runTrigger(runID:$r){ payloads } }", {"r": run_id})
    assert res["data"]["run"]["status"] == "COMPLETED"
    spans = res["data"]["run"]["trace"]["childrenSpans"]
    assert [s["name"] for s in spans] == ["one", "two", "three"]
    assert inngest.Event.model_validate_json(res["data"]["runTrigger"]["payloads"][0]).name == "test/steps"
    out = gql("query($o: String!){ runTraceSpanOutputByID(outputID:$o){ data error { message } } }",
              {"o": spans[1]["outputID"]})
    assert '"two"' in out["data"]["runTraceSpanOutputByID"]["data"]


class TestBadInput:
    """Bad input gets a clear 4xx JSON error, and the server keeps serving."""

    def test_malformed_json(self, stack):
        _, _, api = stack
        r = api.http.post(f"/e/{EVENT_KEY}", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]

    @pytest.mark.parametrize(
        "body, fragment",
        [
            ({"data": {}}, "'name' is required"),
            ({"name": ""}, "'name' is required"),
            ({"name": "x", "data": [1]}, "'data' must be a JSON object"),
            ({"name": "x", "ts": "yesterday"}, "'ts' must be an integer"),
            ({"name": "x", "ts": 1000}, "between 1980"),
            ({"name": "inngest/function.failed"}, "reserved"),
            ([], "no events"),
            (42, "must be a JSON object"),
        ],
    )
    def test_wrong_shapes(self, stack, body, fragment):
        _, _, api = stack
        r = api.send(body)
        assert r.status_code == 400
        assert fragment in r.json()["error"]
        assert r.json()["status"] == 400

    def test_oversize_body(self, stack):
        _, _, api = stack
        r = api.http.post(f"/e/{EVENT_KEY}", content=b"[" + b" " * (17 * 1024 * 1024) + b"]")
        assert r.status_code == 413 and "limit" in r.json()["error"]

    def test_unknown_run_event_and_route(self, stack):
        _, _, api = stack
        assert api.http.get("/v1/runs/nope").status_code == 404
        assert api.http.get("/v1/events/nope").status_code == 404
        assert api.http.get("/v1/nothing-here").json()["status"] == 404

    def test_register_rejects_bad_function_config(self, stack):
        _, _, api = stack
        r = api.http.post("/fn/register", json={"appname": "broken", "url": "http://127.0.0.1:1/api/inngest",
                                                "functions": [{"id": "broken-f", "steps": {}}]})
        assert r.status_code == 400 and "steps" in r.json()["error"]
        r = api.http.post("/fn/register", json={"appName": "broken", "url": "http://127.0.0.1:1/x", "functions": [
            {"id": "broken-g", "triggers": [{"cron": "@daily"}],
             "steps": {"step": {"id": "step", "runtime": {"type": "http", "url": "http://127.0.0.1:1/x"}}}}]})
        assert r.status_code == 400 and "cron" in r.json()["error"]

    def test_server_still_serves_after_bad_input(self, stack):
        _, _, api = stack
        event_id = api.send({"name": "test/hello", "data": {"name": "still here"}}).json()["ids"][0]
        assert api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])["output"] == "hello still here"


def test_wait_for_event_matches_only_its_own_event(stack):
    _, app, api = stack
    event_id = api.send({"name": "test/wait", "data": {"id": "order-1"}}).json()["ids"][0]
    run_id = api.wait_for_runs(event_id)[0]["run_id"]
    wait_until(lambda: any(s["status"] == "waiting" for s in api.http.get(f"/v1/runs/{run_id}/steps").json()["data"]))
    api.send([{"name": "test/approve", "data": {"id": "order-2", "by": "decoy"}},
              {"name": "test/other", "data": {"id": "order-1", "by": "wrong name"}}])
    time.sleep(0.3)
    assert api.run(run_id)["status"] == "Running"
    api.send({"name": "test/approve", "data": {"id": "order-1", "by": "alice"}})
    run = api.wait_for_end(run_id)
    assert run["output"] == {"by": "alice", "ts_is_int": True}


def test_wait_for_event_ignores_events_sent_before_it_began(stack):
    _, app, api = stack
    api.send({"name": "test/approve", "data": {"id": "early", "by": "too soon"}})
    event_id = api.send({"name": "test/wait", "data": {"id": "early", "timeout": 2}}).json()["ids"][0]
    run = api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])
    assert run["status"] == "Completed" and run["output"] is None  # timed out: resumed with null


def test_invoke_returns_the_child_output_and_propagates_failure(stack):
    _, app, api = stack
    ok = api.send({"name": "test/invoke", "data": {"x": 21}}).json()["ids"][0]
    run = api.wait_for_end(api.wait_for_runs(ok)[0]["run_id"])
    assert run["output"] == {"doubled": 42, "event": "inngest/function.invoked", "has_meta": True}
    bad = api.send({"name": "test/invoke", "data": {"x": 1, "fail": True}}).json()["ids"][0]
    run = api.wait_for_end(api.wait_for_runs(bad)[0]["run_id"])
    assert run["status"] == "Completed" and run["output"] == {"error": "child refused"}


def test_parallel_steps_each_run_once_then_the_function_continues(stack):
    _, app, api = stack
    event_id = api.send({"name": "test/parallel"}).json()["ids"][0]
    run = api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])
    assert run["status"] == "Completed"
    assert run["output"] == {"results": ["p1", "p2", "p3"], "after": 3}
    branches = sorted(e["name"] for e in app.effects("branch", run_id=run["run_id"]))
    assert branches == ["p1", "p2", "p3"]
    assert len(app.effects("after", run_id=run["run_id"])) == 1
