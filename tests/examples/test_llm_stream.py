"""Example 3 end to end: a page in Chromium, the app, QStash delivery to its signed webhook, realtime SSE.

Per store backend: `lockgate dev` (the e2e fixtures' LockgateProcess), the example app under uvicorn,
and a TCP proxy between the browser and lockgate's SSE endpoint that a test can cut, as a flaky
network would.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time

import httpx
import jwt
import pytest
from qstash import QStash

from examples.llm_stream import fake_llm
from lockgate.protocol.qstash_signing import DEV_CURRENT_KEY, DEV_NEXT_KEY, DEV_TOKEN, body_hash
from tests.conftest import EVENT_KEY, PYTHON, ROOT, SIGNING_KEY, LockgateProcess, free_port, wait_until
from tests.e2e.browser import launch_browser, screenshot

WEBHOOK = "/webhooks/llm"


class CuttableProxy:
    """Forwards TCP connections to lockgate; cut() drops every open one, as a lost network does."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.cuts = 0
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cuttable-proxy", daemon=True)

    def start(self) -> "CuttableProxy":
        self._thread.start()
        server = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop)
        self._server = server.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def cut(self) -> int:
        async def close_all() -> int:
            writers = list(self._open)
            for writer in writers:
                writer.transport.abort()
            return len(writers)

        dropped = asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(10)
        self.cuts += dropped
        return dropped

    def stop(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._open.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._open.difference_update((writer, up_writer))


class ExampleApp:
    """examples.llm_stream.app under uvicorn, configured by environment as its README says."""

    def __init__(self, port: int, lockgate_url: str, log_path, **env: str) -> None:
        """env: the app's settings beyond these dev defaults (see the top of examples/llm_stream/app.py)."""
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "APP_URL": self.url, "INNGEST_DEV": lockgate_url,
               "QSTASH_URL": lockgate_url, "QSTASH_TOKEN": DEV_TOKEN,
               "QSTASH_CURRENT_SIGNING_KEY": DEV_CURRENT_KEY, "QSTASH_NEXT_SIGNING_KEY": DEV_NEXT_KEY,
               "LLM_RETRIES": "1", "LLM_RETRY_DELAY": "300", "FAKE_LLM_TOKEN_DELAY": "0.03", **env}
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen([PYTHON, "-m", "uvicorn", "examples.llm_stream.app:app", "--port", str(port),
                                      "--host", "127.0.0.1", "--log-level", "warning"],
                                     cwd=ROOT, env=env, stdout=self._log, stderr=self._log)
        wait_until(lambda: httpx.get(self.url + "/", timeout=1).status_code == 200, what="the example app")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, backend):  # backend: one stack per store backend
    tmp = tmp_path_factory.mktemp("llm-stream")
    app_port = free_port()
    server = LockgateProcess(args=["dev", "--no-discovery", "--in-memory",
                                   "--cors-origin", f"http://127.0.0.1:{app_port}"],
                             data_dir=None, log_path=tmp / "lockgate.log").start()
    proxy = CuttableProxy(server.port).start()
    app = ExampleApp(app_port, server.url, tmp / "app.log", REALTIME_URL=f"http://127.0.0.1:{proxy.port}")
    yield server, proxy, app, backend
    app.stop()
    proxy.stop()
    server.stop()


@pytest.fixture(scope="module")
def browser():
    with launch_browser() as chromium:
        yield chromium


@pytest.fixture
def page(browser, stack):
    page = browser.new_page(viewport={"width": 900, "height": 860})
    page.goto(stack[2].url + "/")
    yield page
    page.close()


def ask(page, prompt: str) -> None:
    page.fill("#prompt", prompt)
    page.click("#send")


def stats(page) -> dict:
    return page.evaluate("window.llmStream")


def wait_for_end(page) -> None:
    page.wait_for_function("window.llmStream.ended", timeout=60_000)


def assert_each_message_once(page, attempt: int = 0) -> dict:
    """No message id twice, and each token of the attempt delivered exactly once."""
    seen = stats(page)
    assert seen["duplicateIds"] == 0, seen
    assert len(seen["ids"]) == len(set(seen["ids"]))
    expected = len(fake_llm.tokens_of(fake_llm.answer(page.input_value("#prompt"))))
    delivered = {k: n for k, n in seen["deliveries"].items() if k.startswith(f"{attempt}:")}
    assert delivered == {f"{attempt}:{i}": 1 for i in range(expected)}, seen
    return seen


def test_a_prompt_streams_tokens_live_until_the_end(page, stack):
    prompt = "Why is the sky blue?"
    ask(page, prompt)
    # mid-stream: some tokens shown, the answer not finished
    page.wait_for_function("document.querySelector('#answer').textContent.split(' ').length > 12")
    assert page.text_content("#status").startswith("streaming")
    screenshot(page, "llm-stream-midway", stack[3].name)
    wait_for_end(page)
    assert page.text_content("#answer") == fake_llm.answer(prompt)
    assert page.text_content("#status").startswith("done · 88 tokens")
    assert page.is_hidden("#error")
    seen = assert_each_message_once(page)
    assert seen["states"] == ["queued", "started:0"]
    screenshot(page, "llm-stream-done", stack[3].name)


def test_a_failing_model_ends_with_the_error_after_the_retries(page, stack):
    prompt = "please fail on purpose"
    ask(page, prompt)
    page.wait_for_selector("#error", state="visible", timeout=60_000)
    error = page.text_content("#error")
    assert error == "Gave up after 2 attempts: the model's connection dropped after 25 tokens."
    assert page.is_hidden("#notice")
    assert page.text_content("#status") == "failed"
    assert stats(page)["states"] == ["queued", "started:0", "retrying:0", "started:1"]
    # QStash kept the undeliverable task in its dead-letter queue, with the webhook's last answer
    task_id = page.text_content("#meta").split()[1]
    dlq = QStash(DEV_TOKEN, base_url=stack[0].url).dlq.list().messages
    [dead] = [m for m in dlq if json.loads(m.body).get("task_id") == task_id]
    assert dead.response_status == 500 and dead.url == stack[2].url + WEBHOOK
    screenshot(page, "llm-stream-error", stack[3].name)


def test_a_webhook_retried_mid_stream_shows_each_token_once(page, stack):
    server = stack[0]
    prompt = "a flaky model, retried"
    ask(page, prompt)
    page.wait_for_function("window.llmStream.states.includes('started:1')")
    # what a first attempt that QStash timed out on, but that still runs, would publish now
    channel = "llm:" + page.text_content("#meta").split()[1]
    httpx.post(f"{server.url}/v1/realtime/publish", params={"channel": channel, "topic": "tokens"},
               json={"delivery": "timed-out", "attempt": 0, "index": 40, "text": " STALE"}).raise_for_status()
    wait_for_end(page)
    assert page.text_content("#answer") == fake_llm.answer(prompt)
    seen = assert_each_message_once(page, attempt=1)
    assert seen["states"] == ["queued", "started:0", "retrying:0", "started:1"]
    # the first attempt really streamed part of the answer before it broke off
    assert sorted(k for k in seen["deliveries"] if k.startswith("0:")) == sorted(f"0:{i}" for i in range(25))
    assert page.text_content("#notice") == ("Attempt 1 failed: the model's connection dropped after 25 tokens. "
                                            "QStash delivered the task again: this is attempt 2.")
    screenshot(page, "llm-stream-retried", stack[3].name)


def test_a_dropped_connection_resumes_without_gap_or_duplicate(page, stack):
    _, proxy, _, _ = stack
    prompt = "Tell me about resumable streams"
    ask(page, prompt)
    page.wait_for_function("window.llmStream.deliveries['0:5'] === 1")
    assert proxy.cut() >= 1  # the SSE connection, mid-answer
    assert not stats(page)["ended"]
    wait_for_end(page)
    assert page.text_content("#answer") == fake_llm.answer(prompt)
    seen = assert_each_message_once(page)
    # the browser reconnected by itself (EventSource sends Last-Event-ID), not through the page's fallback
    assert seen["opens"] >= 2 and seen["reconnects"] >= 1 and seen["fallbacks"] == 0, seen


def test_the_drop_button_reopens_from_the_last_event_id(page, stack):
    prompt = "Tell me about Last-Event-ID"
    ask(page, prompt)
    page.wait_for_function("window.llmStream.deliveries['0:5'] === 1")
    page.click("#drop")
    page.wait_for_function("window.llmStream.opens >= 2")
    assert page.text_content("#connection").startswith("connected · resumed after id ")
    wait_for_end(page)
    assert page.text_content("#answer") == fake_llm.answer(prompt)
    seen = assert_each_message_once(page)
    assert seen["drops"] == 1 and seen["midwayAtDrop"] is True


def test_an_expired_subscription_token_is_renewed_and_the_stream_resumes(browser, tmp_path, backend):
    # lockgate's subscription tokens expire (an hour by default; 3 s here). A page following a long
    # answer whose connection drops after that cannot reconnect with the token it holds (401): it
    # asks the app for a fresh one and resumes after the last id it saw.
    app_port = free_port()
    server = LockgateProcess(args=["dev", "--no-discovery", "--in-memory", "--cors-origin", f"http://127.0.0.1:{app_port}"],
                             data_dir=None, log_path=tmp_path / "lockgate.log",
                             env={"LOCKGATE_REALTIME_TOKEN_TTL": "3"}).start()
    proxy = CuttableProxy(server.port).start()
    app = ExampleApp(app_port, server.url, tmp_path / "app.log", REALTIME_URL=f"http://127.0.0.1:{proxy.port}",
                     FAKE_LLM_TOKEN_DELAY="0.15")
    page = browser.new_page(viewport={"width": 900, "height": 860})
    try:
        page.goto(app.url + "/")
        prompt = "Tell me about tokens that expire"
        ask(page, prompt)
        page.wait_for_function("window.llmStream.deliveries['0:3'] === 1")
        page.wait_for_function("tokenExpired(task.sseUrl)", timeout=30_000)  # the page's token is past its expiry
        expired_url = page.evaluate("task.sseUrl")
        assert httpx.get(expired_url.replace(f":{proxy.port}/", f":{server.port}/")).status_code == 401
        assert not stats(page)["ended"], "the answer must still be streaming when the connection drops"
        assert proxy.cut() >= 1  # the SSE connection, mid-answer; the browser's reconnect is refused (401)
        wait_for_end(page)
        assert page.text_content("#answer") == fake_llm.answer(prompt)
        seen = assert_each_message_once(page)
        assert seen["renewals"] == 1 and seen["fallbacks"] == 1, seen
        assert page.evaluate("task.sseUrl") != expired_url
        assert "the subscription token had expired; resuming after id" in page.text_content("#log")
        assert page.is_hidden("#error")
    finally:
        page.close()
        app.stop()
        proxy.stop()
        server.stop()


def test_renewing_a_token_for_an_unknown_task_is_refused(stack):
    with httpx.Client(base_url=stack[2].url, timeout=10) as http:
        unknown = http.post("/tasks/nope/token")
        assert unknown.status_code == 404 and "create it with POST /tasks first" in unknown.json()["detail"]
        created = http.post("/tasks", json={"prompt": "renew me"}).json()
        renewed = http.post(f"/tasks/{created['task_id']}/token").json()
        assert renewed["sse_url"].split("?token=")[0] == created["sse_url"].split("?token=")[0]


def signed(key: str, url: str, body: bytes) -> str:
    now = int(time.time())
    return jwt.encode({"iss": "Upstash", "sub": url, "exp": now + 300, "nbf": now, "iat": now, "jti": "test",
                       "body": body_hash(body)}, key, algorithm="HS256")


def test_a_bad_signature_is_refused_and_streams_nothing(stack):
    server, _, app, _ = stack
    with httpx.Client(base_url=app.url, timeout=10) as http:
        created = http.post("/tasks", json={"prompt": "forged"}).json()
        body = json.dumps({"task_id": created["task_id"], "prompt": "forged"}).encode()
        webhook = app.url + WEBHOOK
        forged = {
            "no signature": {},
            "wrong key": {"Upstash-Signature": signed("sig_notTheKeyThatLockgateSignsWith", webhook, body)},
            "another body": {"Upstash-Signature": signed(DEV_CURRENT_KEY, webhook, b'{"task_id": "x"}')},
            "another URL": {"Upstash-Signature": signed(DEV_CURRENT_KEY, app.url + "/elsewhere", body)},
        }
        sse = created["sse_url"].replace(created["sse_url"].split("/v1/")[0], server.url)
        with httpx.stream("GET", sse, timeout=10) as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")  # subscribed: anything published from now on arrives
            for case, headers in forged.items():
                refused = http.post(WEBHOOK, content=body, headers={"Content-Type": "application/json", **headers})
                assert refused.status_code == 401, case
                assert ("missing Upstash-Signature" if case == "no signature" else "invalid Upstash-Signature") \
                    in refused.json()["error"], case
            # A marker published after the refusals is the first message on the channel: none streamed.
            httpx.post(f"{server.url}/v1/realtime/publish", params={"channel": created["channel"], "topic": "status"},
                       json={"state": "marker"}).raise_for_status()
            first = next(line for line in lines if line.startswith("data:"))
            assert json.loads(first[5:])["data"] == {"state": "marker"}
    # a good signature is accepted, with either key (the next one is what QStash signs with after a rotation)
    genuine = httpx.post(app.url + WEBHOOK, content=body, timeout=30,
                         headers={"Upstash-Signature": signed(DEV_NEXT_KEY, webhook, body)})
    assert genuine.status_code == 200
    assert genuine.json() == {"tokens": len(fake_llm.tokens_of(fake_llm.answer("forged")))}


def sse_events(response: httpx.Response):
    """(event name, message) pairs from an SSE response."""
    name = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            yield name, json.loads(line[6:])


def test_the_same_app_runs_against_lockgate_start_with_keys(tmp_path, backend):
    """Production: lockgate start with a signing key and a QStash token; the app changes environment only."""
    qstash_token = "qstash-token-llm-example-" + "0f" * 8
    server = LockgateProcess(args=["start", "--signing-key", SIGNING_KEY, "--event-key", EVENT_KEY],
                             data_dir=tmp_path / "data", log_path=tmp_path / "lockgate.log",
                             env={"LOCKGATE_QSTASH_TOKEN": qstash_token}).start()
    app = None
    try:
        keys = QStash(qstash_token, base_url=server.url).signing_key.get()  # generated by lockgate start
        assert keys.current != DEV_CURRENT_KEY
        app = ExampleApp(free_port(), server.url, tmp_path / "app.log", INNGEST_DEV="0",
                         INNGEST_BASE_URL=server.url, INNGEST_SIGNING_KEY=SIGNING_KEY, QSTASH_TOKEN=qstash_token,
                         QSTASH_CURRENT_SIGNING_KEY=keys.current, QSTASH_NEXT_SIGNING_KEY=keys.next)
        prompt = "Does it work in production?"
        with httpx.Client(base_url=app.url, timeout=30) as http:
            created = http.post("/tasks", json={"prompt": prompt}).json()
            assert created["sse_url"].startswith(server.url + "/v1/realtime/sse?token=")
            with httpx.stream("GET", created["sse_url"], timeout=30) as stream:
                assert stream.status_code == 200
                assert http.post(f"/tasks/{created['task_id']}/start").status_code == 202
                text = []
                for name, message in sse_events(stream):
                    if name == "tokens":
                        text.append(message["data"]["text"])
                    if name in ("end", "error"):
                        break
        assert (name, "".join(text)) == ("end", fake_llm.answer(prompt))
        # the dev server's QStash keys do not open this webhook
        body = b'{"task_id": "x", "prompt": "y"}'
        forged = httpx.post(app.url + WEBHOOK, content=body,
                            headers={"Upstash-Signature": signed(DEV_CURRENT_KEY, app.url + WEBHOOK, body)})
        assert forged.status_code == 401
    finally:
        if app is not None:
            app.stop()
        server.stop()


def test_bad_requests_get_clear_errors(stack):
    app = stack[2]
    with httpx.Client(base_url=app.url, timeout=10) as http:
        assert http.post("/tasks", json={"prompt": ""}).status_code == 422
        unknown = http.post("/tasks/nope/start")
        assert unknown.status_code == 404 and "create it with POST /tasks first" in unknown.json()["detail"]
        created = http.post("/tasks", json={"prompt": "twice"}).json()
        first, again = (http.post(f"/tasks/{created['task_id']}/start").json() for _ in range(2))
        assert first == again  # a second start (a double click) hands nothing new to QStash
        body = b'{"prompt": "no task id"}'
        not_a_task = http.post(WEBHOOK, content=body,
                               headers={"Upstash-Signature": signed(DEV_CURRENT_KEY, app.url + WEBHOOK, body)})
        assert not_a_task.status_code == 400 and "task_id" in not_a_task.json()["error"]
