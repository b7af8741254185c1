"""Handles on a running server: functions listing, invoke (cron functions too), run filters,
refused unknown parameters, run times in ISO, failure reasons, why an event started nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from tests.conftest import ROOT, Api, AppProcess, LockgateProcess, free_port, stack_fixture, start_stack, wait_until

stack = stack_fixture("tests.e2e.apps.visibility_app", server_args=["--cors-origin", "http://app.example",
                                                                    "--cors-origin", "http://other.example"])


def _log_lines(server, *needles: str) -> list[str]:
    """Lines of the server's terminal log holding every needle (waits for at least one)."""
    def found():
        lines = server.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if all(n in line for n in needles)]
    return wait_until(found, timeout=10, what=f"a log line with {needles}")


def _fn(api, slug: str) -> dict:
    return next(f for f in api.http.get("/v1/functions").json()["data"] if f["slug"] == slug)


def test_functions_list_and_one_function_with_next_cron_fires(stack):
    _, _, api = stack
    listed = api.http.get("/v1/functions").json()["data"]
    assert {f["slug"] for f in listed} == {"vis-generate-video", "vis-yearly-report", "vis-charge-card", "vis-nap",
                                          "vis-await-payment"}
    report = _fn(api, "vis-yearly-report")
    assert report["triggers"] == [{"cron": "TZ=UTC 0 0 1 1 *"}]
    year = datetime.now(timezone.utc).year
    assert report["next_cron_fires"][:2] == [f"{year + 1}-01-01T00:00:00.000Z", f"{year + 2}-01-01T00:00:00.000Z"]
    # One function, by slug or by id, with its whole configuration.
    one = api.http.get("/v1/functions/vis-nap").json()["data"]
    assert one["id"] == _fn(api, "vis-nap")["id"]
    assert one["config"]["timeouts"] == {"finish": "1h"}
    assert api.http.get(f"/v1/functions/{one['id']}").json()["data"]["slug"] == "vis-nap"
    missing = api.http.get("/v1/functions/vis-nope")
    assert missing.status_code == 404 and "GET /v1/functions" in missing.json()["error"]


def test_invoke_runs_a_cron_function_now_with_a_payload(stack):
    _, app, api = stack
    answer = api.http.post("/v1/functions/vis-yearly-report/invoke", json={"data": {"year": 2031}})
    assert answer.status_code == 201, answer.text
    run_id = answer.json()["data"]["run_id"]
    run = api.wait_for_end(run_id)
    assert run["status"] == "Completed"
    assert run["output"] == {"event": "inngest/function.invoked", "year": 2031}
    assert [e["data"] for e in app.effects("report", run_id=run_id)] == [{"year": 2031}]
    # An event function by id, with an empty body.
    fn_id = _fn(api, "vis-generate-video")["id"]
    empty = api.http.post(f"/v1/functions/{fn_id}/invoke")
    assert api.wait_for_end(empty.json()["data"]["run_id"])["status"] == "Completed"


def test_invoke_refuses_bad_input_and_unknown_functions(stack):
    _, _, api = stack
    for body, words in (([1], "JSON object"), ({"data": [1]}, "'data' must be a JSON object"),
                        ({"payload": {}}, "JSON object")):
        answer = api.http.post("/v1/functions/vis-generate-video/invoke", json=body)
        assert answer.status_code == 400 and words in answer.json()["error"]
    bad_json = api.http.post("/v1/functions/vis-generate-video/invoke", content=b"{not json")
    assert bad_json.status_code == 400
    unknown = api.http.post("/v1/functions/vis-missing/invoke", json={})
    assert unknown.status_code == 404 and "vis-missing" in unknown.json()["error"]


def test_run_filters_by_slug_status_and_time_and_refuse_unknown_params(stack):
    _, _, api = stack
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    event_id = api.send({"name": "video/requested", "data": {"prompt": "filters"}}).json()["ids"][0]
    run_id = api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])["run_id"]
    since = before.isoformat().replace("+00:00", "Z")
    runs = api.http.get("/v1/runs", params={"slug": "vis-generate-video", "status": "completed",
                                            "created_after": since}).json()["data"]
    assert run_id in [r["run_id"] for r in runs]
    assert {r["function_slug"] for r in runs} == {"vis-generate-video"}
    assert all(r["status"] == "Completed" for r in runs)
    assert api.http.get("/v1/runs", params={"slug": "vis-generate-video", "status": "Failed"}).json()["data"] == []
    older = api.http.get("/v1/runs", params={"created_before": since, "slug": "vis-generate-video"}).json()["data"]
    assert run_id not in [r["run_id"] for r in older]
    typo = api.http.get("/v1/runs", params={"functon_id": "x"})
    assert typo.status_code == 400 and "functon_id" in typo.json()["error"] and "function_slug" in typo.json()["error"]
    bad_status = api.http.get("/v1/runs", params={"status": "done"})
    assert bad_status.status_code == 400 and "Completed" in bad_status.json()["error"]
    bad_time = api.http.get("/v1/runs", params={"created_after": "yesterday"})
    assert bad_time.status_code == 400 and "ISO 8601" in bad_time.json()["error"]
    assert api.http.get("/v1/events", params={"nam": "x"}).status_code == 400


def test_a_failed_run_carries_its_reason(stack):
    _, app, api = stack
    event_id = api.send({"name": "card/charge", "data": {}}).json()["ids"][0]
    run = api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])
    assert run["status"] == "Failed"
    assert run["reason"] == "the function failed after 2 attempts: RuntimeError: card declined by the provider"
    assert len(app.effects("charge", run_id=run["run_id"])) == 2


def test_a_sleeping_run_shows_when_it_wakes_and_its_deadline_in_iso(stack):
    _, _, api = stack
    event_id = api.send({"name": "nap/start"}).json()["ids"][0]
    run_id = api.wait_for_runs(event_id)[0]["run_id"]
    run = wait_until(lambda: (r := api.run(run_id))["wakes_at"] and r, what="the nap to start")
    started = datetime.fromisoformat(run["run_started_at"].replace("Z", "+00:00"))
    wakes = datetime.fromisoformat(run["wakes_at"].replace("Z", "+00:00"))
    deadline = datetime.fromisoformat(run["deadlines"]["finish"].replace("Z", "+00:00"))
    assert timedelta(minutes=9) < wakes - started <= timedelta(minutes=10, seconds=5)
    assert deadline - started == timedelta(hours=1)
    jobs = api.http.get(f"/v1/runs/{run_id}/jobs").json()["data"]
    assert all(j["due"].endswith("Z") for j in jobs)
    api.http.post(f"/v1/runs/{run_id}/cancel")
    cancelled = api.wait_for_end(run_id)
    assert cancelled["reason"] == "cancelled through the API"


def test_terminal_log_shows_sync_runs_failures_and_retries(stack):
    server, _, api = stack
    assert _log_lines(server, "INFO", "app vis synced: 5 function(s)")
    ok = api.send({"name": "video/requested", "data": {"prompt": "log"}}).json()["ids"][0]
    ok_run = api.wait_for_end(api.wait_for_runs(ok)[0]["run_id"])["run_id"]
    bad = api.send({"name": "card/charge"}).json()["ids"][0]
    bad_run = api.wait_for_end(api.wait_for_runs(bad)[0]["run_id"])["run_id"]
    assert _log_lines(server, "run started", f"run={ok_run}", "fn=vis-generate-video")
    assert _log_lines(server, "INFO", "run completed in", f"run={ok_run}", "fn=vis-generate-video")
    [retry] = _log_lines(server, "WARN", "retrying: attempt 1 of 2 failed (card declined by the provider",
                         f"run={bad_run}")
    assert "attempt=1" in retry
    [failed] = _log_lines(server, "WARN", "run failed after", f"run={bad_run}", "fn=vis-charge-card")
    assert failed.split("run failed after ")[1].split(": ", 1)[1].startswith(
        "the function failed after 2 attempts: RuntimeError: card declined by the provider  run=")


def test_the_log_says_which_run_an_event_resumed(stack):
    server, _, api = stack
    placed = api.send({"name": "order/placed", "data": {"order": "o-17"}}).json()["ids"][0]
    run_id = api.wait_for_runs(placed)[0]["run_id"]
    wait_until(lambda: "waiting for event order/paid" in (api.run(run_id)["explanation"] or ""), what="the wait")
    paid = api.send({"name": "order/paid", "data": {"order": "o-17"}}).json()["ids"][0]
    assert api.wait_for_end(run_id)["output"] is True
    assert _log_lines(server, "event order/paid resumed a waiting run", f"run={run_id}", f"event={paid}")
    assert api.http.get(f"/v1/events/{paid}").json()["data"]["started_nothing"] is None  # it did something


def test_an_event_that_starts_nothing_says_why_with_a_did_you_mean(stack):
    server, _, api = stack
    typo = api.send({"name": "video/requestd", "data": {}}).json()["ids"][0]
    event = api.http.get(f"/v1/events/{typo}").json()["data"]
    assert event["started_nothing"] == "no function is triggered by 'video/requestd'; did you mean 'video/requested'?"
    assert _log_lines(server, "event video/requestd started nothing", "did you mean 'video/requested'?",
                      f"event={typo}")
    matched = api.send({"name": "video/requested", "data": {}}).json()["ids"][0]
    api.wait_for_runs(matched)
    assert api.http.get(f"/v1/events/{matched}").json()["data"]["started_nothing"] is None


def test_clear_4xx_for_a_missing_event_key_and_a_wrong_qstash_token(stack):
    _, _, api = stack
    for path in ("/e/", "/e"):
        answer = api.http.post(path, json={"name": "video/requested"})
        assert answer.status_code == 400
        assert "event key is missing" in answer.json()["error"] and "/e/dev" in answer.json()["error"]
    wrong = api.http.post("/v2/publish/https://example.com/hook", headers={"Authorization": "Bearer prod-token"},
                          content=b"{}")
    assert wrong.status_code == 401
    assert "invalid token" in wrong.json()["error"] and "preset token" in wrong.json()["error"]
    assert "production token from Upstash" in wrong.json()["error"]


def test_cors_lets_the_named_origins_in(stack):
    _, _, api = stack
    for origin in ("http://app.example", "http://other.example"):
        preflight = api.http.options("/v1/runs", headers={"Origin": origin, "Access-Control-Request-Method": "GET"})
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == origin
        answer = api.http.get("/v1/functions", headers={"Origin": origin})
        assert answer.headers["access-control-allow-origin"] == origin
    stranger = api.http.get("/v1/functions", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in stranger.headers


def test_doctor_asks_the_running_server_about_its_store_and_apps(stack, tmp_path):
    server, app, _ = stack
    # From an empty folder: no local store to guess from, the server tells.
    report = subprocess.run([sys.executable, "-m", "lockgate", "doctor", "--port", str(server.port)],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    store = "PostgreSQL database" if server.postgres_uri else "in-memory SQLite"
    assert f"the server's store: {store}" in report.stdout
    assert f"app {app.url} answers and serves 5 function(s)" in report.stdout
    assert "no SQLite store" not in report.stdout and "no apps to check" not in report.stdout
    assert report.returncode == 0, report.stdout


def test_app_health_follows_failed_calls_and_recovery(tmp_path):
    server, app, api = start_stack(tmp_path, "tests.e2e.apps.visibility_app")
    try:
        app.stop()
        api.send({"name": "video/requested", "data": {}})
        error = wait_until(lambda: api.http.get("/v1/apps").json()["data"][0]["error"], what="the app's error")
        assert f"could not reach the app at {app.url}" in error
        app.start()
        wait_until(lambda: api.http.get("/v1/apps").json()["data"][0]["error"] is None, what="the app to recover")
        assert _log_lines(server, "WARN", "app unreachable", app.url)
        assert _log_lines(server, "INFO", "app recovered", app.url)
    finally:
        app.stop()
        server.stop()


def test_a_sync_that_fails_because_the_app_points_elsewhere_names_the_fix(tmp_path):
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}/api/inngest"
    server = LockgateProcess(args=["dev", "--no-discovery", "--in-memory", "--poll-interval", "0.5", "-u", app_url],
                             data_dir=None, log_path=tmp_path / "lockgate.log").start()
    # The app left at another server address (as at the SDK's default port when lockgate runs elsewhere).
    app = AppProcess(module="tests.e2e.apps.visibility_app", port=app_port,
                     server_url=f"http://127.0.0.1:{free_port()}", ledger=tmp_path / "ledger.jsonl").start()
    try:
        api = Api(server.url)
        # (Until the app is up, the error says it cannot be reached; then the sync itself fails.)
        error = wait_until(lambda: (a := api.http.get("/v1/apps").json()["data"]) and "refused the sync" in
                           (a[0]["error"] or "") and a[0]["error"], what="the failed sync")
        assert f"INNGEST_DEV={server.url} (or INNGEST_BASE_URL={server.url})" in error
    finally:
        app.stop()
        server.stop()
