"""The official JavaScript SDK (`inngest` v4 and v3 from npm) runs unchanged against lockgate.

tests/e2e/js_app/app.cjs is served with `inngest/node` over real HTTP; each SDK major is
installed in its own folder (js_app/v4, js_app/v3) and `npm ci`-ed on first use.
"""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from lockgate.protocol.jsoncanon import canonical_json
from lockgate.protocol.signing import answer_signature_problem, sign_body
from tests.conftest import (EVENT_KEY, SIGNING_KEY, Api, LockgateProcess, NodeAppProcess, cloud_app_env, ensure_node_sdk,
                            free_port, start_stack, wait_until)

SDKS = ["v4", "v3"]
OTHER_KEY = "signkey-test-" + "0badc0de" * 8
# Every scenario runs against `lockgate dev` (unsigned) and `lockgate start` (cloud mode: requests
# and answers signed, API calls bearer-authenticated), with each SDK major.
STACKS = [(sdk, mode) for mode in ("dev", "cloud") for sdk in SDKS]


@pytest.fixture(scope="module", params=STACKS, ids=[f"{sdk}-{mode}" for sdk, mode in STACKS])
def stack(request, tmp_path_factory, backend):  # backend: one stack per store backend
    sdk, mode = request.param
    ensure_node_sdk(sdk)  # skips without node before any server starts
    server, app, api = start_stack(tmp_path_factory.mktemp(f"js-{sdk}-{mode}"), sdk, app_cls=NodeAppProcess, mode=mode)
    yield server, app, api
    app.stop()
    server.stop()


def run_for(api, name: str, data: dict | None = None) -> dict:
    """Send one event and return the run it started once that run has ended."""
    event_id = api.send({"name": name, "data": data or {}}).json()["ids"][0]
    return api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])


def test_sync_registers_functions_and_failure_handler(stack):
    _, _, api = stack
    apps = api.http.get("/v1/apps").json()["data"]
    assert [a["name"] for a in apps] == ["js-app"]
    assert apps[0]["sdk"].startswith("js:v")
    assert apps[0]["error"] is None
    slugs = {f["slug"] for f in api.functions()}
    assert {"js-app-hello", "js-app-steps", "js-app-parallel", "js-app-doomed-failure"} <= slugs


def test_plain_return(stack):
    _, app, api = stack
    run = run_for(api, "js/hello", {"name": "Ada"})
    assert run["status"] == "Completed"
    assert run["output"]["hello"] == "Ada"
    assert len(app.effects("hello", run_id=run["run_id"])) == 1


def test_steps_each_run_exactly_once(stack):
    _, app, api = stack
    run = run_for(api, "js/steps", {"x": 1})
    assert run["status"] == "Completed"
    assert run["output"] == {"a": 2, "b": 4, "c": {"total": 6}}
    assert [e["step"] for e in app.effects("step", run_id=run["run_id"])] == ["first", "second", "third"]
    trace = api.http.get(f"/v1/runs/{run['run_id']}/steps").json()["data"]
    assert [s["name"] for s in trace] == ["first", "second", "third"]
    requests = app.effects("request", run_id=run["run_id"])
    if app.module == "v4":
        # v4 checkpoints each step through /v1/checkpoint/{run}/async and finishes with RunComplete
        assert len(requests) == 1
    else:
        assert len(requests) == 4  # v3: one call per step, then one that returns


def test_step_fails_twice_then_succeeds(stack):
    _, app, api = stack
    run = run_for(api, "js/flaky")
    assert run["status"] == "Completed"
    assert run["output"] == "recovered"
    assert [e["attempt"] for e in app.effects("flaky-attempt", run_id=run["run_id"])] == [0, 1, 2]
    assert len(app.effects("after-flaky", run_id=run["run_id"])) == 1


def test_non_retriable_error_fails_the_run_once_and_calls_on_failure(stack):
    _, app, api = stack
    run = run_for(api, "js/doomed")
    assert run["status"] == "Failed"
    # v4 serialises the error's class name; v3 sends name "Error" with the class only in the stack
    assert "NonRetriableError" in run["error"]["name"] + run["error"].get("stack", "")
    assert run["error"]["message"] == "this cannot work"
    assert run["reason"].startswith("step 'doomed-step' failed (not retriable): ")
    assert run["reason"].endswith(": this cannot work")
    seen = wait_until(lambda: app.effects("on-failure", failed_run_id=run["run_id"]), what="onFailure")
    assert seen[0]["function_id"] == "js-app-doomed"
    assert seen[0]["message"] == "this cannot work"
    time.sleep(0.5)
    assert len(app.effects("doomed-attempt", run_id=run["run_id"])) == 1  # no retries


def test_sleep(stack):
    _, app, api = stack
    run = run_for(api, "js/sleep")
    assert run["status"] == "Completed"
    assert run["output"] == "rested"
    before = app.effects("before-sleep", run_id=run["run_id"])
    after = app.effects("after-sleep", run_id=run["run_id"])
    assert len(before) == 1 and len(after) == 1
    assert after[0]["at_ms"] - before[0]["at_ms"] >= 1900  # slept at least the 2 s asked for


def test_wait_for_event_matches(stack):
    _, app, api = stack
    event_id = api.send({"name": "js/wait", "data": {"id": "w-match"}}).json()["ids"][0]
    run_id = api.wait_for_runs(event_id)[0]["run_id"]
    wait_until(lambda: app.effects("before-wait", run_id=run_id), what="step before the wait")
    # only events sent after the wait is registered may match it
    wait_until(lambda: any(s["name"] == "wait-approval" for s in api.http.get(f"/v1/runs/{run_id}/steps").json()["data"]),
               what="wait registered")
    api.send({"name": "js/approved", "data": {"id": "someone-else", "by": "mallory"}})
    api.send({"name": "js/approved", "data": {"id": "w-match", "by": "alice"}})
    run = api.wait_for_end(run_id)
    assert run["status"] == "Completed"
    assert run["output"] == {"approved_by": "alice"}


def test_wait_for_event_timeout_gives_null(stack):
    _, _, api = stack
    run = run_for(api, "js/wait", {"id": "w-timeout", "timeout": "1s"})
    assert run["status"] == "Completed"
    assert run["output"] == {"approved_by": None}


def test_invoke_returns_the_child_result(stack):
    _, app, api = stack
    run = run_for(api, "js/parent", {"n": 21})
    assert run["status"] == "Completed"
    assert run["output"] == {"child": {"doubled": 42}}
    assert [e["n"] for e in app.effects("child")].count(21) == 1


def test_send_event_from_a_step_starts_a_run(stack):
    _, app, api = stack
    run = run_for(api, "js/send", {"name": "from-a-step"})
    assert run["status"] == "Completed"
    sent_id = run["output"]["ids"][0]
    child = api.wait_for_end(api.wait_for_runs(sent_id)[0]["run_id"])
    assert child["output"]["hello"] == "from-a-step"
    assert len(app.effects("hello", name="from-a-step")) == 1


def test_parallel_steps_each_branch_once(stack):
    _, app, api = stack
    run = run_for(api, "js/parallel")
    assert run["status"] == "Completed"
    assert run["output"] == ["A", "B", "C"]
    assert sorted(e["step"] for e in app.effects("branch", run_id=run["run_id"])) == ["a", "b", "c"]
    joined = app.effects("joined", run_id=run["run_id"])
    assert len(joined) == 1 and joined[0]["results"] == ["A", "B", "C"]


def test_promise_race_continues_with_the_winner(stack):
    _, app, api = stack
    run = run_for(api, "js/race")
    assert run["status"] == "Completed"
    assert run["output"] == "fast"
    after = app.effects("after-race", run_id=run["run_id"])
    assert len(after) == 1 and after[0]["winner"] == "fast"
    # the run went on as soon as the fast branch won, without waiting for the slow one
    kinds = [e["kind"] for e in app.ledger_entries() if e.get("run_id") == run["run_id"]]
    assert "slow-done" not in kinds[:kinds.index("after-race")]
    wait_until(lambda: app.effects("slow-done", run_id=run["run_id"]), what="slow branch to finish")
    time.sleep(1)  # it still ran at most once
    assert len(app.effects("race-branch", run_id=run["run_id"], step="slow")) == 1
    assert len(app.effects("race-branch", run_id=run["run_id"], step="fast")) == 1


def test_a_step_saved_before_the_app_is_killed_is_not_run_again(stack):
    server, app, api = stack
    event_id = api.send({"name": "js/durable", "data": {}}).json()["ids"][0]
    run_id = api.wait_for_runs(event_id)[0]["run_id"]
    wait_until(lambda: app.effects("durable-two", run_id=run_id), what="second step to start")
    # the first step is on record while the call that ran it is still in flight (v4: a checkpoint)
    trace = api.http.get(f"/v1/runs/{run_id}/steps").json()["data"]
    assert [(s["name"], s["output"]) for s in trace if s["status"] == "completed"] == [("one", {"data": "one done"})]
    app.proc.send_signal(signal.SIGKILL)
    app.proc.wait(timeout=10)
    app.start()
    run = api.wait_for_end(run_id)
    assert run["status"] == "Completed", run
    assert run["output"] == ["one done", "two done"]
    assert len(app.effects("durable-one", run_id=run_id)) == 1
    attempts = [e["attempt"] for e in app.effects("durable-two", run_id=run_id)]
    assert len(attempts) == 2 and attempts[0] == 0 < attempts[1]  # retried once the app was back


def test_checkpoint_endpoint_rejects_bad_input(stack):
    server, _, api = stack
    done = run_for(api, "js/hello", {"name": "ck"})
    url = f"{server.url}/v1/checkpoint/{done['run_id']}/async"
    op = {"op": "StepRun", "id": "86f7e437faa5a7fce15d1ddcb9eaeaea377667b8", "data": 1}
    if api.cloud:  # cloud mode: only callers holding the signing key
        assert httpx.post(url, json={"steps": [op]}).status_code == 401
    not_json = api.http.post(url, content=b"{nope")
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]
    no_steps = api.http.post(url, json={"run_id": done["run_id"], "steps": "x"})
    assert no_steps.status_code == 400 and "steps" in no_steps.json()["error"]
    no_id = api.http.post(url, json={"steps": [{"op": "StepRun", "data": 1}]})
    assert no_id.status_code == 400
    unknown = api.http.post("/v1/checkpoint/01J0000000000000000000000/async", json={"steps": [op]})
    assert unknown.status_code == 404
    # a run that has ended answers 409, which tells the SDK to stop; nothing is recorded
    ended = api.http.post(url, json={"steps": [op]})
    assert ended.status_code == 409
    trace = api.http.get(f"/v1/runs/{done['run_id']}/steps").json()["data"]
    assert all(s["step_id"] != op["id"] for s in trace)


# v4 reads INNGEST_STREAMING=true (it still accepts the older "force" with a warning); v3 "force".
STREAMING_ENV = {"v4": "true", "v3": "force"}


@pytest.fixture(scope="module", params=STACKS, ids=[f"{sdk}-{mode}" for sdk, mode in STACKS])
def streamed(request, tmp_path_factory, backend):
    sdk, mode = request.param
    ensure_node_sdk(sdk)
    server, app, api = start_stack(tmp_path_factory.mktemp(f"js-stream-{sdk}-{mode}"), sdk, app_cls=NodeAppProcess,
                                   mode=mode, app_env={"INNGEST_STREAMING": STREAMING_ENV[sdk]})
    yield server, app, api
    app.stop()
    server.stop()


def test_streamed_answers_are_unwrapped(streamed):
    server, app, api = streamed
    # the app really streams: a 201 with the real answer wrapped in JSON at the end
    request = canonical_json({
        "event": {"name": "js/hello", "data": {"name": "probe"}, "id": "e1", "ts": 1, "user": {}},
        "events": [{"name": "js/hello", "data": {"name": "probe"}, "id": "e1", "ts": 1, "user": {}}],
        "steps": {}, "ctx": {"run_id": "01J0000000000000000000PROB", "attempt": 0, "disable_immediate_execution": False,
                             "use_api": False, "stack": {"stack": [], "current": 0}},
        "use_api": False, "version": -1})
    headers = {"Content-Type": "application/json"}
    if api.cloud:  # cloud mode: the app answers only signed requests
        headers["X-Inngest-Signature"] = sign_body(request, SIGNING_KEY)
    probe = httpx.post(f"{app.url}?fnId=js-app-hello&stepId=step", timeout=30, content=request, headers=headers)
    assert probe.status_code == 201
    assert '"status":200' in probe.text.replace(" ", "")
    if api.cloud:  # the signature travels inside the wrapper, over its body
        assert "x-inngest-signature" not in probe.headers
        assert answer_signature_problem(201, probe.headers, probe.content, [SIGNING_KEY]) is None
        assert answer_signature_problem(201, probe.headers, probe.content, [OTHER_KEY]) == "wrong key"

    run = run_for(api, "js/steps", {"x": 2})
    assert run["status"] == "Completed"
    assert run["output"] == {"a": 3, "b": 6, "c": {"total": 9}}
    assert [e["step"] for e in app.effects("step", run_id=run["run_id"])] == ["first", "second", "third"]
    # X-Inngest-No-Retry travels inside the streamed wrapper: still exactly one attempt
    doomed = run_for(api, "js/doomed")
    assert doomed["status"] == "Failed"
    assert doomed["error"]["message"] == "this cannot work"
    flaky = run_for(api, "js/flaky")
    assert flaky["status"] == "Completed"
    assert [e["attempt"] for e in app.effects("flaky-attempt", run_id=flaky["run_id"])] == [0, 1, 2]
    time.sleep(0.5)
    assert len(app.effects("doomed-attempt", run_id=doomed["run_id"])) == 1


def test_a_run_cancelled_mid_call_runs_no_further_step(stack):
    _, app, api = stack
    event_id = api.send({"name": "js/slow-middle", "data": {}}).json()["ids"][0]
    run_id = api.wait_for_runs(event_id)[0]["run_id"]
    wait_until(lambda: app.effects("slow-two", run_id=run_id), what="second step to start")
    assert api.http.post(f"/v1/runs/{run_id}/cancel").status_code in (200, 202)
    assert api.wait_for_end(run_id)["status"] == "Cancelled"
    # step two finishes 3 s later; v4's checkpoint of it gets a 409 and v3's 206 is discarded
    time.sleep(5)
    assert app.effects("slow-three", run_id=run_id) == []
    assert len(app.effects("slow-two", run_id=run_id)) == 1
    assert api.run(run_id)["status"] == "Cancelled"


def test_large_state_is_fetched_over_the_api(stack):
    _, app, api = stack
    before = api.http.get("/v1/stats").json()["data"]["calls"]["use_api"]
    run = run_for(api, "js/big")
    assert run["status"] == "Completed", run
    assert run["output"] == {"first": 2_500_000, "second": 2_500_000, "ends": "ab"}
    assert len(app.effects("big-measure", run_id=run["run_id"])) == 1
    assert api.http.get("/v1/stats").json()["data"]["calls"]["use_api"] > before


def test_function_level_error_is_retried(stack):
    _, app, api = stack
    run = run_for(api, "js/fn-flaky")
    assert run["status"] == "Completed", run
    assert run["output"] == {"attempt": 1}
    assert [e["attempt"] for e in app.effects("fn-attempt", run_id=run["run_id"])] == [0, 1]


def test_retry_after_error_delays_the_retry(stack):
    _, app, api = stack
    run = run_for(api, "js/fn-flaky", {"retryAfter": "2s"})
    assert run["status"] == "Completed", run
    attempts = app.effects("fn-attempt", run_id=run["run_id"])
    assert [e["attempt"] for e in attempts] == [0, 1]
    # the server's own retry interval is 0.2 s here: the gap comes from Retry-After ("2" seconds)
    assert attempts[1]["at_ms"] - attempts[0]["at_ms"] >= 1900


@pytest.mark.parametrize("sdk", SDKS)
def test_a_refused_sync_is_reported_to_the_app_and_in_the_api(tmp_path, sdk):
    ensure_node_sdk(sdk)
    server, app, api = None, None, None
    try:
        server = LockgateProcess(args=["dev", "--no-discovery", "--poll-interval", "0.5", "--in-memory"],
                                 data_dir=None, log_path=tmp_path / "lockgate.log").start()
        app = NodeAppProcess(module=sdk, port=free_port(), server_url=server.url, ledger=tmp_path / "ledger.jsonl",
                             extra_env={"BAD_TRIGGER": "1"}).start()
        api = Api(server.url)
        # JS relays the register answer's status when it answers the sync PUT
        put = httpx.put(app.url, json={"url": app.url}, headers={"X-Inngest-Server-Kind": "dev"}, timeout=30)
        assert put.status_code == 400
        assert "js-app-broken" in put.text
        assert api.functions() == []  # nothing of the refused sync was kept
    finally:
        for proc in (app, server):
            if proc is not None:
                proc.stop()


@pytest.mark.parametrize("sdk", SDKS)
def test_kill9_of_lockgate_mid_call_never_reruns_a_saved_step(tmp_path, sdk):
    ensure_node_sdk(sdk)
    port, app_port = free_port(), free_port()
    args = ["dev", "--no-discovery", "--poll-interval", "0.5", "--retry-interval", "0.2",
            "-u", f"http://127.0.0.1:{app_port}/api/inngest"]
    server = LockgateProcess(args=args, data_dir=tmp_path / "data", port=port, log_path=tmp_path / "lockgate.log")
    app = NodeAppProcess(module=sdk, port=app_port, server_url=f"http://127.0.0.1:{port}",
                         ledger=tmp_path / "ledger.jsonl")
    try:
        server.start()
        app.start()
        api = Api(server.url)
        wait_until(lambda: api.functions(), what="app sync")
        event_id = api.send({"name": "js/slow-middle", "data": {}}).json()["ids"][0]
        run_id = api.wait_for_runs(event_id)[0]["run_id"]
        wait_until(lambda: app.effects("slow-two", run_id=run_id), what="second step to start")
        server.kill9()  # step one is on record (v4: checkpointed by the call still running step two)
        server.start()
        run = api.wait_for_end(run_id, timeout=60)
        assert run["status"] == "Completed", run
        assert run["output"] == "done"
        assert len(app.effects("slow-one", run_id=run_id)) == 1
        # step two was not saved yet when lockgate died, so the call lockgate makes after its restart
        # may run it again while the orphaned call finishes it: at-least-once, like any unsaved step
        assert 1 <= len(app.effects("slow-two", run_id=run_id)) <= 2
        assert app.effects("slow-three", run_id=run_id)
    finally:
        app.stop()
        server.stop()


def test_checkpointing_hands_back_after_its_max_runtime(stack):
    _, app, api = stack
    run = run_for(api, "js/long-steps")
    assert run["status"] == "Completed", run
    assert run["output"] == [0, 1, 2, 3, 4, 5]
    assert [e["i"] for e in app.effects("part", run_id=run["run_id"])] == [0, 1, 2, 3, 4, 5]
    calls = len(app.effects("request", run_id=run["run_id"]))
    if app.module == "v4":
        assert 2 <= calls < 7  # DiscoveryRequest after 1 s, several steps per call
    else:
        assert calls == 7


def test_invoked_child_failure_is_thrown_in_the_parent(stack):
    _, _, api = stack
    run = run_for(api, "js/careful-parent")
    assert run["status"] == "Completed", run
    assert run["output"] == {"caught": "the child gave up"}


def test_sleep_until_and_cancel_on_with_match(stack):
    _, app, api = stack
    kept = api.send({"name": "js/patient", "data": {"id": "keep", "ms": 1500}}).json()["ids"][0]
    stopped = api.send({"name": "js/patient", "data": {"id": "stop", "ms": 60000}}).json()["ids"][0]
    kept_run, stopped_run = api.wait_for_runs(kept)[0]["run_id"], api.wait_for_runs(stopped)[0]["run_id"]
    wait_until(lambda: app.effects("patient-start", run_id=stopped_run), what="the run to start sleeping")
    api.send({"name": "js/stop-patient", "data": {"id": "stop"}})
    assert api.wait_for_end(stopped_run)["status"] == "Cancelled"
    assert api.wait_for_end(kept_run)["output"] == "woke"
    assert len(app.effects("patient-end", run_id=kept_run)) == 1
    assert app.effects("patient-end", run_id=stopped_run) == []


def cloud_server(tmp_path, app_url: str, key: str, fallback: str | None = None) -> LockgateProcess:
    args = ["start", "--signing-key", key, "--event-key", EVENT_KEY, "-u", app_url, "--poll-interval", "0.5",
            "--retry-interval", "0.2", *(["--signing-key-fallback", fallback] if fallback else [])]
    return LockgateProcess(args=args, data_dir=tmp_path / "data", log_path=tmp_path / "lockgate.log")


# v3 infers dev mode when neither INNGEST_DEV nor a production marker (NODE_ENV=production, VERCEL_ENV...)
# is set, signing key or not; v4 defaults to cloud mode and is in dev mode only when told so.
DEV_MODE_ENV = {"v3": None, "v4": "1"}


@pytest.mark.parametrize("sdk", SDKS)
def test_an_app_left_in_dev_mode_is_refused_at_sync_with_the_fix(tmp_path, sdk):
    # A dev-mode SDK runs unsigned requests and never signs its answers, even with a signing key:
    # `lockgate start` says so at sync instead of failing every call later.
    ensure_node_sdk(sdk)
    app_port = free_port()
    server = cloud_server(tmp_path, f"http://127.0.0.1:{app_port}/api/inngest", SIGNING_KEY).start()
    app = NodeAppProcess(module=sdk, port=app_port, server_url=server.url, ledger=tmp_path / "ledger.jsonl",
                         extra_env={**cloud_app_env(), "INNGEST_DEV": DEV_MODE_ENV[sdk],
                                    "INNGEST_BASE_URL": server.url})
    try:
        app.start()
        api = Api(server.url, SIGNING_KEY)
        error = wait_until(lambda: (apps := api.http.get("/v1/apps").json()["data"]) and "dev mode" in str(apps[0]["error"])
                           and apps[0]["error"], what="the refused sync")
        assert "runs in dev mode" in error and "INNGEST_DEV=0" in error
        assert api.functions() == []
        # the same app with its mode set is accepted, and its signed answers are trusted
        app.stop()
        app.extra_env["INNGEST_DEV"] = "0"
        app.start()
        wait_until(lambda: api.functions(), what="the sync once the app is in cloud mode")
        run = run_for(api, "js/hello", {"name": "fixed"})
        assert run["status"] == "Completed" and run["output"]["hello"] == "fixed"
    finally:
        app.stop()
        server.stop()


@pytest.mark.parametrize("sdk", SDKS)
def test_a_cloud_mode_app_logs_no_signature_error_for_the_harness_or_the_checks(tmp_path, sdk):
    # Every request reaching the app is signed (the harness's readiness probe, lockgate's syncs,
    # periodic checks and calls), so a "Signature validation failed" in its log is a real problem.
    ensure_node_sdk(sdk)
    app_port = free_port()
    server = cloud_server(tmp_path, f"http://127.0.0.1:{app_port}/api/inngest", SIGNING_KEY).start()
    app = NodeAppProcess(module=sdk, port=app_port, server_url=server.url, ledger=tmp_path / "ledger.jsonl",
                         extra_env={**cloud_app_env(), "INNGEST_BASE_URL": server.url}, output=tmp_path / "app.log")
    try:
        app.start()
        api = Api(server.url, SIGNING_KEY)
        wait_until(lambda: api.functions(), what="the app to sync")
        run = run_for(api, "js/hello", {"name": "quiet"})
        assert run["status"] == "Completed" and run["output"]["hello"] == "quiet"
        assert "Signature validation failed" not in app.logged(), app.logged()
    finally:
        app.stop()
        server.stop()


NEW_KEY = "signkey-test-" + "1e7a11" * 8


@pytest.mark.parametrize("sdk", SDKS)
def test_signing_key_rotation_keeps_runs_going(tmp_path, sdk):
    # Rotation as the SDKs expect it: the app gets the new key with the old one as fallback first,
    # then lockgate switches to the new key and keeps the old one as its fallback.
    ensure_node_sdk(sdk)
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}/api/inngest"
    server = cloud_server(tmp_path, app_url, SIGNING_KEY).start()
    app = NodeAppProcess(module=sdk, port=app_port, server_url=server.url, ledger=tmp_path / "ledger.jsonl",
                         extra_env={**cloud_app_env(NEW_KEY, fallback=SIGNING_KEY), "INNGEST_BASE_URL": server.url})
    try:
        app.start()
        api = Api(server.url, SIGNING_KEY)
        # the app verifies our old-key signature with its fallback and signs its answers with that key
        wait_until(lambda: api.functions(), what="sync with the app holding the old key as fallback")
        before = run_for(api, "js/steps", {"x": 1})
        assert before["status"] == "Completed" and before["output"]["c"] == {"total": 6}

        server.stop()
        server.args = cloud_server(tmp_path, app_url, NEW_KEY, fallback=SIGNING_KEY).args
        server.start()
        api = Api(server.url, NEW_KEY)
        assert api.http.get("/v1/apps").status_code == 200
        assert Api(server.url, SIGNING_KEY).http.get("/v1/apps").status_code == 200  # old key still accepted
        after = run_for(api, "js/steps", {"x": 2})
        assert after["status"] == "Completed" and after["output"]["c"] == {"total": 9}
        assert [e["step"] for e in app.effects("step", run_id=after["run_id"])] == ["first", "second", "third"]
    finally:
        app.stop()
        server.stop()
