"""Step primitives beyond the core: cancel-on-event, idempotency, several triggers, lookback
waits, races, large state over use_api, step output limits, invoke by id and in chains,
send_event, sleep_until, and runs that sleep or wait across a server restart."""

from __future__ import annotations

import time

import pytest

from tests.conftest import stack_fixture, start_stack, wait_until

APP = "tests.e2e.apps.steps_app"


stack = stack_fixture(APP, modes=("dev", "cloud"))  # cloud: `lockgate start`, signed


def run_of(api, event_id: str) -> dict:
    return api.wait_for_runs(event_id)[0]


def test_cancel_on_event_stops_only_the_matching_run(stack):
    _, app, api = stack
    mine = api.send({"name": "steps/cancellable", "data": {"id": "c1"}}).json()["ids"][0]
    other = api.send({"name": "steps/cancellable", "data": {"id": "c2", "seconds": 2}}).json()["ids"][0]
    mine_run, other_run = run_of(api, mine)["run_id"], run_of(api, other)["run_id"]
    wait_until(lambda: app.effects("cancellable-before", run_id=mine_run), what="first step")
    api.send({"name": "steps/cancel", "data": {"id": "c1"}})

    ended = api.wait_for_end(mine_run, timeout=30)
    assert ended["status"] == "Cancelled"
    assert "steps/cancel" in (ended.get("reason") or "")
    # the other run was not touched and completes after its short sleep
    assert api.wait_for_end(other_run, timeout=30)["status"] == "Completed"
    assert app.effects("cancellable-after", run_id=other_run)
    # inngest/function.cancelled reached its listener; on_failure did not run
    seen = wait_until(lambda: app.effects("cancelled-event", run_id=mine_run), what="function.cancelled")
    assert seen[0]["function_id"] == "steps-cancellable"
    time.sleep(1)
    assert not app.effects("cancellable-after", run_id=mine_run)
    assert not app.effects("cancellable-on-failure")


def test_cancel_event_sent_before_the_run_does_not_cancel_it(stack):
    _, app, api = stack
    api.send({"name": "steps/cancel", "data": {"id": "c3"}})
    event_id = api.send({"name": "steps/cancellable", "data": {"id": "c3", "seconds": 1}}).json()["ids"][0]
    assert api.wait_for_end(run_of(api, event_id)["run_id"], timeout=30)["status"] == "Completed"


def test_idempotency_key_starts_one_run_per_key_value(stack):
    _, app, api = stack
    first = api.send({"name": "steps/charge", "data": {"order_id": "o-1", "n": 1}}).json()["ids"][0]
    api.send([{"name": "steps/charge", "data": {"order_id": "o-1", "n": n}} for n in (2, 3)])
    other = api.send({"name": "steps/charge", "data": {"order_id": "o-2", "n": 4}}).json()["ids"][0]
    api.wait_for_end(run_of(api, first)["run_id"])
    api.wait_for_end(run_of(api, other)["run_id"])
    time.sleep(0.5)
    charges = app.effects("charge")
    assert sorted((c["order_id"], c["n"]) for c in charges) == [("o-1", 1), ("o-2", 4)]


def test_a_function_with_several_triggers_runs_for_each(stack):
    _, app, api = stack
    a = api.send({"name": "multi/a", "data": {}}).json()["ids"][0]
    b_ok = api.send({"name": "multi/b", "data": {"ok": True}}).json()["ids"][0]
    b_no = api.send({"name": "multi/b", "data": {"ok": False}}).json()["ids"][0]
    assert api.wait_for_end(run_of(api, a)["run_id"])["output"] == "multi/a"
    assert api.wait_for_end(run_of(api, b_ok)["run_id"])["output"] == "multi/b"
    time.sleep(0.5)
    assert api.event_runs(b_no) == []  # the second trigger's expression filtered it


@pytest.mark.parametrize("lookback, expected", [(True, {"by": "bank"}), (False, None)])
def test_wait_lookback_sees_an_event_sent_just_before_the_wait(stack, lookback, expected):
    _, app, api = stack
    order = f"o-{lookback}"
    event_id = api.send({"name": "steps/order", "data": {"id": order, "lookback": lookback}}).json()["ids"][0]
    run_id = run_of(api, event_id)["run_id"]
    wait_until(lambda: app.effects("order-preparing", run_id=run_id), what="prepare step")
    # the confirmation lands while the run is still inside its first step
    api.send([{"name": "steps/confirmed", "data": {"id": "someone-else", "by": "decoy"}},
              {"name": "steps/confirmed", "data": {"id": order, "by": "bank"}}])
    ended = api.wait_for_end(run_id, timeout=30)
    assert ended["status"] == "Completed"
    assert ended["output"] == expected


def test_race_continues_with_the_first_branch_done(stack):
    _, app, api = stack
    event_id = api.send({"name": "steps/race", "data": {}}).json()["ids"][0]
    run = api.wait_for_end(run_of(api, event_id)["run_id"], timeout=30)
    assert run["status"] == "Completed"
    assert "fast" in run["output"]["results"]
    branches = app.effects("race-branch", run_id=run["run_id"])
    assert sorted(b["name"] for b in branches).count("fast") == 1


def test_large_state_goes_through_use_api(stack):
    _, app, api = stack
    size = 1_800_000  # three steps of 1.8 MB: the request body would pass 4 MiB
    before = api.http.get("/v1/stats").json()["data"]["calls"]["use_api"]
    event_id = api.send({"name": "steps/big-state", "data": {"size": size}}).json()["ids"][0]
    run = api.wait_for_end(run_of(api, event_id)["run_id"], timeout=60)
    assert run["status"] == "Completed", run
    assert run["output"] == {"lengths": [size] * 3, "first": ["a", "b", "c"]}
    assert len(app.effects("big-step", run_id=run["run_id"])) == 3
    # the last call (steps a, b and c in state) could not carry its state inline
    assert api.http.get("/v1/stats").json()["data"]["calls"]["use_api"] > before


def test_step_output_over_the_limit_fails_with_a_clear_error(stack):
    _, app, api = stack
    event_id = api.send({"name": "steps/too-big", "data": {}}).json()["ids"][0]
    run = api.wait_for_end(run_of(api, event_id)["run_id"], timeout=60)
    assert run["status"] == "Failed"
    message = run["error"]["message"]
    assert "'huge'" in message and "4.0 MiB" in message and "limit" in message


def test_invoke_chain_three_deep_by_function_and_by_id(stack):
    _, app, api = stack
    event_id = api.send({"name": "steps/chain", "data": {"x": 4}}).json()["ids"][0]
    run = api.wait_for_end(run_of(api, event_id)["run_id"], timeout=60)
    assert run["status"] == "Completed"
    assert run["output"] == {"path": ["top", "mid", "leaf"], "x": 41}
    assert sorted(e["level"] for e in app.effects("chain")) == ["leaf", "mid"]


def test_invoke_timeout_raises_in_the_parent(stack):
    _, app, api = stack
    event_id = api.send({"name": "steps/impatient", "data": {}}).json()["ids"][0]
    run = api.wait_for_end(run_of(api, event_id)["run_id"], timeout=30)
    assert run["status"] == "Completed"
    assert run["output"] == {"error": "InngestInvokeTimeoutError",
                             "message": "Timed out waiting for invoked function to complete"}


def test_send_event_step_and_sleep_until(stack):
    _, app, api = stack
    event_id = api.send({"name": "steps/send", "data": {}}).json()["ids"][0]
    run = api.wait_for_end(run_of(api, event_id)["run_id"], timeout=30)
    assert run["status"] == "Completed"
    assert len(run["output"]) == 3
    received = wait_until(lambda: len(app.effects("received")) == 3 and app.effects("received"))
    assert sorted(r["i"] for r in received) == [0, 1, 2]
    for sent_id in run["output"]:  # the ids the step returned are the events that started the receivers
        assert api.wait_for_runs(sent_id)


def test_sleeping_and_waiting_runs_survive_a_restart(tmp_path):
    server, app, api = start_stack(tmp_path, APP, persist=True)
    try:
        sleeper = api.send({"name": "steps/cancellable", "data": {"id": "r1", "seconds": 4}}).json()["ids"][0]
        waiter = api.send({"name": "steps/order", "data": {"id": "r2", "prepare_s": 0, "timeout": 120}}).json()["ids"][0]
        sleeper_run, waiter_run = run_of(api, sleeper)["run_id"], run_of(api, waiter)["run_id"]
        wait_until(lambda: app.effects("cancellable-before", run_id=sleeper_run), what="sleeper asleep")
        wait_until(lambda: any(s["status"] == "waiting"
                               for s in api.http.get(f"/v1/runs/{waiter_run}/steps").json()["data"]),
                   what="waiter waiting")
        server.kill9()
        server.start()
        api.send({"name": "steps/confirmed", "data": {"id": "r2", "by": "after-restart"}})
        assert api.wait_for_end(waiter_run, timeout=30)["output"] == {"by": "after-restart"}
        assert api.wait_for_end(sleeper_run, timeout=30)["status"] == "Completed"
        assert len(app.effects("cancellable-before", run_id=sleeper_run)) == 1
        assert len(app.effects("cancellable-after", run_id=sleeper_run)) == 1
    finally:
        app.stop()
        server.stop()


@pytest.mark.parametrize(
    "config, fragment",
    [
        ({"cancel": [{"event": "x/y", "if": "async.data.list.exists(i, i == 1)"}]}, "macros are disallowed"),
        ({"cancel": [{"event": "x/y", "timeout": "soon"}]}, "cancel[0].timeout"),
        ({"cancel": [{"if": "true"}]}, "cancel[0] needs an 'event'"),
        ({"cancel": [{"event": f"x/{i}"} for i in range(6)]}, "at most 5 cancel entries"),
        ({"idempotency": "event.data.("}, "idempotency"),
    ],
)
def test_register_rejects_bad_cancel_and_idempotency_config(stack, config, fragment):
    _, _, api = stack
    url = "http://127.0.0.1:1/api/inngest"
    fn = {"id": "bad-config", "triggers": [{"event": "x/a"}],
          "steps": {"step": {"id": "step", "runtime": {"type": "http", "url": url}}}, **config}
    r = api.http.post("/fn/register", json={"appName": "bad-config", "url": url, "functions": [fn]})
    assert r.status_code == 400
    assert fragment in r.json()["error"]


def test_fast_forward_fires_a_runs_sleep_and_wait_timeout_in_dev_only(stack):
    _, app, api = stack
    run_id = run_of(api, api.send({"name": "steps/patient", "data": {}}).json()["ids"][0])["run_id"]
    wait_until(lambda: any(j["kind"] == "wake" for j in api.http.get(f"/v1/runs/{run_id}/jobs").json()["data"]),
               what="the day-long sleep to be scheduled")
    forward = api.http.post(f"/v1/runs/{run_id}/fast-forward")
    if api.cloud:  # production keeps real time, and says so
        assert forward.status_code == 403 and "lockgate dev" in forward.json()["error"]
        assert api.run(run_id)["status"] == "Running"
        assert app.effects("patient-awake", run_id=run_id) == []
        return
    assert forward.status_code == 200
    assert [(t["kind"], t["was_due_at"] > time.time() * 1000 + 23 * 3600_000) for t in forward.json()["data"]["advanced"]] \
        == [("wake", True)]
    wait_until(lambda: app.effects("patient-awake", run_id=run_id), what="the sleep to end")
    wait_until(lambda: any(j["kind"] == "wait_timeout" for j in api.http.get(f"/v1/runs/{run_id}/jobs").json()["data"]),
               what="the day-long wait to be registered")
    assert [t["kind"] for t in api.http.post(f"/v1/runs/{run_id}/fast-forward").json()["data"]["advanced"]] \
        == ["wait_timeout"]
    run = api.wait_for_end(run_id, timeout=15)
    assert run["status"] == "Completed" and run["output"] == {"reply": None}  # the wait timed out
    assert len(app.effects("patient-awake", run_id=run_id)) == 1
    # nothing left to advance, and an unknown run is a clear 404
    assert api.http.post(f"/v1/runs/{run_id}/fast-forward").json()["data"]["advanced"] == []
    missing = api.http.post("/v1/runs/01J0000000000000000000NONE/fast-forward")
    assert missing.status_code == 404 and missing.json()["error"] == "run not found"
