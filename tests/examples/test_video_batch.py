"""Example 2 (examples/video_batch) end to end: the real lockgate (the pytest kit's server, on SQLite
and on PostgreSQL), the official SDK, real HTTP to the fake provider, the app's own SQLite ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from examples.video_batch.provider import FakeProvider, ProviderSettings, create_provider, sign
from lockgate.testing import LockgateClient, LockgateServer, ServedApp
from lockgate.testing.kit import free_port, point_sdk_at, restore_env
from tests.conftest import ROOT, wait_until
from tests.e2e.browser import launch_browser


@dataclass
class Stack:
    lockgate: LockgateClient
    http: httpx.Client  # to the app
    provider: FakeProvider
    app: Any  # the FastAPI app: .state.settings (changed by tests), .state.store
    callback_url: str

    def create(self, user_id: str, *prompts: str, **shot: Any) -> dict[str, Any]:
        shots = [{"prompt": p, **shot} for p in prompts]
        answer = self.http.post("/batches", json={"user_id": user_id, "shots": shots})
        assert answer.status_code == 202, answer.text
        return answer.json()

    def runs(self, batch: dict[str, Any]) -> list[str]:
        """The render-shot run of each shot of the batch, in shot order."""
        return [wait_until(lambda e=e: self.lockgate.runs_of(e), what=f"the run of {e}")[0]["run_id"]
                for e in batch["event_ids"]]

    def settled(self, batch: dict[str, Any], *, fast_forward: bool = False) -> dict[str, Any]:
        """Wait for every shot to end (skipping sleeps and waits if asked) and the batch to settle."""
        for event_id in batch["event_ids"]:
            self.lockgate.wait_for_run(event_id, timeout=60, fast_forward=fast_forward)
        found = self.wait_settled(batch)
        settle_runs = self.settle_runs(batch)
        assert settle_runs, f"batch {batch['batch_id']} settled without a settle-batch run"
        for run_id in settle_runs:
            self.lockgate.wait_for_run(run_id, status="Completed")
        return found

    def wait_settled(self, batch: dict[str, Any]) -> dict[str, Any]:
        return wait_until(lambda: (b := self.http.get(batch["status_url"]).json())["settled"] and b,
                          what=f"batch {batch['batch_id']} settled")

    def settle_runs(self, batch: dict[str, Any]) -> list[str]:
        events = self.lockgate.request("GET", "/v1/events?name=video/batch.ended&limit=100")[1]["data"]
        return [run["run_id"] for e in events if e["data"].get("batch_id") == batch["batch_id"]
                for run in self.lockgate.runs_of(e["id"])]

    def waiting_for_webhook(self, run_id: str) -> bool:
        jobs = self.lockgate.request("GET", f"/v1/runs/{run_id}/jobs")[1]["data"]
        return any(j["kind"] == "wait_timeout" for j in jobs)


def database_for(backend) -> str | None:
    """A fresh PostgreSQL database on the postgres round (dropped after the module), else None."""
    return backend.new_database(prefix="lockgate_video_") if backend.name == "postgres" else None


@pytest.fixture(scope="module")
def stack(backend, tmp_path_factory):
    """Provider, lockgate (SQLite in memory, or a fresh PostgreSQL database) and the app, synced."""
    from examples.video_batch.app import Settings, create_app

    # Slow and flaky in demos; here fast, and failing only where a prompt says so.
    provider = FakeProvider(ProviderSettings(submit_ms=(5, 20), render_ms=(20, 60), overload_rate=0, failure_rate=0))
    provider_app = ServedApp(create_provider(provider), path="").start()
    # any origin may follow lockgate's SSE: the batch page is served by the app, on another port
    server = LockgateServer(retry_interval=0.2, postgres_uri=database_for(backend), extra_args=["--cors-origin", "*"])
    server.start()
    previous = point_sdk_at(server.url)  # before create_app: the SDK client reads INNGEST_DEV
    settings = Settings(provider_url=provider_app.url, db_path=str(tmp_path_factory.mktemp("video") / "video.db"),
                        provider_slots=3, per_user=2, webhook_secret="test-secret")
    provider.settings.webhook_secret = "test-secret"
    app = create_app(settings)
    served = ServedApp(app).start()
    base = served.url.removesuffix("/api/inngest")
    settings.callback_url = f"{base}/webhooks/provider"
    lockgate = LockgateClient(server.url)
    try:
        lockgate.sync(served.url)
        with httpx.Client(base_url=base, timeout=30) as http:
            yield Stack(lockgate, http, provider, app, settings.callback_url)
    finally:
        served.stop()
        server.stop()
        provider_app.stop()
        restore_env(previous)


@pytest.fixture
def video(stack):
    """The stack with the app and provider settings of a plain test (tests change them)."""
    settings = stack.app.state.settings
    settings.callback_url, settings.chaos_settle = stack.callback_url, False
    stack.provider.hold_submits = stack.provider.hold_renders = False
    yield stack
    stack.provider.hold_submits = stack.provider.hold_renders = False


def ledger_of(found: dict[str, Any]) -> dict[str, list[tuple[str, int]]]:
    """shot position → its ledger lines (kind, cents)."""
    positions = {s["id"]: s["position"] for s in found["shots"]}
    lines: dict[int, list] = {}
    for line in found["ledger"]:
        lines.setdefault(positions[line["shot_id"]], []).append((line["kind"], line["cents"]))
    return {p: sorted(lines[p]) for p in sorted(lines)}


def test_the_app_registers_its_functions_and_the_cron(video, backend):
    store = video.lockgate.request("GET", "/v1/server")[1]["data"]["store"]
    assert ("postgres" in store.lower()) == (backend.name == "postgres"), store
    assert video.http.get("/health").json() == {"status": "ok", "functions": 3}
    [app] = video.lockgate.request("GET", "/v1/apps")[1]["data"]
    by_slug = {f["slug"]: f for f in app["functions"]}
    assert set(by_slug) == {"video-batch-render-shot", "video-batch-render-shot-failure", "video-batch-settle-batch",
                            "video-batch-clean-up-stale"}
    assert [t["cron"] for t in by_slug["video-batch-clean-up-stale"]["triggers"]] == ["*/10 * * * *"]
    render = video.lockgate.request("GET", "/v1/functions/video-batch-render-shot")[1]["data"]
    assert render["retries"] == 3
    assert [(c["limit"], c.get("key")) for c in render["config"]["concurrency"]] == [(3, None), (2, "event.data.user_id")]
    assert render["config"]["timeouts"]["finish"] == "40m"


def test_some_shots_fail_and_the_batch_is_settled_once_over_webhooks(video):
    """Webhook path: ok, ok on the other model, refused (permanent), render failure, overloaded twice."""
    video.provider.hold_renders = True  # let every run reach its webhook wait first (see below)
    batch = video.http.post("/batches", json={"user_id": "ada", "shots": [
        {"prompt": "a lighthouse at dusk", "model": "reel-1", "seconds": 8},
        {"prompt": "a fox in snow", "model": "frame-2", "seconds": 10, "orientation": "portrait"},
        {"prompt": "something forbidden", "seconds": 4},
        {"prompt": "a glitch in the matrix", "seconds": 6},
        {"prompt": "a busy street", "seconds": 2},
    ]}).json()
    runs = video.runs(batch)
    # A webhook sent before its run started waiting would be missed by the wait (and found by the
    # check after it, 5 minutes later): hold the renders until the four accepted shots wait.
    wait_until(lambda: all(video.waiting_for_webhook(r) for i, r in enumerate(runs) if i != 2),
               what="four runs waiting for their webhook")
    video.provider.hold_renders = False
    found = video.settled(batch)

    assert [s["status"] for s in found["shots"]] == ["succeeded", "succeeded", "failed", "failed", "succeeded"]
    assert "content policy" in found["shots"][2]["error"] and "could not render" in found["shots"][3]["error"]
    assert ledger_of(found) == {0: [("charge", 40), ("reserve", 40)], 1: [("charge", 30), ("reserve", 30)],
                                2: [("refund", 20), ("reserve", 20)], 3: [("refund", 30), ("reserve", 30)],
                                4: [("charge", 10), ("reserve", 10)]}
    assert (found["charged_cents"], found["refunded_cents"]) == (80, 50)

    ok = video.lockgate.run(runs[0])
    assert ok.status == "Completed" and ok.output["video_url"].endswith(".mp4")
    # (the shot that ended the batch last also has a `batch-ended` step)
    assert [s["name"] for s in ok.steps if s["name"] != "batch-ended"] == ["submit", "webhook-0", "record-succeeded"]
    assert ok.steps[1]["output"]["data"]["id"] == ok.output["job_id"]  # resumed by the webhook's event
    # each model got its own parameter shape; both jobs called back once, accepted
    jobs = {j["metadata"]["shot_id"]: j for j in video.provider.jobs.values()
            if j["metadata"]["shot_id"] in batch["shots"]}
    assert len(jobs) == 4  # the refused shot has none
    assert jobs[found["shots"][1]["id"]]["model"] == "frame-2"
    assert all(j["callbacks"] == [200] for j in jobs.values())
    # refused: failed at once, no retry; overloaded: the submit step was retried, then went through
    refused = video.lockgate.run(runs[2])
    assert refused.status == "Failed" and "content_policy" in refused.error["message"]
    assert [s["status"] for s in video.provider.submits if s["prompt"] == "something forbidden"] == [422]
    busy = video.lockgate.run(runs[4])
    assert busy.status == "Completed" and busy.steps[0]["name"] == "submit" and busy.steps[0]["attempts"] == 3
    assert [s["status"] for s in video.provider.submits if s["prompt"] == "a busy street"] == [503, 503, 201]
    # one settlement, however many shots ended last
    assert len(video.settle_runs(batch)) == 1


def test_a_submit_whose_answer_was_lost_starts_one_job(video):
    """The provider starts the job but its answer is lost; the retried submit step sends the same
    Idempotency-Key, so the provider answers that job instead of rendering (and billing) twice."""
    video.app.state.settings.callback_url = ""
    batch = video.create("mia", "a lost answer", seconds=2)
    found = video.settled(batch, fast_forward=True)
    [job] = [j for j in video.provider.jobs.values() if j["metadata"]["shot_id"] == batch["shots"][0]]
    assert found["shots"][0]["job_id"] == job["id"] and found["shots"][0]["status"] == "succeeded"
    assert [s["status"] for s in video.provider.submits if s["prompt"] == "a lost answer"] == [504, 200]
    run = video.lockgate.run(video.runs(batch)[0])
    assert (run.steps[0]["name"], run.steps[0]["attempts"]) == ("submit", 2)


def test_without_a_callback_url_the_shots_poll_with_sleeps(video):
    video.app.state.settings.callback_url = ""
    batch = video.create("grace", "a paper boat", "a glitch of light", seconds=4)
    found = video.settled(batch, fast_forward=True)  # the poll sleeps are skipped
    assert [s["status"] for s in found["shots"]] == ["succeeded", "failed"]
    assert ledger_of(found) == {0: [("charge", 20), ("reserve", 20)], 1: [("refund", 20), ("reserve", 20)]}
    ok = video.lockgate.run(video.runs(batch)[0])
    names = [s["name"] for s in ok.steps]
    assert names[:3] == ["submit", "poll-wait-0", "poll-0"] and "record-succeeded" in names
    assert not any(n.startswith("webhook") for n in names)
    jobs = [j for j in video.provider.jobs.values() if j["metadata"]["shot_id"].startswith(batch["batch_id"])]
    assert len(jobs) == 2 and all(j["callbacks"] == [] for j in jobs)


def test_a_retried_settlement_charges_once(video):
    video.app.state.settings.callback_url = ""
    video.app.state.settings.chaos_settle = True  # the first attempt writes the ledger, then fails
    batch = video.create("linus", "a comet", "a glitch", seconds=3)
    found = video.settled(batch, fast_forward=True)
    [settle_run] = video.settle_runs(batch)
    run = video.lockgate.run(settle_run)
    assert [(s["name"], s["attempts"]) for s in run.steps] == [("settle", 2)]
    assert run.output == {"charged_cents": 15, "refunded_cents": 15, "charged": 1, "refunded": 1}
    assert ledger_of(found) == {0: [("charge", 15), ("reserve", 15)], 1: [("refund", 15), ("reserve", 15)]}
    # a second batch-ended event (a shot's last step retried, say): settled again, nothing new written
    video.app.state.settings.chaos_settle = False
    [again] = video.lockgate.send({"name": "video/batch.ended", "data": {"batch_id": batch["batch_id"]}})
    assert video.lockgate.wait_for_run(again, status="Completed").output == run.output
    assert video.http.get(batch["status_url"]).json()["ledger"] == found["ledger"]


@pytest.mark.parametrize("path", ["webhook", "polling"])
def test_a_shot_with_no_result_in_30_minutes_fails_and_is_refunded(video, path):
    if path == "polling":
        video.app.state.settings.callback_url = ""
    batch = video.create("ken", "a stall that never ends", "a quick one", seconds=5)
    found = video.settled(batch, fast_forward=True)  # the 30 minutes of waits/sleeps, skipped
    assert [s["status"] for s in found["shots"]] == ["failed", "succeeded"]
    assert "no result from the provider within 30 minutes" in found["shots"][0]["error"]
    assert ledger_of(found)[0] == [("refund", 25), ("reserve", 25)]
    stalled = video.lockgate.run(video.runs(batch)[0])
    names = [s["name"] for s in stalled.steps]
    expected_waits = ["webhook-5", "check-5"] if path == "webhook" else ["poll-wait-32", "poll-32"]
    assert names[-3:] == [*expected_waits, "cancel-job"]
    assert video.provider.jobs[found["shots"][0]["job_id"]]["status"] == "cancelled"


def test_one_users_batch_does_not_starve_another(video):
    """3 provider slots, 2 per user: while ada's first two submits hang, bob's still goes through."""
    video.app.state.settings.callback_url = ""
    video.provider.hold_submits = True
    ada = video.create("ada-many", *[f"shot {i}" for i in range(5)], seconds=1)
    wait_until(lambda: video.provider.in_flight["ada-many"] == 2, what="two of ada's submits at the provider")
    bob = video.create("bob-one", "a single shot", seconds=1)
    wait_until(lambda: video.provider.in_flight["bob-one"] == 1, what="bob's submit beside ada's two")
    assert video.provider.in_flight["ada-many"] == 2  # ada's other three wait in lockgate, not at the provider
    assert len([s for s in video.provider.submits if s["user"] == "ada-many"]) == 2
    video.provider.hold_submits = False
    assert [s["status"] for s in video.settled(ada, fast_forward=True)["shots"]] == ["succeeded"] * 5
    assert [s["status"] for s in video.settled(bob, fast_forward=True)["shots"]] == ["succeeded"]
    ada_submits = [s for s in video.provider.submits if s["user"] == "ada-many"]
    assert len(ada_submits) == 5 and max(s["in_flight_at_start"] for s in ada_submits) == 2


def test_the_clean_up_settles_shots_whose_run_is_gone(video):
    batch = video.create("stale-user", "a stall forever", seconds=2)
    [run_id] = video.runs(batch)
    wait_until(lambda: video.waiting_for_webhook(run_id), what="the shot waiting for its webhook")
    # a cancelled run (by hand, or its finish timeout) calls no failure handler: the shot stays pending
    assert video.lockgate.request("DELETE", f"/v1/runs/{run_id}")[0] == 200
    video.lockgate.wait_for_run(run_id, status="Cancelled")
    assert video.http.get(batch["status_url"]).json()["shots"][0]["status"] == "pending"
    # what the cron does every 10 minutes, now and with no age limit
    status, invoked = video.lockgate.request("POST", "/v1/functions/video-batch-clean-up-stale/invoke",
                                             {"data": {"older_than_seconds": 0}})
    assert status == 201, invoked
    clean_up = video.lockgate.wait_for_run(invoked["data"]["run_id"], status="Completed")
    # (with no age limit it also takes any shot an earlier failed test left pending)
    assert batch["shots"][0] in clean_up.output["expired"]
    found = video.wait_settled(batch)
    assert found["shots"][0]["status"] == "failed" and found["shots"][0]["error"].startswith("stale")
    assert ledger_of(found) == {0: [("refund", 10), ("reserve", 10)]}
    job = video.provider.jobs[found["shots"][0]["job_id"]]
    assert job["status"] == "cancelled"


def test_progress_is_streamed_live(video):
    video.provider.hold_submits = video.provider.hold_renders = True  # nothing happens before the stream is open
    batch = video.create("watcher", "a sunrise", "a glitch at noon", seconds=2)
    seen: list[dict] = []

    def follow(stream: httpx.Response) -> None:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                seen.append(json.loads(line.removeprefix("data:"))["data"])
                if seen[-1]["type"] == "batch.settled":
                    return

    with httpx.stream("GET", batch["progress_url"], timeout=30) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        reader = threading.Thread(target=follow, args=(stream,), daemon=True)
        reader.start()
        video.provider.hold_submits = False
        runs = video.runs(batch)
        wait_until(lambda: all(video.waiting_for_webhook(r) for r in runs), what="both shots waiting")
        video.provider.hold_renders = False
        video.settled(batch)
        reader.join(timeout=30)
    assert [m["type"] for m in seen][-1] == "batch.settled"
    assert sorted(m["type"] for m in seen) == ["batch.settled", "shot.failed", "shot.submitted", "shot.submitted",
                                               "shot.succeeded"]
    assert seen[-1] == {"type": "batch.settled", "charged_cents": 10, "refunded_cents": 10, "charged": 1,
                        "refunded": 1}


def test_the_batch_page_follows_progress_in_a_browser(video):
    with launch_browser() as browser:
        video.provider.hold_submits = video.provider.hold_renders = True
        batch = video.create("viewer", "a <b>bold</b> sunset", "a glitch at noon", seconds=3)
        page = browser.new_page()
        page.goto(str(video.http.base_url).rstrip("/") + batch["watch_url"])
        page.locator("#connection").filter(has_text="live").wait_for()
        assert page.locator("#summary").inner_text() == "0 of 2 shots ended."
        assert page.locator(f"#shot-{batch['shots'][0]} td").nth(1).inner_text() == "a <b>bold</b> sunset"  # as text
        video.provider.hold_submits = False
        runs = video.runs(batch)
        wait_until(lambda: all(video.waiting_for_webhook(r) for r in runs), what="both shots waiting")
        video.provider.hold_renders = False
        video.settled(batch)
        page.locator("#summary").filter(has_text="Settled").wait_for()
        assert page.locator("#summary").inner_text() == "Settled: charged $0.15, refunded $0.15."
        rows = page.locator("#shots tr")
        assert [rows.nth(i).get_attribute("class") for i in range(2)] == ["succeeded", "failed"]
        assert rows.nth(0).locator("td").nth(5).inner_text().endswith(".mp4")


def start_app_process(port: int, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "examples.video_batch.app:create_app",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            cwd=ROOT, env={**os.environ, **env})
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200, what="the app")
    return proc


def test_the_app_killed_mid_submit_renders_each_shot_once(stack, backend, tmp_path):
    """kill -9 while both submits wait at the provider: lockgate calls the restarted app again, the
    submit step runs again with the same Idempotency-Key, and the provider renders each shot once."""
    provider = stack.provider
    # a retry interval that leaves the app time to come back (each failed call uses an attempt)
    server = LockgateServer(retry_interval=3, postgres_uri=database_for(backend)).start()
    port = free_port()
    env = {"INNGEST_DEV": server.url, "VIDEO_PROVIDER_URL": stack.app.state.settings.provider_url,
           "VIDEO_CALLBACK_URL": "", "VIDEO_DB": str(tmp_path / "video.db"), "APP_ID": "video-crash"}
    app = start_app_process(port, env)
    client = LockgateClient(server.url)
    try:
        client.sync(f"http://127.0.0.1:{port}/api/inngest")
        provider.hold_submits = True
        batch = httpx.post(f"http://127.0.0.1:{port}/batches", timeout=10,
                           json={"user_id": "crash", "shots": [{"prompt": "one"}, {"prompt": "two"}]}).json()
        wait_until(lambda: provider.in_flight["crash"] == 2, what="both submits at the provider")
        app.kill()  # SIGKILL: no clean-up, the provider's answers go nowhere
        app.wait()
        provider.hold_submits = False
        wait_until(lambda: [s["status"] for s in provider.submits if s["user"] == "crash"] == [201, 201],
                   what="the provider starting both jobs")
        app = start_app_process(port, env)
        for event_id in batch["event_ids"]:
            client.wait_for_run(event_id, status="Completed", timeout=60, fast_forward=True)
        found = wait_until(lambda: (b := httpx.get(f"http://127.0.0.1:{port}{batch['status_url']}").json())["settled"]
                           and b, what="settled")
        assert [s["status"] for s in found["shots"]] == ["succeeded", "succeeded"]
        assert [s["status"] for s in provider.submits if s["user"] == "crash"] == [201, 201, 200, 200]
        jobs = [j for j in provider.jobs.values() if j["metadata"]["user_id"] == "crash"]
        assert sorted(j["id"] for j in jobs) == sorted(s["job_id"] for s in found["shots"])  # two jobs, not four
        assert [(line["kind"], line["cents"]) for line in found["ledger"] if line["kind"] != "reserve"] == \
            [("charge", 40), ("charge", 40)]
    finally:
        provider.hold_submits = False
        app.kill()
        app.wait()
        server.stop()


def test_bad_input_is_refused(video):
    assert video.http.post("/batches", json={"user_id": "x", "shots": []}).status_code == 422
    unknown = video.http.post("/batches", json={"user_id": "x", "shots": [{"prompt": "p", "model": "sora-9"}]})
    assert unknown.status_code == 422 and "reel-1" in unknown.text
    assert video.http.get("/batches/b_nope").status_code == 404
    body = json.dumps({"id": "job_1", "status": "succeeded"}).encode()
    forged = video.http.post("/webhooks/provider", content=body, headers={"X-Provider-Signature": sign("wrong", body)})
    assert forged.status_code == 401
    signed = video.http.post("/webhooks/provider", content=b"[]",
                             headers={"X-Provider-Signature": sign("test-secret", b"[]")})
    assert signed.status_code == 400


def test_the_one_command_runs_the_example(backend, tmp_path):
    """`python -m examples.video_batch` as the README says, on free ports, the provider five times
    faster (and randomly failing, as in a demo); SIGTERM stops all three processes."""
    lockgate_port, app_port, provider_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INNGEST_", "LOCKGATE_", "VIDEO_"))}
    env.update(PYTHONPATH=str(ROOT), VIDEO_LOCKGATE_PORT=str(lockgate_port), VIDEO_APP_PORT=str(app_port),
               VIDEO_PROVIDER_PORT=str(provider_port), VIDEO_PROVIDER_TIME_SCALE="0.2",
               LOCKGATE_RETRY_INTERVAL="0.2")  # the provider's random 503s retry at once
    # (renders still take 0.6 s at least: a webhook faster than the run's step to start waiting
    # would be found only by the check after the 5-minute slice, as the app's comment explains)
    if uri := database_for(backend):
        env["LOCKGATE_POSTGRES_URI"] = uri
    # in tmp_path: lockgate's data dir and the app's SQLite file are relative to it
    launcher = subprocess.Popen([sys.executable, "-m", "examples.video_batch"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output: list[bytes] = []
    threading.Thread(target=lambda: output.extend(launcher.stdout), daemon=True).start()
    app, lockgate = f"http://127.0.0.1:{app_port}", LockgateClient(f"http://127.0.0.1:{lockgate_port}")
    try:
        wait_until(lambda: httpx.get(f"{app}/health", timeout=1).json()["functions"] == 3, what="the app")
        wait_until(lambda: lockgate.request("GET", "/v1/apps")[1]["data"][0]["functions"], what="the sync")
        batch = httpx.post(f"{app}/batches", timeout=10, json={"user_id": "demo", "shots": [
            {"prompt": "a fox"}, {"prompt": "a glitch"}, {"prompt": "something forbidden"},
            {"prompt": "a cat", "model": "frame-2"}]}).json()
        found = wait_until(lambda: (b := httpx.get(app + batch["status_url"]).json())["settled"] and b,
                           timeout=90, what="the batch settled")
        statuses = [s["status"] for s in found["shots"]]
        assert statuses[1:3] == ["failed", "failed"] and set(statuses) <= {"succeeded", "failed"}
        for shot in found["shots"]:  # whatever the provider's dice said: a charge or a refund, once
            settled = [line["kind"] for line in found["ledger"] if line["shot_id"] == shot["id"] and
                       line["kind"] != "reserve"]
            assert settled == ["charge" if shot["status"] == "succeeded" else "refund"], (shot, found["ledger"])
        page = httpx.get(app + batch["watch_url"])
        assert page.status_code == 200 and batch["batch_id"] in page.text
        assert (tmp_path / ".video-batch.db").exists()
    finally:
        launcher.terminate()
        launcher.wait(timeout=30)
    for port in (lockgate_port, app_port, provider_port):  # every process stopped with the launcher
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    assert b"try: curl -X POST" in b"".join(output)
