"""Flow control against the official Python SDK: limits counted from the app's own ledger.

Every step records start/end in the ledger, so overlap and start order are what the app
really saw. Timing windows are generous: the machine may be loaded.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import start_stack, wait_until

APP = "tests.e2e.apps.flow_app"
FINAL = ("Completed", "Failed", "Cancelled")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, backend):  # backend: one stack per store backend
    tmp = tmp_path_factory.mktemp("flow")
    server, app, api = start_stack(tmp, APP)
    warm_up(api)
    yield server, app, api
    app.stop()
    server.stop()


def warm_up(api) -> None:
    """The function list is readable a moment before the engine's registry reloads: wait until
    an event really starts a run (a rate-limit key of its own, so no test's limit is touched)."""
    wait_until(lambda: api.event_runs(send(api, {"name": "flow/rate-limited", "data": {"user": "warm-up"}})[0]),
               timeout=30, what="functions live in the engine")


def entries(app, kind, **match):
    return [e for e in app.ledger_entries() if e["kind"] == kind and all(e.get(k) == v for k, v in match.items())]


def max_overlap(app, fn, *, customer=None) -> int:
    """The largest number of `work` steps of `fn` the app was executing at the same time."""
    marks = []
    for e in app.ledger_entries():
        if e.get("fn") == fn and e["kind"] in ("start", "end") and (customer is None or e.get("customer") == customer):
            marks.append((e["at"], 0 if e["kind"] == "end" else 1))  # an end sorts before a start at the same time
    current = peak = 0
    for _, is_start in sorted(marks):
        current += 1 if is_start else -1
        peak = max(peak, current)
    return peak


def send(api, events) -> list[str]:
    response = api.send(events)
    assert response.status_code == 200, response.text
    return response.json()["ids"]


def runs_of(api, ids, timeout=90.0) -> list[dict]:
    runs = [api.wait_for_runs(i, timeout=timeout)[0] for i in ids]
    return [api.wait_for_end(r["run_id"], timeout=timeout) for r in runs]


def test_concurrency_limit_is_never_exceeded(stack):
    _, app, api = stack
    ids = send(api, [{"name": "flow/limit-two", "data": {"n": n, "sleep": 1}} for n in range(6)])
    runs = runs_of(api, ids)
    assert [r["status"] for r in runs] == ["Completed"] * 6
    assert len(entries(app, "start", fn="limit-two")) == 6
    assert max_overlap(app, "limit-two") == 2


def test_concurrency_counts_parallel_steps_not_runs(stack):
    _, app, api = stack
    runs = runs_of(api, send(api, [{"name": "flow/parallel-two", "data": {}} for _ in range(3)]))
    assert [r["status"] for r in runs] == ["Completed"] * 3
    assert [sorted(r["output"]) for r in runs] == [["b0", "b1", "b2", "b3"]] * 3
    assert len(entries(app, "start", fn="parallel-two")) == 12  # every step ran exactly once
    assert max_overlap(app, "parallel-two") == 2


def test_concurrency_key_limits_each_customer(stack):
    _, app, api = stack
    events = [{"name": "flow/per-customer", "data": {"customer": c, "n": n, "sleep": 1}}
              for n in range(3) for c in ("a", "b", "c")]
    runs = runs_of(api, send(api, events))
    assert all(r["status"] == "Completed" for r in runs)
    for customer in ("a", "b", "c"):
        assert max_overlap(app, "per-customer", customer=customer) == 1
    assert max_overlap(app, "per-customer") >= 2  # different customers do run side by side


def test_two_limits_at_once(stack):
    _, app, api = stack
    events = [{"name": "flow/two-limits", "data": {"customer": c, "n": n, "sleep": 1}}
              for n in range(2) for c in ("a", "b", "c", "d")]
    runs = runs_of(api, send(api, events))
    assert all(r["status"] == "Completed" for r in runs)
    assert max_overlap(app, "two-limits") == 3
    for customer in ("a", "b", "c", "d"):
        assert max_overlap(app, "two-limits", customer=customer) == 1


def test_env_scope_limit_is_shared_by_functions(stack):
    _, app, api = stack
    events = [{"name": f"flow/shared-{fn}", "data": {"customer": account, "account": account, "n": n, "sleep": 0.7}}
              for n in range(2) for fn in ("a", "b") for account in ("acme", "globex")]
    runs = runs_of(api, send(api, events))
    assert all(r["status"] == "Completed" for r in runs)
    for account in ("acme", "globex"):  # customer == account here: overlap per account across both functions
        assert max_overlap(app, "shared", customer=account) == 1
    assert max_overlap(app, "shared") == 2


def test_quiet_key_is_not_starved_and_waiting_runs_explain_why(stack):
    _, app, api = stack
    noisy = send(api, [{"name": "flow/per-customer", "data": {"customer": "noisy", "n": n, "sleep": 0.3}}
                       for n in range(50)])
    quiet = send(api, {"name": "flow/per-customer", "data": {"customer": "quiet", "n": 0, "sleep": 0.3}})

    # A noisy run still in the backlog names the limit and the key it waits for, in REST and GraphQL.
    last = api.wait_for_runs(noisy[-1])[0]
    assert last["status"] == "Queued"
    explanation = last["explanation"]
    assert "concurrency" in explanation and "limit 1" in explanation and "'noisy'" in explanation, explanation
    gql = api.http.post("/v0/gql", json={"query": "query($id: String!) { run(runID: $id) { status explanation } }",
                                          "variables": {"id": last["run_id"]}}).json()
    assert "'noisy'" in gql["data"]["run"]["explanation"]

    quiet_run = runs_of(api, quiet)[0]
    assert quiet_run["status"] == "Completed"
    unfinished = [i for i in noisy if api.event_runs(i)[0]["status"] not in FINAL]
    assert len(unfinished) > 10, "the quiet customer's run had to wait for the noisy backlog"
    runs = runs_of(api, noisy, timeout=180)
    assert all(r["status"] == "Completed" for r in runs)
    assert max_overlap(app, "per-customer", customer="noisy") == 1


def test_throttle_delays_runs_but_runs_them_all(stack):
    _, app, api = stack
    ids = send(api, [{"name": "flow/throttled", "data": {"n": n}} for n in range(4)])
    delayed = api.event_runs(ids[3])[0]
    assert delayed["status"] == "Queued" and "throttled" in delayed["explanation"]
    runs = runs_of(api, ids)
    assert all(r["status"] == "Completed" for r in runs)
    starts = sorted(e["at"] for e in entries(app, "start", fn="throttled"))
    assert len(starts) == 4
    # 1 per 2 s with a burst of 1: two start at once, then one every 2 s.
    assert starts[2] - starts[0] >= 1.5
    assert starts[3] - starts[0] >= 3.5


def test_rate_limit_drops_excess_events_and_says_why(stack):
    _, app, api = stack
    ids = send(api, [{"name": "flow/rate-limited", "data": {"user": "u1", "n": n}} for n in range(5)])
    other = send(api, {"name": "flow/rate-limited", "data": {"user": "u2", "n": 9}})
    assert all(r["status"] == "Completed" for r in runs_of(api, ids[:2] + other))
    for event_id in ids[2:]:
        assert api.event_runs(event_id) == []
        event = api.http.get(f"/v1/events/{event_id}").json()["data"]
        [skip] = event["skipped"]
        assert skip["function_slug"] == "flow-rate-limited"
        assert "rate limited" in skip["reason"] and "2 runs per 60s" in skip["reason"] and "'u1'" in skip["reason"]
    assert sorted(e["n"] for e in entries(app, "start", fn="rate-limited") if e["n"] is not None) == [0, 1, 9]


def test_a_repeated_event_id_takes_no_rate_limit_token(stack):
    _, app, api = stack
    first = send(api, {"id": "order-1", "name": "flow/rate-limited", "data": {"user": "u3", "n": 20}})
    repeat = send(api, {"id": "order-1", "name": "flow/rate-limited", "data": {"user": "u3", "n": 21}})
    second = send(api, {"id": "order-2", "name": "flow/rate-limited", "data": {"user": "u3", "n": 22}})
    assert all(r["status"] == "Completed" for r in runs_of(api, first + second))
    assert api.event_runs(repeat[0]) == []
    assert sorted(e["n"] for e in entries(app, "start", fn="rate-limited") if e["n"] in (20, 21, 22)) == [20, 22]


def test_idempotency_key_starts_one_run_per_value(stack):
    _, app, api = stack
    ids = send(api, [{"name": "flow/idempotent", "data": {"order": o, "n": n}}
                     for n, o in enumerate(["o-1", "o-2", "o-1"])])
    assert all(r["status"] == "Completed" for r in runs_of(api, ids[:2]))
    assert api.event_runs(ids[2]) == []
    [skip] = api.http.get(f"/v1/events/{ids[2]}").json()["data"]["skipped"]
    assert "idempotency" in skip["reason"] and "'o-1'" in skip["reason"]
    assert sorted(e["n"] for e in entries(app, "start", fn="idempotent")) == [0, 1]


def test_debounce_runs_once_with_the_last_event(stack):
    _, app, api = stack
    ids = []
    for n in (1, 2, 3):
        ids += send(api, {"name": "flow/debounced", "data": {"k": "x", "n": n}})
        time.sleep(0.3)
    send(api, {"name": "flow/debounced", "data": {"k": "y", "n": 7}})
    wait_until(lambda: len(entries(app, "debounced")) >= 2, timeout=30, what="debounced runs")
    time.sleep(3)  # the window is 2 s: nothing else may follow
    got = sorted((e["n"], e["events"]) for e in entries(app, "debounced"))
    assert got == [(3, 1), (7, 1)]
    # The replaced events say why they started nothing.
    for replaced, by in ((ids[0], ids[1]), (ids[1], ids[2])):
        [skip] = api.http.get(f"/v1/events/{replaced}").json()["data"]["skipped"]
        assert skip["reason"] == f"debounced: replaced by the later event {by}"
    assert api.http.get(f"/v1/events/{ids[2]}").json()["data"]["skipped"] == []


def test_batch_flushes_on_size_and_on_timeout(stack):
    _, app, api = stack
    send(api, [{"name": "flow/batched", "data": {"n": n}} for n in range(1, 5)])
    wait_until(lambda: len(entries(app, "batched")) >= 2, timeout=30, what="two batches")
    batches = [e["ns"] for e in entries(app, "batched")]
    assert batches == [[1, 2, 3], [4]]


def test_batch_keys_and_if(stack):
    _, app, api = stack
    before = len(entries(app, "batched"))
    send(api, [{"name": "flow/batched", "data": {"n": 10, "group": "g1"}},
               {"name": "flow/batched", "data": {"n": 20, "group": "g2"}},
               {"name": "flow/batched", "data": {"n": 11, "group": "g1"}},
               {"name": "flow/batched", "data": {"n": 30, "group": "g1", "solo": True}}])
    wait_until(lambda: len(entries(app, "batched")) >= before + 3, timeout=30, what="three runs")
    time.sleep(1)
    got = [e["ns"] for e in entries(app, "batched")[before:]]
    assert got[0] == [30]  # `if` is false: it runs at once, alone
    assert sorted(got[1:]) == [[10, 11], [20]]  # one batch per key, flushed by the timeout


def test_priority_reorders_a_backlog(stack):
    _, app, api = stack
    send(api, {"name": "flow/prioritized", "data": {"n": 0, "priority": 0, "sleep": 4}})
    wait_until(lambda: entries(app, "start", fn="prioritized"), timeout=30, what="blocker start")
    low = send(api, [{"name": "flow/prioritized", "data": {"n": n, "priority": 0}} for n in (1, 2, 3)])
    high = send(api, {"name": "flow/prioritized", "data": {"n": 9, "priority": 300}})
    runs_of(api, low + high)
    assert [e["n"] for e in entries(app, "start", fn="prioritized")] == [0, 9, 1, 2, 3]
    assert max_overlap(app, "prioritized") == 1


def test_start_timeout_cancels_a_queued_run_with_a_reason(stack):
    _, app, api = stack
    blocker = send(api, {"name": "flow/start-timeout", "data": {"n": 0, "sleep": 5}})
    wait_until(lambda: entries(app, "start", fn="start-timeout"), timeout=30, what="blocker start")
    waiting = send(api, {"name": "flow/start-timeout", "data": {"n": 1}})
    [cancelled] = runs_of(api, waiting)
    assert cancelled["status"] == "Cancelled"
    assert "start timeout" in cancelled["reason"] and "2s" in cancelled["reason"]
    assert runs_of(api, blocker)[0]["status"] == "Completed"
    assert [e["n"] for e in entries(app, "start", fn="start-timeout")] == [0]


def test_finish_timeout_cancels_a_running_run(stack):
    _, app, api = stack
    [run] = runs_of(api, send(api, {"name": "flow/finish-timeout", "data": {"n": 1}}))
    assert run["status"] == "Cancelled"
    assert "finish timeout" in run["explanation"]
    assert entries(app, "start", fn="finish-timeout")
    assert not entries(app, "finish-timeout-after-nap")


def test_singleton_skip_keeps_one_active_run(stack):
    _, app, api = stack
    ids = send(api, [{"name": "flow/singleton-skip", "data": {"k": "a", "n": n}} for n in (1, 2)])
    [run] = runs_of(api, ids[:1])
    assert run["status"] == "Completed"
    assert api.event_runs(ids[1]) == []
    [skip] = api.http.get(f"/v1/events/{ids[1]}").json()["data"]["skipped"]
    assert "singleton" in skip["reason"] and run["run_id"] in skip["reason"]
    # Once the active run ended, the key is free again.
    again = send(api, {"name": "flow/singleton-skip", "data": {"k": "a", "n": 3, "sleep": 0}})
    assert runs_of(api, again)[0]["status"] == "Completed"


def test_singleton_cancel_replaces_the_active_run(stack):
    _, app, api = stack
    first = send(api, {"name": "flow/singleton-cancel", "data": {"k": "a", "n": 1, "nap": 60}})
    wait_until(lambda: entries(app, "start", fn="singleton-cancel", n=1), timeout=30, what="first run start")
    [sleeping] = api.event_runs(first[0])  # a paused run says what it waits for
    wait_until(lambda: api.run(sleeping["run_id"])["explanation"].startswith("sleeping: step nap wakes at"),
               timeout=30, what="the sleeping run's explanation")
    second = send(api, {"name": "flow/singleton-cancel", "data": {"k": "a", "n": 2, "nap": 1}})
    [old] = runs_of(api, first)
    assert old["status"] == "Cancelled" and "singleton" in old["reason"]
    [new] = runs_of(api, second)
    assert new["status"] == "Completed"


def test_bad_flow_config_is_refused_at_sync_with_a_clear_error(stack):
    _, _, api = stack
    url = "http://127.0.0.1:9/api/inngest?fnId=bad&stepId=step"
    fn = {"id": "bad", "name": "bad", "triggers": [{"event": "x/bad"}],
          "steps": {"step": {"id": "step", "name": "step", "runtime": {"type": "http", "url": url}}}}
    cases = [
        ({"concurrency": [{"limit": 1, "scope": "env"}]}, "needs a key"),
        ({"concurrency": [{"limit": 1}, {"limit": 2}, {"limit": 3}]}, "at most 2"),
        ({"throttle": {"limit": 1, "period": "soon"}}, "throttle.period"),
        ({"rateLimit": {"limit": 1, "period": "48h"}}, "rateLimit.period"),
        ({"debounce": {"period": "1s", "key": "event.data.("}}, "debounce.key"),
        ({"singleton": {"mode": "maybe"}}, "singleton.mode"),
    ]
    for extra, message in cases:
        body = {"appname": "bad-app", "url": "http://127.0.0.1:9/api/inngest", "functions": [{**fn, **extra}]}
        response = api.http.post("/fn/register", json=body)
        assert response.status_code == 400, extra
        assert message in response.json()["error"], (extra, response.json())
    assert "bad-app-bad" not in {f["slug"] for f in api.functions()}


def test_kill9_loses_no_limited_run_and_no_open_window(tmp_path):
    server, app, api = start_stack(tmp_path, APP, persist=True)
    try:
        warm_up(api)
        limited = send(api, [{"name": "flow/limit-two", "data": {"n": n, "sleep": 1}} for n in range(5)])
        send(api, {"name": "flow/debounced", "data": {"k": "crash", "n": 42}})
        send(api, [{"name": "flow/batched", "data": {"n": n}} for n in (100, 101)])
        wait_until(lambda: entries(app, "start", fn="limit-two"), timeout=30, what="a limited step in flight")
        server.kill9()
        server.start()
        # Slots held by the dead process lapse; every acknowledged run completes.
        assert [r["status"] for r in runs_of(api, limited)] == ["Completed"] * 5
        wait_until(lambda: entries(app, "debounced", n=42), timeout=30, what="the debounced run after restart")
        wait_until(lambda: entries(app, "batched"), timeout=30, what="the open batch after restart")
        assert [e["ns"] for e in entries(app, "batched")] == [[100, 101]]
        assert len(entries(app, "debounced", n=42)) == 1
    finally:
        app.stop()
        server.stop()
