"""The dashboard in a real browser (Debian's chromium through Playwright) against a real `lockgate dev`
and a real SDK app, plus the REST endpoints behind its buttons. One server and one browser per backend."""

from __future__ import annotations

import re

import httpx

from tests.conftest import stack_fixture, wait_until
from tests.e2e.browser import screenshot

APP = "tests.e2e.apps.dashboard_app"
QSTASH_TOKEN = "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0="


stack = stack_fixture(APP)


def send(api, name: str, data: dict) -> str:
    response = api.send({"name": name, "data": data})
    assert response.status_code == 200, response.text
    return response.json()["ids"][0]


def run_of(api, event_id: str) -> dict:
    return api.wait_for_runs(event_id)[0]


def mark_page(page) -> None:
    """A marker that survives only as long as the document does: it proves nothing reloaded."""
    page.evaluate("window.__stillTheSamePage = true")


def assert_not_reloaded(page) -> None:
    assert page.evaluate("window.__stillTheSamePage === true"), "the page was reloaded"


def test_send_an_event_from_the_ui_and_watch_its_run_finish_live(page, stack):
    _, _, api = stack
    page.goto("/events")
    page.fill("#event-json", '{"name": "dash/greet", "data": {"name": "zoe", "delay": 1.5}}')
    page.click("text=Send event")
    page.wait_for_url(re.compile(r"/events/[0-9A-Z]{26}"))
    event_id = page.url.rsplit("/", 1)[1].split("?")[0]
    mark_page(page)
    # The run shows up and then completes on this page, pushed by the server: no reload.
    page.locator("#event-runs .badge", has_text="Completed").wait_for()
    assert_not_reloaded(page)
    run = run_of(api, event_id)
    assert run["status"] == "Completed" and run["output"] == {"message": "hello zoe"}
    assert page.locator(f"#event-runs [data-run-id='{run['run_id']}']").count() == 1
    screenshot(page, "event", page.backend_name)


def test_runs_list_updates_live_and_filters_by_an_event_expression(page, stack):
    _, _, api = stack
    page.goto("/runs")
    mark_page(page)
    mine = run_of(api, send(api, "dash/greet", {"name": "live-list", "user": "u-live", "delay": 1}))
    row = page.locator(f"tr[data-run-id='{mine['run_id']}']")
    row.locator(".badge", has_text="Completed").wait_for()
    assert_not_reloaded(page)
    # The expression filter really applies: only the run whose event matches is listed.
    other = run_of(api, send(api, "dash/greet", {"name": "other", "user": "u-other"}))
    api.wait_for_end(other["run_id"])
    page.goto('/runs?if=event.data.user == "u-live"')
    assert page.locator("tbody tr").count() == 1
    assert page.locator(f"tr[data-run-id='{mine['run_id']}']").count() == 1
    assert page.locator("#run-counts strong").inner_text() == "1"
    page.goto("/runs?if=event.data.user ==")
    assert "does not compile" in page.locator(".error").inner_text()
    page.goto("/runs")
    screenshot(page, "runs", page.backend_name)


def test_a_runs_steps_show_output_and_an_error_with_its_retries(page, stack):
    _, app, api = stack
    greet = run_of(api, send(api, "dash/greet", {"name": "ada"}))
    api.wait_for_end(greet["run_id"])
    page.goto(f"/runs/{greet['run_id']}")
    step = page.locator("li.step[data-step='look-up']")
    assert "completed" in step.inner_text()
    assert '"greeting": "hello"' in step.locator("pre").inner_text()

    paused = run_of(api, send(api, "dash/greet", {"name": "bo", "pause": True}))
    api.wait_for_end(paused["run_id"])
    page.goto(f"/runs/{paused['run_id']}")
    nap = page.locator("li.step[data-step='pause']")
    assert "completed" in nap.inner_text() and "Sleep" in nap.inner_text()
    assert nap.locator("pre").count() == 0, "a finished sleep has no output to show"

    flaky = run_of(api, send(api, "dash/flaky", {"user_id": "u-steps"}))
    assert api.wait_for_end(flaky["run_id"])["status"] == "Failed"
    page.goto(f"/runs/{flaky['run_id']}")
    assert page.locator("#explanation").inner_text() == (
        "Why it ended: step 'charge' failed after 2 attempts: ValueError: card declined for u-steps")
    step = page.locator("li.step[data-step='charge']")
    text = step.inner_text()
    assert "failed" in text and "2 attempts" in text  # retries=1: two attempts in all
    assert "ValueError: card declined for u-steps" in text
    step.locator("summary", has_text="Stack").click()
    assert "Traceback" in step.locator(".errorbox pre").inner_text() or "charge" in step.locator(".errorbox pre").inner_text()
    assert len(app.effects("charge-attempt", run_id=flaky["run_id"])) == 2
    screenshot(page, "run", page.backend_name)


def test_cancel_a_sleeping_run(page, stack):
    _, _, api = stack
    run = run_of(api, send(api, "dash/nap", {"user_id": "u-cancel"}))
    page.goto(f"/runs/{run['run_id']}")
    page.locator("text=Sleeping in step").wait_for()
    assert "long-nap" in page.locator("#explanation").inner_text()
    page.click("#cancel-run")
    page.locator("h1 .badge", has_text="Cancelled").wait_for()
    ended = api.run(run["run_id"])
    assert ended["status"] == "Cancelled" and "dashboard" in ended["reason"]


def test_bulk_cancel_what_a_filter_selects_after_confirming_the_count(page, stack):
    _, _, api = stack
    chosen = [run_of(api, send(api, "dash/nap", {"user_id": "bulk-a", "n": n}))["run_id"] for n in range(3)]
    spared = run_of(api, send(api, "dash/nap", {"user_id": "bulk-b"}))["run_id"]
    wait_until(lambda: all("sleeping" in (api.run(r)["reason"] or "") for r in chosen + [spared]),
               what="the naps to sleep")
    page.goto('/runs?if=event.data.user_id == "bulk-a"')
    page.click("text=Cancel matching…")
    assert page.locator("#confirm-count").inner_text() == "3"
    screenshot(page, "runs-bulk-confirm", page.backend_name)
    page.click("text=Yes, cancel 3")
    assert "cancelled 3 run(s)" in page.locator(".notice").inner_text()
    assert all(api.run(r)["status"] == "Cancelled" for r in chosen)
    assert api.run(spared)["status"] == "Running"
    screenshot(page, "runs-filtered", page.backend_name)


def test_rerun_a_failed_run_from_the_start(page, stack):
    _, app, api = stack
    event_id = send(api, "dash/flaky", {"user_id": "u-rerun"})
    first = run_of(api, event_id)
    api.wait_for_end(first["run_id"])
    page.goto(f"/runs/{first['run_id']}")
    page.click("#rerun-run")
    page.wait_for_url(re.compile(r"/runs/(?!" + first["run_id"] + r")[0-9A-Z]{26}"))
    second_id = page.url.rsplit("/", 1)[1].split("?")[0]
    page.locator("h1 .badge", has_text="Failed").wait_for()
    second = api.run(second_id)
    assert second["event_id"] == event_id and second["function_slug"] == "dash-flaky"
    assert len(app.effects("charge-attempt", run_id=second_id)) == 2  # it ran again, from the start


def test_invalid_json_payload_shows_the_error_inline(page, stack):
    _, _, api = stack
    newest = lambda: [e["internal_id"] for e in api.http.get("/v1/events", params={"name": "dash/greet", "limit": 1}).json()["data"]]  # noqa: E731
    before = newest()
    page.goto("/events")
    page.fill("#event-json", '{"name": "dash/greet", "data": {oops}')
    page.click("text=Send event")
    error = page.locator("#event-error")
    error.wait_for()
    assert "not valid JSON" in error.inner_text()
    assert page.input_value("#event-json") == '{"name": "dash/greet", "data": {oops}'  # nothing typed is lost
    page.fill("#event-json", '{"name": "", "data": {}}')
    page.click("text=Send event")
    page.locator("#event-error", has_text="'name' is required").wait_for()
    assert newest() == before  # nothing was stored
    assert page.locator("header nav a[aria-current]").inner_text() == "Events"  # still the current page
    page.goto("/events")  # the docs show the page as a newcomer first sees it
    page.locator("#event-json").wait_for()
    screenshot(page, "events", page.backend_name)


def test_retry_a_message_from_the_dlq(page, stack):
    server, app, api = stack
    qstash = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {QSTASH_TOKEN}"}, timeout=10)
    target = f"http://127.0.0.1:{app.port}/deliveries/fail"
    published = qstash.post(f"/v2/publish/{target}", content=b"dlq-body", headers={"Upstash-Retries": "0"})
    assert published.status_code in (200, 201), published.text
    message_id = published.json()["messageId"]
    entry = wait_until(lambda: [m for m in qstash.get("/v2/dlq").json()["messages"] if m["messageId"] == message_id],
                       what="the failed message in the DLQ")[0]
    page.goto("/qstash?tab=dlq")
    row = page.locator(f"tr[data-dlq-id='{entry['dlqId']}']")
    screenshot(page, "qstash-dlq", page.backend_name)
    row.locator("button.retry-one").click()
    page.locator(".notice", has_text="retried 1 message(s)").wait_for()
    # Retried as a new message: delivered again (the receiver still fails, so it lands in the DLQ anew).
    wait_until(lambda: len(app.effects("delivery", body="dlq-body")) == 2, what="the second delivery")
    again = wait_until(lambda: [m for m in qstash.get("/v2/dlq").json()["messages"]
                                if m["messageId"] != message_id and m["url"] == target], what="the retry's DLQ entry")
    assert all(m["dlqId"] != entry["dlqId"] for m in qstash.get("/v2/dlq").json()["messages"])
    assert again[0]["responseStatus"] == 500


def test_every_page_renders_with_javascript_off(browser, stack):
    context = browser.new_context(base_url=stack[0].url, java_script_enabled=False)
    page = context.new_page()
    try:
        for path, heading in [("/runs", "Runs"), ("/events", "Events"), ("/functions", "Functions"),
                              ("/apps", "Apps"), ("/qstash?tab=schedules", "QStash"), ("/status", "Health")]:
            response = page.goto(path)
            assert response.status == 200, path
            assert page.locator("h1").first.inner_text().startswith(heading)
        # A plain form post works too: the invalid payload comes back with its error, status 400.
        page.goto("/events")
        page.fill("#event-json", "[")
        with page.expect_navigation():
            page.click("text=Send event")
        assert "not valid JSON" in page.locator("#event-error").inner_text()
    finally:
        context.close()


def test_functions_apps_and_health_pages_show_the_stores_figures(page, stack):
    _, _, api = stack
    api.wait_for_end(run_of(api, send(api, "dash/greet", {"name": "figures"}))["run_id"])
    api.wait_for_end(run_of(api, send(api, "dash/flaky", {"user_id": "figures"}))["run_id"])
    stats = api.http.get("/v1/stats").json()["data"]
    page.goto("/functions")
    assert page.locator("text=dash-greet").count() >= 1 and "dash/greet" in page.inner_text("table")
    yearly = page.locator("tr", has=page.locator("a", has_text="yearly")).inner_text()
    assert "cron 0 0 1 1 *" in yearly and re.search(r"next: \d{4}-01-01 00:00:00\.000 UTC", yearly)
    screenshot(page, "functions", page.backend_name)
    page.goto("/functions/dash-flaky")
    assert "Retries" in page.inner_text("dl.facts") and page.locator("table.runs tbody tr").count() >= 1
    screenshot(page, "function", page.backend_name)
    page.goto("/apps")
    assert "py:v0.5.19" in page.inner_text("table.apps") and "synced" in page.inner_text("table.apps")
    screenshot(page, "apps", page.backend_name)
    page.goto("/status")
    assert page.locator(".chart rect").count() > 0
    greet = [f for f in stats["functions"] if f["slug"] == "dash-greet"]
    assert greet, stats["functions"]
    greet = greet[0]
    row = page.locator("tr", has=page.locator("a", has_text="dash-greet"))
    assert row.locator("td").nth(1).inner_text() == str(greet["runs"].get("Completed", 0))
    screenshot(page, "health", page.backend_name)
    metrics = api.http.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert re.search(r'lockgate_function_runs\{function="dash-greet",status="Completed"\} \d', metrics.text)
    assert "lockgate_queue_oldest_due_lateness_seconds" in metrics.text


# -- the REST twins of the dashboard's buttons ------------------------------------------


def test_rest_run_filters_keyset_pages_and_counts(stack):
    _, _, api = stack
    ids = [run_of(api, send(api, "dash/greet", {"name": f"page-{n}", "batch": "keyset"}))["run_id"] for n in range(7)]
    for run_id in ids:
        api.wait_for_end(run_id)
    seen, cursor = [], None
    while True:
        params = {"if": 'event.data.batch == "keyset"', "limit": 3, **({"cursor": cursor} if cursor else {})}
        body = api.http.get("/v1/runs", params=params).json()
        seen += [r["run_id"] for r in body["data"]]
        cursor = body["metadata"]["cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))  # newest first, each exactly once
    counts = api.http.get("/v1/runs/count", params={"if": 'event.data.batch == "keyset"'}).json()["data"]
    assert counts == {"total": 7, "by_status": {"Completed": 7}, "complete": True}
    by_slug = api.http.get("/v1/runs", params={"function": "dash-greet", "status": "completed", "limit": 100}).json()
    assert set(ids) <= {r["run_id"] for r in by_slug["data"]}
    for bad, fragment in [({"status": "Sleeping"}, "unknown run status"), ({"if": "event.data.x =="}, "does not compile"),
                          ({"from": "yesterday"}, "ISO 8601"), ({"cursor": "nope"}, "invalid cursor")]:
        response = api.http.get("/v1/runs", params=bad)
        assert response.status_code == 400 and fragment in response.json()["error"], (bad, response.text)


def test_rest_rerun_replay_bulk_and_apps(stack):
    server, app, api = stack
    event_id = send(api, "dash/greet", {"name": "rest"})
    first = run_of(api, event_id)
    api.wait_for_end(first["run_id"])
    rerun = api.http.post(f"/v1/runs/{first['run_id']}/rerun").json()["data"]
    assert rerun["run_id"] != first["run_id"] and api.wait_for_end(rerun["run_id"])["status"] == "Completed"
    assert api.http.post("/v1/runs/nope/rerun").status_code == 404

    replayed = api.http.post(f"/v1/events/{event_id}/replay").json()["data"]["id"]
    assert replayed != event_id and api.wait_for_end(run_of(api, replayed)["run_id"])["output"] == {"message": "hello rest"}

    naps = [run_of(api, send(api, "dash/nap", {"user_id": "rest-bulk"}))["run_id"] for _ in range(2)]
    refused = api.http.post("/v1/runs/cancel", json={})
    assert refused.status_code == 400 and "filter" in refused.json()["error"]
    assert api.http.post("/v1/runs/cancel", content=b"{oops").status_code == 400
    done = api.http.post("/v1/runs/cancel", json={"if": 'event.data.user_id == "rest-bulk"'}).json()["data"]
    assert done == {"matched": 2, "cancelled": 2}
    assert all(api.run(r)["status"] == "Cancelled" for r in naps)
    reran = api.http.post("/v1/runs/rerun", json={"if": 'event.data.user_id == "rest-bulk"', "status": "Cancelled"})
    assert reran.json()["data"]["matched"] == 2 and len(reran.json()["data"]["started"]) == 2

    assert api.http.post("/v1/apps", json={"url": "ftp://x"}).status_code == 400
    unreachable = api.http.post("/v1/apps", json={"url": "http://127.0.0.1:9/api/inngest"})
    assert unreachable.status_code == 502 and "could not reach" in unreachable.json()["error"]
    assert api.http.delete("/v1/apps/no-such-app").status_code == 404
    assert api.http.post("/v1/apps/dash/resync").json()["data"]["synced"] is True


def test_invoke_a_function_with_a_payload_and_see_why_an_event_started_nothing(page, stack):
    _, _, api = stack
    page.goto("/functions/dash-greet")
    page.fill("#invoke-json", "{not json")
    page.click("#invoke button")
    assert "not valid JSON" in page.locator("#invoke-error").inner_text()
    page.fill("#invoke-json", '{"data": {"name": "invoked"}}')
    page.click("#invoke button")
    page.wait_for_url(re.compile(r"/runs/[0-9A-Z]{26}"))
    page.locator("h1 .badge", has_text="Completed").wait_for()
    run = api.run(page.url.rsplit("/", 1)[1].split("?")[0])
    assert run["output"] == {"message": "hello invoked"} and run["function_slug"] == "dash-greet"

    typo = send(api, "dash/greeet", {"name": "typo"})
    page.goto(f"/events/{typo}")
    why = page.locator("#event-runs .explain").inner_text()
    assert "dash/greeet" in why and "dash/greet" in why.replace("dash/greeet", "")


def test_events_page_hides_internal_events_by_default_and_can_show_them(page, stack):
    _, _, api = stack
    event_id = send(api, "dash/greet", {"name": "internal-filter"})
    run_id = run_of(api, event_id)["run_id"]
    api.wait_for_end(run_id)
    wait_until(lambda: api.http.get("/v1/events", params={"name": "inngest/function.finished"}).json()["data"],
               what="the run's inngest/function.finished event")
    page.goto("/events")
    names = page.locator("table.events tbody tr td:first-child")
    names.first.wait_for()
    assert page.is_checked("#hide-internal")
    assert not any(n.startswith("inngest/") for n in names.all_inner_texts()), names.all_inner_texts()
    assert "dash/greet" in names.all_inner_texts()
    assert "internal" in page.locator(".hidden-internal").inner_text()
    page.uncheck("#hide-internal")
    page.click("form.filters button")
    page.wait_for_url(re.compile(r"internal=show"))
    assert "internal=hide" not in page.url
    assert "inngest/function.finished" in page.locator("table.events tbody tr td:first-child").all_inner_texts()
    page.reload()  # kept in the URL
    assert not page.is_checked("#hide-internal")
    assert "inngest/function.finished" in page.locator("table.events tbody tr td:first-child").all_inner_texts()
    page.check("#hide-internal")
    page.click("form.filters button")
    page.wait_for_url(re.compile(r"internal=hide"))
    assert not any(n.startswith("inngest/") for n in page.locator("table.events tbody tr td:first-child").all_inner_texts())
    # Asking for an internal event by name shows it whatever the box says.
    page.goto("/events?name=inngest/function.finished")
    assert page.locator("table.events tbody tr").count() >= 1
