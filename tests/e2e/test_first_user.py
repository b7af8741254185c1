"""What a first-time user meets: the terminal of `lockgate dev`/`start` and the dashboard say what happened and
what to do, for the README's steps and the common mistakes (a QStash destination that is down, a function
the server refuses, a dev-mode app against `lockgate start`, a run that failed before any step, a
--postgres-uri that is not one). Real servers, the official SDKs, Debian's chromium."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import (EVENT_KEY, PYTHON, ROOT, SIGNING_KEY, Api, AppProcess, LockgateProcess,
                            free_port, stack_fixture, wait_until)

APP = "tests.e2e.apps.first_user_app"


stack = stack_fixture(APP)


def logged(server: LockgateProcess) -> str:
    return server.log_path.read_text()


def test_dev_names_the_dashboard_and_where_to_send_events(stack):
    server, _, _ = stack
    text = logged(server)
    assert f"dashboard: http://127.0.0.1:{server.port}/" in text
    assert f"send events to http://127.0.0.1:{server.port}/e/dev" in text


def test_a_new_store_is_one_line(tmp_path, backend):
    proc = LockgateProcess(args=["dev", "--no-discovery"], data_dir=tmp_path / "data",
                           log_path=tmp_path / "lockgate.log")
    proc.start()  # on the postgres round: a new database, kept for the restart below
    proc.stop()
    text = (tmp_path / "lockgate.log").read_text()
    kind = "the PostgreSQL database" if backend.name == "postgres" else f"SQLite in {tmp_path / 'data'}"
    assert len(re.findall(rf"set up a new store in {re.escape(kind)} \(schema \d{{4}}_\w+, \d+ migrations\)", text)) == 1, text
    assert "applied schema migration" not in text
    proc.start()  # an existing store says nothing about its schema
    proc.stop()
    assert (tmp_path / "lockgate.log").read_text().count("set up a new store") == 1


def test_an_in_memory_store_is_one_line(tmp_path, backend):
    if backend.name == "postgres":
        pytest.skip("--in-memory is a SQLite store")
    proc = LockgateProcess(args=["dev", "--no-discovery", "--in-memory"], data_dir=None, log_path=tmp_path / "lockgate.log")
    proc.start()
    proc.stop()
    text = (tmp_path / "lockgate.log").read_text()
    assert len(re.findall(r"applied \d+ schema migrations, up to \d{4}_\w+", text)) == 1, text
    assert "applied schema migration " not in text


def test_the_empty_qstash_page_shows_a_publish_command_that_works(page, stack):
    server, app, _ = stack
    page.goto("/qstash")
    hint = page.locator(".empty pre").inner_text()
    assert "No messages." in page.locator(".empty").inner_text()
    assert f"QSTASH_URL={server.url}" in page.locator(".empty").inner_text()
    # The command as shown, pointed at the app's refusing endpoint instead of example.com, publishes.
    argv = shlex.split(hint.replace("https://example.com/hook", f"http://127.0.0.1:{app.port}/deliveries/down"))
    assert argv[:3] == ["curl", "-X", "POST"]
    token = argv[argv.index("-H") + 1].split("Bearer ", 1)[1]
    published = httpx.post(argv[3], headers={"Authorization": f"Bearer {token}", "Upstash-Retries": "0"},
                           content=argv[argv.index("-d") + 1].encode())
    assert published.status_code in (200, 201), published.text
    message_id = published.json()["messageId"]
    wait_until(lambda: message_id in logged(server), what="the delivery's log line")
    page.goto("/qstash")
    page.locator("td", has_text=message_id).wait_for()


def test_a_qstash_delivery_that_fails_is_logged_with_its_retry_and_the_dlq_says_why(page, stack):
    server, _, _ = stack
    qstash = httpx.Client(base_url=server.url, timeout=10, headers={
        "Authorization": "Bearer eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0="})
    down = f"http://127.0.0.1:{free_port()}/nobody-listens"
    published = qstash.post(f"/v2/publish/{down}", content=b"x",
                            headers={"Upstash-Retries": "1", "Upstash-Retry-Delay": "50"})
    assert published.status_code in (200, 201), published.text
    message_id = published.json()["messageId"]
    wait_until(lambda: any(message_id in line and "moved to the DLQ" in line for line in logged(server).splitlines()),
               what="the DLQ line")
    lines = [line for line in logged(server).splitlines() if message_id in line]
    assert any(f"qstash message {message_id} to {down} failed: no answer (" in line and "retry 1 of 1 at" in line
               for line in lines), lines
    assert any("no retry left (1 retried), moved to the DLQ" in line for line in lines), lines
    assert "Traceback" not in logged(server)
    entry = next(m for m in qstash.get("/v2/dlq").json()["messages"] if m["messageId"] == message_id)
    assert entry["responseStatus"] == 0 and "Cannot connect" in entry["error"]
    page.goto("/qstash?tab=dlq")
    row = page.locator(f"tr[data-dlq-id='{entry['dlqId']}']")
    assert "no answer: ClientConnectorError: Cannot connect" in row.inner_text()


def test_a_qstash_destination_answering_an_error_is_logged_with_its_status(stack):
    server, app, _ = stack
    published = httpx.post(f"{server.url}/v2/publish/http://127.0.0.1:{app.port}/deliveries/down", content=b"y",
                           headers={"Upstash-Retries": "0", "Authorization": "Bearer eyJVc2VySUQiOiJkZWZhdWx0VXNl"
                                    "ciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0="})
    message_id = published.json()["messageId"]
    line = wait_until(lambda: [ln for ln in logged(server).splitlines() if message_id in ln and "DLQ" in ln],
                      what="the DLQ line")[0]
    assert "failed: HTTP 503: the receiver is down; no retry left (0 retried)" in line


def test_a_run_that_failed_before_any_step_says_so(page, stack):
    _, _, api = stack
    event_id = api.send({"name": "first/boom", "data": {"customer": "c9"}}).json()["ids"][0]
    run = api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])
    assert run["status"] == "Failed"
    page.goto(f"/runs/{run['run_id']}")
    assert "no such customer c9" in page.locator("body").inner_text()
    assert page.locator(".empty", has_text="No step finished: the function failed outside a step").count() == 1
    assert "No steps yet." not in page.locator("body").inner_text()
    done = api.send({"name": "first/hello", "data": {}}).json()["ids"][0]
    page.goto(f"/runs/{api.wait_for_end(api.wait_for_runs(done)[0]['run_id'])['run_id']}")
    page.locator(".empty", has_text="This run recorded no steps.").wait_for()


def _bad_cron_app(tmp_path) -> str:
    (tmp_path / "bad_cron_app.py").write_text(
        "import inngest, inngest.fast_api\nfrom fastapi import FastAPI\n"
        "client = inngest.Inngest(app_id='bad-cron', is_production=False)\n"
        "@client.create_function(fn_id='tick', trigger=inngest.TriggerCron(cron='61 * * * *'))\n"
        "async def tick(ctx):\n    return 1\n"
        "app = FastAPI()\ninngest.fast_api.serve(app, client, [tick])\n")
    return "bad_cron_app"


def test_a_function_the_server_refuses_is_named_with_the_fix(stack, tmp_path, page):
    server, _, api = stack
    port = free_port()
    app = subprocess.Popen([PYTHON, "-m", "uvicorn", f"{_bad_cron_app(tmp_path)}:app", "--port", str(port),
                            "--log-level", "warning"], cwd=tmp_path,
                           env={"INNGEST_DEV": server.url, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    try:
        url = f"http://127.0.0.1:{port}/api/inngest"
        wait_until(lambda: httpx.get(url, timeout=1).status_code < 500, what="the app")
        added = httpx.post(f"{server.url}/v1/apps", json={"url": url})
        assert added.status_code == 502
        error = added.json()["error"]
        assert error.startswith(f"lockgate refused the functions of the app at {url}: function 'bad-cron-tick':"
                                " bad cron '61 * * * *'"), error
        assert "Fix that function's configuration in the app" in error
        assert "INNGEST_DEV=" not in error  # the app did reach lockgate: pointing it elsewhere is no fix
        wait_until(lambda: "lockgate refused the functions of the app" in logged(server), what="the log line")
        page.goto("/apps")
        row = page.locator("tr", has_text=url)
        assert "lockgate refused the functions of the app" in row.inner_text()
        assert "Fix: make sure the app runs" not in row.inner_text()  # the error names its own fix
        # A long app URL (its name until it syncs) wraps: the page does not scroll sideways at 1280 px.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        # Each poll syncs the app again: /fn/register and the sync's check record the same words.
        listed = next(a for a in httpx.get(f"{server.url}/v1/apps").json()["data"] if a["url"] == url)
        assert listed["error"].startswith(f"lockgate refused the functions of the app at {url}: function"), listed
    finally:
        app.terminate()
        app.wait(timeout=10)
        httpx.delete(f"{server.url}/v1/apps/{url}")


def test_a_dev_mode_app_against_lockgate_start_is_told_to_run_in_cloud_mode(tmp_path, backend):
    server = LockgateProcess(args=["start", "--signing-key", SIGNING_KEY, "--event-key", EVENT_KEY,
                                   "--poll-interval", "0.5"],
                             data_dir=tmp_path / "data", log_path=tmp_path / "lockgate.log").start()
    app = AppProcess(module=APP, port=free_port(), server_url=server.url, ledger=tmp_path / "ledger.jsonl",
                     extra_env={"INNGEST_SIGNING_KEY": SIGNING_KEY}).start()  # INNGEST_DEV=<url>: dev mode
    try:
        api = Api(server.url, SIGNING_KEY)
        added = api.http.post("/v1/apps", json={"url": app.url})
        assert added.status_code == 502
        error = added.json()["error"]
        assert "The app runs in dev mode" in error and "INNGEST_DEV=0" in error, error
        assert "point it here" not in error
        wait_until(lambda: "The app runs in dev mode" in (tmp_path / "lockgate.log").read_text(), what="log line")
    finally:
        app.stop()
        server.stop()


@pytest.mark.parametrize("uri, said", [
    ("mysql://root@127.0.0.1/app", "--postgres-uri must start with postgresql:// (it starts with mysql://)"),
    ("127.0.0.1:5432/test", "--postgres-uri is not a PostgreSQL URI (no postgresql:// in front)"),
])
def test_a_postgres_uri_that_is_not_one_says_what_is_expected(uri, said):
    proc = subprocess.run([sys.executable, "-m", "lockgate", "dev", "--postgres-uri", uri, "--port", "0"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"lockgate: {said}; expected postgresql://user[:password]@host[:port]/database")


def test_an_app_url_on_lockgates_own_port_says_so(tmp_path, backend):
    port = free_port()
    own = f"http://127.0.0.1:{port}/api/inngest"
    server = LockgateProcess(args=["dev", "--no-discovery", "--in-memory", "-u", own], data_dir=None, port=port,
                             log_path=tmp_path / "lockgate.log").start()
    try:
        error = wait_until(lambda: (a := httpx.get(f"{server.url}/v1/apps").json()["data"]) and a[0]["error"],
                           what="the app's error")
        assert error == (f"{own} is this lockgate server, not an app: give -u/--sdk-url the address and port your"
                         " app listens on (lockgate's own port cannot serve an app)")
        assert error in (tmp_path / "lockgate.log").read_text()
    finally:
        server.stop()


def test_a_cancelled_runs_waiting_step_shows_stopped_not_waiting(page, stack):
    _, _, api = stack
    event_id = api.send({"name": "first/wait", "data": {"order_id": "o1"}}).json()["ids"][0]
    run_id = api.wait_for_runs(event_id)[0]["run_id"]
    page.goto(f"/runs/{run_id}")
    step = page.locator("li.step[data-step='payment']")
    step.locator(".badge", has_text="waiting").wait_for()
    page.get_by_role("button", name="Cancel run").click()
    page.locator("h1 .badge", has_text="Cancelled").wait_for()
    badge = page.locator("li.step[data-step='payment'] .badge")
    assert badge.inner_text() == "stopped"
    assert badge.get_attribute("title") == "the run ended before this step did"
    assert page.locator("li.step.st-waiting").count() == 0
    assert api.run(run_id)["status"] == "Cancelled"


def test_a_non_retriable_answer_is_logged_as_not_retried(stack):
    server, _, api = stack
    event_id = api.send({"name": "first/refuse", "data": {}}).json()["ids"][0]
    run = api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])
    assert run["status"] == "Failed"
    wait_until(lambda: any(run["run_id"] in ln and "run failed" in ln for ln in logged(server).splitlines()),
               what="the run's last line")
    calls = [ln for ln in logged(server).splitlines() if run["run_id"] in ln and "call to " in ln]
    assert calls, logged(server)[-3000:]
    assert all("not retriable, so it will not be retried" in ln for ln in calls), calls
    assert not any("retry policy applies" in ln for ln in calls), calls


def test_lockgate_start_logs_refused_events_once_per_source_without_the_key(tmp_path, backend):
    server = LockgateProcess(args=["start", "--signing-key", SIGNING_KEY, "--event-key", EVENT_KEY],
                             data_dir=tmp_path / "data", log_path=tmp_path / "lockgate.log").start()
    wrong_key = "wrong-event-key-0123456789abcdef"
    try:
        started = time.monotonic()
        for _ in range(30):
            refused = httpx.post(f"{server.url}/e/{wrong_key}", json={"name": "shop/order.paid", "data": {}})
            assert refused.status_code == 401
        missing = httpx.post(f"{server.url}/e/", json=[{"name": "shop/order.sent"}, {"name": "shop/x"}])
        assert missing.status_code == 401
        elapsed = time.monotonic() - started
        wait_until(lambda: "no event key in the URL" in (tmp_path / "lockgate.log").read_text(), what="log line")
    finally:
        server.stop()
    text = (tmp_path / "lockgate.log").read_text()
    unknown = [ln for ln in text.splitlines() if "refused event 'shop/order.paid' from 127.0.0.1" in ln]
    assert unknown and "HTTP 401: unknown event key (key wron… of 32 characters)" in unknown[0], text
    # At most one line per source and reason every 10 s, however many requests came in.
    assert len(unknown) <= 1 + int(elapsed // 10) + 1, unknown
    assert wrong_key not in text and EVENT_KEY not in text
    assert any("refused event 'shop/order.sent (+1 more)' from 127.0.0.1 with HTTP 401: no event key in the URL" in ln
               for ln in text.splitlines()), text


def test_doctor_with_no_server_counts_its_warnings(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lockgate", "doctor", "--port", str(free_port()), "--data-dir",
                           str(tmp_path / "data")], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stdout.splitlines() if line.startswith("warn")]
    assert len(warned) == 3, proc.stdout
    assert proc.stdout.splitlines()[-1] == "3 warnings, no errors: see the warn lines above."
    assert "No problems found" not in proc.stdout


def test_an_unsynced_app_shows_its_url_once(page, stack):
    server, _, _ = stack
    url = f"http://127.0.0.1:{free_port()}/api/inngest"
    try:
        httpx.post(f"{server.url}/v1/apps", json={"url": url})
        listed = next(a for a in httpx.get(f"{server.url}/v1/apps").json()["data"] if a["url"] == url)
        assert listed["error"], listed
        page.goto("/apps")
        row = page.locator("tr", has_text=url)
        name_cell, url_cell = row.locator("td").nth(0).inner_text(), row.locator("td").nth(1).inner_text()
        assert url not in name_cell and name_cell == "not synced yet", name_cell
        assert url_cell == url
        assert "first-user" in page.locator("table.apps").inner_text()  # a synced app keeps its name
    finally:
        httpx.delete(f"{server.url}/v1/apps/{url}")


def test_the_example_app_runs_under_lockgate_start_in_cloud_mode(tmp_path, backend):
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}/api/inngest"
    server = LockgateProcess(args=["start", "--signing-key", SIGNING_KEY, "--event-key", EVENT_KEY, "-u", app_url,
                                   "--poll-interval", "0.5"],
                             data_dir=tmp_path / "data", log_path=tmp_path / "lockgate.log").start()
    app = AppProcess(module="examples.app", port=app_port, server_url=server.url, ledger=tmp_path / "ledger.jsonl",
                     extra_env={"INNGEST_DEV": "0", "INNGEST_BASE_URL": server.url,
                                "INNGEST_SIGNING_KEY": SIGNING_KEY, "INNGEST_EVENT_KEY": EVENT_KEY}).start()
    try:
        api = Api(server.url, SIGNING_KEY)
        wait_until(lambda: any(a["url"] == app_url and not a.get("error") for a in api.http.get("/v1/apps").json()["data"]),
                   what="the example app to sync signed")
        event_id = api.send({"name": "demo/hello", "data": {"name": "Ada"}}, key=EVENT_KEY).json()["ids"][0]
        run = api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])
        assert (run["status"], run["output"]) == ("Completed", "hello Ada")
    finally:
        app.stop()
        server.stop()
