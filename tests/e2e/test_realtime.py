"""Realtime end to end: the official SDKs publish and subscribe unchanged, browsers resume SSE
without gaps, every run has a progress stream, and replicas deliver each other's messages.

Publishers are real functions (Python SDK `inngest.experimental.realtime`, JS v4 `inngest`
streaming a body); subscribers are the JS SDK's own `subscribe` under node (WebSocket) and a
plain SSE client, over real HTTP.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx
import inngest
import orjson
import pytest
from inngest.experimental import realtime as py_realtime
from websockets.sync.client import connect as ws_connect

from lockgate.realtime import tokens
from tests.conftest import (
    JS_APP_DIR,
    Api,
    AppProcess,
    LockgateProcess,
    NodeAppProcess,
    ensure_node_sdk,
    free_port,
    wait_until,
)

RETENTION = 200  # messages per channel on the module's server, so a test can outrun it


class RealtimeJsApp(NodeAppProcess):
    def start(self) -> "RealtimeJsApp":
        env = {**os.environ, "NODE_PATH": str(ensure_node_sdk("v4")), "PORT": str(self.port),
               "INNGEST_DEV": self.server_url, "INNGEST_BASE_URL": self.server_url}
        self.proc = subprocess.Popen(["node", str(JS_APP_DIR / "realtime_app.cjs")], cwd=JS_APP_DIR, env=env)
        wait_until(lambda: httpx.get(self.url, timeout=1).status_code == 200, what="js realtime app")
        return self


@dataclass
class Stack:
    server: LockgateProcess
    api: Api
    py_client: inngest.Inngest
    apps: list = field(default_factory=list)


@pytest.fixture(scope="module")
def rt(tmp_path_factory, backend):  # backend: one stack per store backend
    ensure_node_sdk("v4")
    tmp = tmp_path_factory.mktemp("realtime")
    py_port, js_port = free_port(), free_port()
    py_url = f"http://127.0.0.1:{py_port}/api/inngest"
    js_url = f"http://127.0.0.1:{js_port}/api/inngest"
    server = LockgateProcess(args=["dev", "--no-discovery", "--poll-interval", "0.5", "--in-memory",
                                   "-u", py_url, "-u", js_url],
                             data_dir=None, log_path=tmp / "lockgate.log",
                             env={"LOCKGATE_REALTIME_RETENTION_MESSAGES": str(RETENTION)}).start()
    py_app = AppProcess(module="tests.e2e.apps.realtime_app", port=py_port, server_url=server.url,
                        ledger=tmp / "ledger.jsonl").start()
    js_app = RealtimeJsApp(module="v4", port=js_port, server_url=server.url, ledger=tmp / "js.jsonl").start()
    api = Api(server.url)
    wait_until(lambda: {"realtime-py-report-progress", "realtime-js-stream-tokens"}
               <= {f["slug"] for f in api.functions()}, what="both apps synced")
    client = inngest.Inngest(app_id="realtime-test", is_production=False, api_base_url=server.url,
                             event_api_base_url=server.url)
    yield Stack(server, api, client, [py_app, js_app])
    py_app.stop()
    js_app.stop()
    server.stop()


# -- clients ------------------------------------------------------------------------------


class JsSubscriber:
    """The JS SDK's `subscribe` in a node process; its messages are collected as they arrive."""

    def __init__(self, base: str, channel: str, topics: list[str], key: str, wanted: int) -> None:
        flags = ["--experimental-websocket"] if _node_major() < 22 else []
        env = {**os.environ, "NODE_PATH": str(ensure_node_sdk("v4")), "INNGEST_BASE_URL": base, "INNGEST_DEV": base}
        self.proc = subprocess.Popen(["node", *flags, str(JS_APP_DIR / "realtime_subscribe.cjs"), channel,
                                      ",".join(topics), key, str(wanted)],
                                     cwd=JS_APP_DIR, env=env, stdout=subprocess.PIPE, text=True)
        self.lines: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.append(json.loads(line))

    def wait_ready(self) -> None:
        wait_until(lambda: self.lines and ("ready" in self.lines[0] or "refused" in self.lines[0]
                                           or "error" in self.lines[0]), timeout=20, what="subscriber connected")
        assert "ready" in self.lines[0], self.lines[0]

    def messages(self, count: int, timeout: float = 30) -> list[dict]:
        wait_until(lambda: len(self.lines) - 1 >= count, timeout=timeout, what=f"{count} messages")
        return self.lines[1:count + 1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _node_major() -> int:
    out = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return int(out.lstrip("v").split(".")[0])


def sse_events(base: str, token: str, *, last_event_id: str | None = None, stop=lambda event: False,
               timeout: float = 30, raw: list | None = None) -> list[dict]:
    """Read SSE events ({id, event, data}) until `stop(event)` is true; `raw` gets every line."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events, current = [], {}
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", f"{base}/v1/realtime/sse", params={"token": token}, headers=headers,
                      timeout=httpx.Timeout(timeout, connect=5)) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if raw is not None:
                raw.append(line)
            if time.monotonic() > deadline:
                raise AssertionError(f"SSE stream did not finish in {timeout}s; got {len(events)} events")
            if line == "":
                if "data" in current:
                    current["data"] = json.loads(current["data"])
                    events.append(current)
                    if stop(current):
                        return events
                current = {}
            elif not line.startswith(":") and ":" in line:
                name, _, value = line.partition(":")
                current[name] = value[1:] if value.startswith(" ") else value
    return events


def mint(api: Api, channel: str, topics: list[str]) -> str:
    response = api.http.post("/v1/realtime/token", json=[{"channel": channel, "name": t, "kind": "run"}
                                                          for t in topics])
    assert response.status_code == 200, response.text
    return response.json()["jwt"]


def publish(api: Api, channel: str, topic: str, data, **params) -> httpx.Response:
    return api.http.post("/v1/realtime/publish", params={"channel": channel, "topic": topic, **params},
                         content=orjson.dumps(data))


def run_of(api: Api, event: dict) -> dict:
    event_id = api.send(event).json()["ids"][0]
    return api.wait_for_end(api.wait_for_runs(event_id)[0]["run_id"])


# -- the official SDKs ----------------------------------------------------------------------


def test_python_function_publishes_and_the_js_sdk_subscriber_receives(rt):
    channel = f"job:{uuid.uuid4().hex[:8]}"
    token = py_realtime.get_subscription_token_sync(rt.py_client, channel, ["status"])
    assert token["channel"] == channel and token["topics"] == ["status"]
    sub = JsSubscriber(rt.server.url, channel, ["status"], token["key"], 3)
    try:
        sub.wait_ready()
        run = run_of(rt.api, {"name": "rt/progress", "data": {"channel": channel}})
        assert run["status"] == "Completed"
        got = sub.messages(3)
    finally:
        sub.stop()
    assert [m["data"] for m in got] == [{"percent": 10}, {"percent": 50}, {"percent": 100}]
    assert {(m["channel"], m["topic"], m["kind"]) for m in got} == {(channel, "status", "data")}
    # The SDK's publish carries no run id; the messages still parse with a creation time.
    assert all(m["createdAt"] for m in got)
    # The topic the token does not cover was never sent: a replay of the channel holds 3 status messages.
    replay = sse_events(rt.server.url, token["key"], last_event_id="0", stop=lambda e: e["data"]["data"] == {"percent": 100})
    assert [e["data"]["topic"] for e in replay] == ["status"] * 3


def test_js_v4_function_streams_chunks(rt):
    """A streamed body reaches subscribers as datastream-start, chunks, datastream-end.

    The JS SDK's own subscriber (inngest 4.24.0) throws on `datastream-start` (its ReadableStream
    `start` callback reads the stream variable before it is assigned), so the stream is read here
    over the same WebSocket with a plain client and over SSE; the SDK subscriber (token from its
    getSubscriptionToken) follows the JSON status topic of the same run."""
    chat_id = uuid.uuid4().hex[:8]
    channel = f"chat:{chat_id}"
    sdk_sub = JsSubscriber(rt.server.url, channel, ["status"], "-", 1)
    ws_url = rt.server.url.replace("http://", "ws://") + "/v1/realtime/connect?token=" + mint(rt.api, channel, ["tokens"])
    with ws_connect(ws_url, open_timeout=10) as ws:
        try:
            sdk_sub.wait_ready()
            run = run_of(rt.api, {"name": "rt/stream", "data": {"id": chat_id}})
            assert run["status"] == "Completed", run
            [status] = sdk_sub.messages(1)
        finally:
            sdk_sub.stop()
        frames = []
        while not frames or frames[-1].get("kind") != "datastream-end":
            frame = json.loads(ws.recv(timeout=10))
            if frame.get("kind") != "ping":
                frames.append(frame)
    assert status["topic"] == "status" and status["data"] == {"done": True, "pieces": 5}
    assert status["runId"] == run["run_id"] and status["fnId"] == "realtime-js-stream-tokens"
    kinds = [f["kind"] for f in frames]
    assert kinds[0] == "datastream-start" and kinds[-1] == "datastream-end" and set(kinds[1:-1]) == {"chunk"}
    stream_id = frames[0]["data"]
    assert frames[-1]["data"] == stream_id and all(f["stream_id"] == stream_id for f in frames[1:-1])
    assert "".join(f["data"] for f in frames[1:-1]) == "Hello, streaming wörld!"
    assert {(f["channel"], f["topic"], f["run_id"]) for f in frames} == {(channel, "tokens", run["run_id"])}
    # The same stream over SSE, replayed after the fact: event names are the kinds.
    events = sse_events(rt.server.url, mint(rt.api, channel, ["tokens", "status"]), last_event_id="0",
                        stop=lambda e: e["event"] == "status")
    assert [e["event"] for e in events] == kinds + ["status"]


def test_a_token_for_one_channel_cannot_read_another(rt):
    mine, theirs = f"a:{uuid.uuid4().hex[:8]}", f"b:{uuid.uuid4().hex[:8]}"
    token = mint(rt.api, mine, ["t"])
    publish(rt.api, theirs, "t", {"secret": 1})
    publish(rt.api, mine, "other", {"not": "covered"})
    publish(rt.api, mine, "t", {"mine": 1})
    events = sse_events(rt.server.url, token, last_event_id="0", stop=lambda e: e["data"]["data"] == {"mine": 1})
    assert [e["data"]["data"] for e in events] == [{"mine": 1}]
    # Re-signing is impossible: a token whose channel was edited is refused outright.
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["channel"] = theirs
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    forged = f"{head}.{forged_payload}.{signature}"
    assert_refused_everywhere(rt.server.url, theirs, forged, "not signed by this server")


def test_an_expired_token_is_refused(rt):
    channel = f"exp:{uuid.uuid4().hex[:8]}"
    # Signed with the dev server's key (no signing key configured), but already past its expiry.
    expired = tokens.mint(tokens.token_secret(None), channel, ["t"], ttl_s=-5)
    assert_refused_everywhere(rt.server.url, channel, expired, "expired")


def assert_refused_everywhere(base: str, channel: str, token: str, reason: str) -> None:
    """SSE answers 401 naming the reason; the JS SDK's subscribe fails to connect."""
    response = httpx.get(f"{base}/v1/realtime/sse", params={"token": token})
    assert response.status_code == 401 and reason in response.json()["error"]
    sub = JsSubscriber(base, channel, ["t"], token, 1)
    try:
        wait_until(lambda: sub.lines, timeout=20, what="subscriber outcome")
        assert "refused" in sub.lines[0]
    finally:
        sub.stop()


# -- plain SSE for browsers ---------------------------------------------------------------------


def test_sse_resume_after_disconnects_has_no_gaps_and_no_duplicates(rt):
    channel = f"resume:{uuid.uuid4().hex[:8]}"
    token = mint(rt.api, channel, ["chunk", "end"])
    total = 150

    def produce() -> None:
        with httpx.Client(base_url=rt.server.url) as http:
            for i in range(total):
                http.post("/v1/realtime/publish", params={"channel": channel, "topic": "chunk"}, json={"i": i})
                time.sleep(0.005)
            http.post("/v1/realtime/publish", params={"channel": channel, "topic": "end"}, json={"done": True})

    producer = threading.Thread(target=produce)
    producer.start()
    received, last_id, raw = [], "0", []
    for round_ in range(6):  # drop the connection five times mid-stream, then read to the end
        stop_after = len(received) + 20 if round_ < 5 else None
        events = sse_events(rt.server.url, token, last_event_id=last_id, raw=raw,
                            stop=lambda e: e["event"] == "end" or (stop_after is not None and
                                                                     len(received) + 1 >= stop_after))
        for event in events:
            received.append(event)
            if stop_after is not None and len(received) >= stop_after:
                break
        last_id = received[-1]["id"]
        if received[-1]["event"] == "end":
            break
    producer.join()
    chunks = [e for e in received if e["event"] == "chunk"]
    assert [e["data"]["data"]["i"] for e in chunks] == list(range(total))
    assert received[-1]["event"] == "end"
    assert all(e["id"] == e["data"]["id"] for e in received)  # the id: line on every message
    assert "retry: 2000" in raw


def test_resume_older_than_retention_gets_an_explicit_lost_event(rt):
    channel = f"old:{uuid.uuid4().hex[:8]}"
    token = mint(rt.api, channel, ["t"])
    first = publish(rt.api, channel, "t", {"i": 0}).json()["ids"][0]
    for i in range(1, RETENTION + 50):
        publish(rt.api, channel, "t", {"i": i})
    events = sse_events(rt.server.url, token, last_event_id=first,
                        stop=lambda e: e["event"] == "t" and e["data"]["data"]["i"] == RETENTION + 49)
    assert events[0]["event"] == "lost" and "id" not in events[0]
    assert events[0]["data"]["data"]["after"] == first
    numbers = [e["data"]["data"]["i"] for e in events[1:]]
    assert numbers == list(range(numbers[0], RETENTION + 50)) and numbers[0] > 1
    assert events[0]["data"]["data"]["oldest"] == events[1]["id"]


# -- run progress ---------------------------------------------------------------------------------


def completed_run_progress(rt, event: dict) -> tuple[dict, list[dict], list[str]]:
    """Run the event's function to completion; its run, its progress events and their types."""
    run = run_of(rt.api, event)
    assert run["status"] == "Completed"
    token = mint(rt.api, f"lockgate:run:{run['run_id']}", ["progress"])
    events = sse_events(rt.server.url, token, last_event_id="0", stop=lambda e: e["event"] == "run.finished")
    return run, events, [e["event"] for e in events]


def test_every_run_has_a_progress_stream_with_no_app_code(rt):
    run, events, types = completed_run_progress(rt, {"name": "rt/steps"})
    assert types == ["run.queued", "run.started", "step.finished", "step.finished", "run.finished"], types
    assert all(e["data"]["data"]["type"] == e["event"] for e in events)
    assert {e["data"]["data"]["run_id"] for e in events} == {run["run_id"]}
    assert {e["data"]["data"]["function"] for e in events} == {"realtime-py-three-steps"}
    assert events[0]["data"]["data"]["app"] == "realtime-py"
    one, big = events[2]["data"]["data"], events[3]["data"]["data"]
    assert one["step"]["name"] == "one" and one["output"] == 1 and one["status"] == "Running"
    assert big["output"]["truncated"] is True and big["output"]["bytes"] > 40_000
    assert big["output"]["preview"].startswith('"xxx')
    finished = events[-1]["data"]["data"]
    assert finished["status"] == "Completed" and finished["output"] == {"a": 1, "b_len": 40_000}
    # The same message went to the all-runs channel.
    runs_token = mint(rt.api, "lockgate:runs", ["progress"])
    everything = sse_events(rt.server.url, runs_token, last_event_id="0",
                            stop=lambda e: e["event"] == "run.finished" and e["data"]["run_id"] == run["run_id"])
    assert [e["event"] for e in everything if e["data"]["run_id"] == run["run_id"]] == types


def test_a_sleep_woken_by_the_timer_path_reports_sleeping_and_resumed(rt):
    _, events, types = completed_run_progress(rt, {"name": "rt/nap"})
    assert types == ["run.queued", "run.started", "run.sleeping", "run.resumed", "run.finished"], types
    resumed = events[3]["data"]["data"]
    assert resumed["function"] == "realtime-py-nap" and resumed["status"] == "Running"
    assert resumed["step"]["op"] == "Sleep" and resumed["step"]["name"] == "nap"


# -- limits and bad input -------------------------------------------------------------------------


def test_limits_and_bad_input_get_clear_errors(rt):
    api = rt.api
    too_big = publish(api, "big", "t", {"blob": "x" * (512 * 1024)})
    assert too_big.status_code == 413 and "524288" in too_big.json()["error"]
    reserved = publish(api, "lockgate:runs", "progress", {"type": "run.finished"})
    assert reserved.status_code == 403
    assert api.http.post("/v1/realtime/publish", params={"channel": "c"}, json={}).status_code == 400
    two = api.http.post("/v1/realtime/token", json=[{"channel": "a", "name": "t"}, {"channel": "b", "name": "t"}])
    assert two.status_code == 400 and "one channel" in two.json()["error"]
    malformed = httpx.get(f"{rt.server.url}/v1/realtime/sse", params={"token": "not-a-jwt"})
    assert malformed.status_code == 401 and "malformed" in malformed.json()["error"]
    missing = httpx.get(f"{rt.server.url}/v1/realtime/sse")
    assert missing.status_code == 401 and "token" in missing.json()["error"]
    bad_resume = httpx.get(f"{rt.server.url}/v1/realtime/sse", params={"token": mint(api, "c", ["t"])},
                           headers={"Last-Event-ID": "yesterday"})
    assert bad_resume.status_code == 400 and "Last-Event-ID" in bad_resume.json()["error"]
    # An unknown channel is simply empty: the stream opens and waits.
    with httpx.stream("GET", f"{rt.server.url}/v1/realtime/sse", params={"token": mint(api, "nobody", ["t"])},
                      timeout=5) as response:
        assert response.status_code == 200
        assert next(response.iter_lines()) == "retry: 2000"


# -- replicas -------------------------------------------------------------------------------------


def _replica_delivery(a: LockgateProcess, b: LockgateProcess) -> None:
    """Publish through A, subscribe on B: same order, same ids; then resume on A from B's last id."""
    api_a, api_b = Api(a.url), Api(b.url)
    channel = f"x:{uuid.uuid4().hex[:8]}"
    token = mint(api_a, channel, ["t"])  # minted on A, honoured by B
    seen: list[dict] = []
    reader = threading.Thread(target=lambda: seen.extend(sse_events(
        b.url, token, stop=lambda e: e["data"]["data"]["i"] == 29)))
    reader.start()
    time.sleep(0.5)  # let B's stream open; everything is also replayable, this only keeps it live
    sent = [publish(api_a, channel, "t", {"i": i}).json()["ids"][0] for i in range(30)]
    reader.join(30)
    assert [e["data"]["data"]["i"] for e in seen] == list(range(30))
    assert [e["id"] for e in seen] == sent
    more = [publish(api_b, channel, "t", {"i": i}).json()["ids"][0] for i in range(30, 40)]
    resumed = sse_events(a.url, token, last_event_id=seen[14]["id"], stop=lambda e: e["data"]["data"]["i"] == 39)
    assert [e["data"]["data"]["i"] for e in resumed] == list(range(15, 40))
    assert [e["id"] for e in resumed[-10:]] == more


def test_replicas_on_postgresql_deliver_each_others_messages(rt, backend, tmp_path):
    if backend.name != "postgres":
        pytest.skip("several replicas share a PostgreSQL database; SQLite is one process")
    second = LockgateProcess(args=["dev", "--no-discovery", "--no-poll"], data_dir=None,
                             postgres_uri=rt.server.postgres_uri, log_path=tmp_path / "replica.log").start()
    try:
        _replica_delivery(rt.server, second)
    finally:
        second.stop()


@pytest.fixture
def private_redis(tmp_path, backend):
    if backend.name != "sqlite":
        pytest.skip("Redis carries realtime independently of the store: run once")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    wait_until(lambda: _redis_ping(port), what="redis-server")
    yield port, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _redis_ping(port: int) -> bool:
    import redis

    try:
        return redis.Redis(port=port, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        return False


def test_replicas_with_redis_deliver_each_others_messages_and_survive_a_redis_outage(private_redis, tmp_path):
    port, proc = private_redis
    uri = f"redis://127.0.0.1:{port}/0"
    a, b = (LockgateProcess(args=["dev", "--no-discovery", "--no-poll", "--in-memory", "--redis-uri", uri],
                            data_dir=None, log_path=tmp_path / f"{name}.log").start() for name in "ab")
    try:
        _replica_delivery(a, b)
        assert httpx.get(f"{a.url}/health").json()["realtime"] == {"backend": "redis", "problem": None}
        # Redis goes away: publishing says so, /health and doctor report it, the log names it.
        proc.kill()
        proc.wait()
        down = publish(Api(a.url), "x", "t", {"i": 1})
        assert down.status_code == 503 and "Redis" in down.json()["error"]
        wait_until(lambda: httpx.get(f"{a.url}/health").json()["realtime"]["problem"], what="problem reported")
        doctor = subprocess.run([sys.executable, "-m", "lockgate", "doctor", "--port", str(a.port), "--redis-uri", uri],
                                capture_output=True, text=True, timeout=60)
        assert doctor.returncode == 1 and "cannot reach Redis" in doctor.stdout
        assert "Redis" in (tmp_path / "a.log").read_text()
        # It comes back: the next publish works and both replicas deliver again.
        again = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                                  "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
        try:
            wait_until(lambda: _redis_ping(port), what="redis back")
            wait_until(lambda: publish(Api(a.url), "x", "t", {"i": 2}).status_code == 200, what="publish recovers")
            _replica_delivery(a, b)
            wait_until(lambda: httpx.get(f"{a.url}/health").json()["realtime"]["problem"] is None,
                       what="problem cleared")
        finally:
            again.kill()
            again.wait()
    finally:
        a.stop()
        b.stop()


# -- production ------------------------------------------------------------------------------------


def test_production_publishing_and_tokens_need_the_signing_key(tmp_path):
    key = "signkey-prod-" + "ab12" * 16
    server = LockgateProcess(args=["start", "--signing-key", key, "--event-key", "ek"],
                             data_dir=tmp_path / "data", log_path=tmp_path / "prod.log").start()
    try:
        channel = f"prod:{uuid.uuid4().hex[:8]}"
        anonymous = httpx.post(f"{server.url}/v1/realtime/publish", params={"channel": channel, "topic": "t"},
                               json={"x": 1})
        assert anonymous.status_code == 401
        assert httpx.post(f"{server.url}/v1/realtime/token", json=[{"channel": channel, "name": "t"}]).status_code == 401
        # The official SDK in production mode authenticates with the (hashed) signing key.
        client = inngest.Inngest(app_id="prod-publisher", is_production=True, signing_key=key,
                                 api_base_url=server.url, event_api_base_url=server.url)
        token = py_realtime.get_subscription_token_sync(client, channel, ["t"])["key"]
        py_realtime.publish_sync(client, channel, "t", {"x": 2})
        events = sse_events(server.url, token, last_event_id="0", stop=lambda e: True)
        assert events[0]["data"]["data"] == {"x": 2}
        # A token signed with the dev key is worthless here: the key derives from the signing key.
        dev_token = tokens.mint(tokens.token_secret(None), channel, ["t"], ttl_s=60)
        assert httpx.get(f"{server.url}/v1/realtime/sse", params={"token": dev_token}).status_code == 401
    finally:
        server.stop()
