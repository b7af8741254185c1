"""Retention on a real server: finished runs and their events go after the retention period,
live runs stay whole, and the tables behind flow control, waits and singletons stay as small as
what is still open."""

from __future__ import annotations

import json

import pytest

from tests.conftest import query_store, start_stack, wait_until

TABLES = ["runs", "steps", "run_triggers", "events", "jobs", "waits", "flow_windows", "flow_buckets",
          "unique_keys", "flow_runs"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, backend):
    tmp = tmp_path_factory.mktemp("retention")
    config = tmp / "lockgate.json"
    config.write_text(json.dumps({"housekeeping_interval": 0.3}))
    server, app, api = start_stack(tmp, "tests.e2e.apps.ops_app", persist=True,
                                   server_args=["--retention", "2s", "--config", str(config)],
                                   app_env={"GATE_PATH": str(tmp / "gate")})
    yield server, app, api
    app.stop()
    server.stop()


def sizes(server) -> dict[str, int]:
    return {t: query_store(server, f"SELECT COUNT(*) FROM {t}")[0][0] for t in TABLES}


def test_rest_says_how_long_data_is_kept(stack):
    _, _, api = stack
    body = api.http.get("/v1/retention").json()["data"]
    assert body["retention_seconds"] == 2 and body["keeps_forever"] is False
    assert api.http.get("/v1/stats").json()["data"]["retention"]["retention_seconds"] == 2


def test_finished_work_is_deleted_and_what_is_open_stays_small(stack):
    server, app, api = stack
    api_send = lambda name, data: api.send([{"name": name, "data": d} for d in data]).json()["ids"]  # noqa: E731
    api_send("ops/noop", [{"i": i} for i in range(30)])
    waiting = api_send("ops/wait", [{"id": f"keep-{i}"} for i in range(4)])
    api_send("ops/idem", [{"key": f"order-{i % 3}"} for i in range(9)])
    api_send("ops/debounce", [{"key": f"user-{i % 4}"} for i in range(12)])
    api_send("ops/batch", [{"n": i} for i in range(12)])
    api_send("ops/rate", [{"key": f"tenant-{i}"} for i in range(10)])
    wait_until(lambda: len(app.effects("noop")) == 30 and len(app.effects("idem")) == 3
               and len(app.effects("debounced")) == 4 and sum(e["n"] for e in app.effects("batched")) == 12
               and len(app.effects("rate")) == 10 and len(app.effects("wait-before")) == 4,
               timeout=120, what="every function to have run")
    # A finished run's id comes from the app's ledger: it may already be gone from the store.
    first_noop = app.effects("noop")[0]["run_id"]
    waiter_runs = [api.wait_for_runs(e)[0]["run_id"] for e in waiting]  # live: never deleted

    # Everything finished goes once it is 2 s old; only the four waiting runs remain.
    wait_until(lambda: sizes(server)["runs"] == 4, timeout=90, what="finished runs to be deleted")
    wait_until(lambda: sizes(server)["events"] == 4, timeout=90, what="their events to be deleted")
    left = sizes(server)
    assert left["run_triggers"] == 4 and left["waits"] == 4
    assert left["steps"] <= 8  # each waiter: its first step, and the wait it is parked on
    assert left["jobs"] == 4  # the waits' timeouts
    assert left["flow_windows"] == 0  # debounce and batch windows closed when they fired
    assert left["flow_runs"] == 0
    wait_until(lambda: sizes(server)["flow_buckets"] == 0, timeout=60, what="rate-limit buckets to lapse")
    # Event-id dedupe (one key per function an event triggered: 77 here) and idempotency keys (3
    # distinct) live 24 h by the protocol; the sweep deletes them after (tests/unit/test_retention.py).
    assert sizes(server)["unique_keys"] == 77 + 3
    assert api.http.get(f"/v1/runs/{first_noop}").status_code == 404
    activity = api.http.get("/v1/retention").json()["data"]["housekeeping"]  # what it did, for operators
    assert activity["runs_deleted"] >= 30 and activity["events_deleted"] >= 30 and activity["batches"] >= 2
    for run_id in waiter_runs:  # live runs were left whole
        assert api.run(run_id)["status"] == "Running"

    # A kept run still resumes on its event, and is deleted once it too has been finished 2 s.
    assert api.send({"name": "ops/go", "data": {"id": "keep-0"}}).status_code == 200
    assert api.wait_for_end(waiter_runs[0])["status"] == "Completed"
    wait_until(lambda: sizes(server)["runs"] == 3, timeout=90, what="the resumed run to be deleted in turn")


KEY_TABLES = ["flow_limits", "flow_singletons", "wait_keys"]


@pytest.fixture(scope="module")
def keys_stack(tmp_path_factory, backend):
    tmp = tmp_path_factory.mktemp("keys")
    config = tmp / "lockgate.json"
    config.write_text(json.dumps({"housekeeping_interval": 3600}))  # one sweep at start, then none for now
    server, app, api = start_stack(tmp, "tests.e2e.apps.keys_app", persist=True,
                                   server_args=["--retention", "2s", "--config", str(config)])
    yield server, app, api, config
    app.stop()
    server.stop()


def key_rows(server) -> dict[str, int]:
    return {t: query_store(server, f"SELECT COUNT(*) FROM {t}")[0][0] for t in KEY_TABLES}


def test_key_tables_fill_through_use_and_shrink_to_what_is_live(keys_stack):
    server, app, api, config = keys_stack
    send = lambda name, data: api.send([{"name": name, "data": d} for d in data]).json()["ids"]  # noqa: E731
    held = send("keys/hold", [{"id": f"live-{i}"} for i in range(2)])
    send("keys/keyed", [{"key": f"k-{i % 6}"} for i in range(12)])
    send("keys/single", [{"key": f"s-{i}"} for i in range(6)])
    send("keys/ping", [{"await": f"keys/pong-{i}"} for i in range(5)])
    wait_until(lambda: len(app.effects("keyed")) == 12 and len(app.effects("single")) == 6
               and len(app.effects("ping")) == 5 and len(app.effects("hold-waiting")) == 2,
               timeout=120, what="every function to have run")
    live_runs = [api.wait_for_runs(e)[0]["run_id"] for e in held]
    # One row per key used: 6 concurrency keys; 6 + 2 singleton keys; 5 + 1 wait keys (name, path).
    wait_until(lambda: key_rows(server) == {"flow_limits": 6, "flow_singletons": 8, "wait_keys": 6},
               what="a key row for each key used")  # the holds' waits register just after their first step

    # Sweeping every 0.3 s from now on: the rows nobody uses go, the live runs' rows stay.
    config.write_text(json.dumps({"housekeeping_interval": 0.3}))
    server.stop()
    server.start()
    wait_until(lambda: key_rows(server) == {"flow_limits": 0, "flow_singletons": 2, "wait_keys": 1}, timeout=90,
               what="unused key rows to be deleted")
    wait_until(lambda: query_store(server, "SELECT COUNT(*) FROM runs")[0][0] == 2, timeout=90,
               what="finished runs to be deleted")
    # Live work was left whole: the singletons still hold (a second run for live-0 is skipped) and the
    # waits still match their event by key.
    [again] = send("keys/hold", [{"id": "live-0"}])
    [skip] = wait_until(lambda: api.http.get(f"/v1/events/{again}").json()["data"]["skipped"], what="the skip")
    assert "singleton" in skip["reason"] and live_runs[0] in skip["reason"]
    send("keys/release", [{"id": f"live-{i}"} for i in range(2)])
    for run_id in live_runs:
        assert api.wait_for_end(run_id)["status"] == "Completed"
    assert all(e["got"] for e in app.effects("hold-released"))
    # Now nothing uses any key: every key table empties.
    wait_until(lambda: key_rows(server) == {"flow_limits": 0, "flow_singletons": 0, "wait_keys": 0}, timeout=90,
               what="the last key rows to be deleted")
