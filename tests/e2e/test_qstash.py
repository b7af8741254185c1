"""The QStash v2 surface, driven by the official `qstash` 3.4.0 SDK against real servers.

A FastAPI receiver (tests/e2e/apps/qstash_receiver.py) verifies every delivery with
`qstash.Receiver` and appends it to a ledger; tests read the ledger.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from qstash import QStash
from qstash.errors import QStashError
from qstash.log import LogState

from lockgate.protocol.qstash_signing import DEV_CURRENT_KEY, DEV_NEXT_KEY, DEV_TOKEN
from tests.conftest import PYTHON, ROOT, LockgateProcess, free_port, wait_until

QSTASH_ENV = {"LOCKGATE_QSTASH_BACKOFF_SCALE": "0.001"}  # the default curve, in milliseconds instead of seconds


class Receiver:
    def __init__(self, ledger: Path) -> None:
        self.ledger = ledger
        self.port = free_port()
        env = {**os.environ, "QSTASH_CURRENT_SIGNING_KEY": DEV_CURRENT_KEY, "QSTASH_NEXT_SIGNING_KEY": DEV_NEXT_KEY,
               "LEDGER_PATH": str(ledger), "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "uvicorn", "tests.e2e.apps.qstash_receiver:app", "--port", str(self.port), "--host",
             "127.0.0.1", "--log-level", "warning"], cwd=ROOT, env=env)
        wait_until(lambda: httpx.get(self.url("ok-probe"), timeout=1).status_code == 200, what="receiver")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/r/{name}"

    def hits(self, name: str) -> list[dict]:
        if not self.ledger.exists():
            return []
        entries = [json.loads(line) for line in self.ledger.read_text().splitlines() if line.strip()]
        return [e for e in entries if e["name"] == name]

    def wait_hits(self, name: str, n: int, timeout: float = 20.0) -> list[dict]:
        return wait_until(lambda: len(h := self.hits(name)) >= n and h, timeout=timeout, what=f"{n} hit(s) on {name}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, backend):  # backend: one stack per store backend
    tmp = tmp_path_factory.mktemp("qstash")
    server = LockgateProcess(args=["dev", "--no-discovery", "--in-memory"], data_dir=None,
                             log_path=tmp / "lockgate.log", env=QSTASH_ENV).start()
    receiver = Receiver(tmp / "ledger.jsonl")
    yield server, receiver
    receiver.stop()
    server.stop()


@pytest.fixture
def client(stack):
    return QStash(DEV_TOKEN, base_url=stack[0].url)


@pytest.fixture
def recv(stack):
    return stack[1]


def body_of(hit: dict) -> bytes:
    return base64.b64decode(hit["body"])


def test_token_is_required(stack, client):
    with pytest.raises(QStashError, match="401"):
        QStash("wrong", base_url=stack[0].url).queue.list()
    r = httpx.get(stack[0].url + "/v2/queues")
    assert r.status_code == 401 and "token" in r.json()["error"]
    client.queue.list()


def test_dev_server_keys_answer_the_js_dev_mode_probe(stack):
    r = httpx.get(stack[0].url + "/v2/keys", headers={"Authorization": f"Bearer {DEV_TOKEN}"})
    assert r.json() == {"current": DEV_CURRENT_KEY, "next": DEV_NEXT_KEY}


def test_publish_delivers_signed_request_with_forwarded_headers(client, recv):
    name = unique("ok")
    url = recv.url(name) + "?x=%2F&y=1"
    res = client.message.publish_json(url=url, body={"a": 1}, headers={"X-T": "1", "Upstash-Forward-X-B": "2"})
    (hit,) = recv.wait_hits(name, 1)
    assert hit["verified"], hit["error"]
    assert hit["url"] == url  # path, escapes and query arrive unchanged; the JWT sub matched it
    assert hit["method"] == "POST" and body_of(hit) == b'{"a": 1}'
    h = hit["headers"]
    assert h["content-type"] == "application/json" and h["x-t"] == "1" and h["x-b"] == "2"
    assert h["upstash-message-id"] == res.message_id and h["upstash-retried"] == "0"
    assert h["user-agent"] == "Upstash-QStash" and "authorization" not in h


def test_query_token_get_with_body_and_no_content_type(stack, recv):
    name = unique("ok")
    r = httpx.post(f"{stack[0].url}/v2/publish/{recv.url(name)}?qstash_token={DEV_TOKEN}", content=b"test-body",
                   headers={"Upstash-Method": "GET", "Content-Type": ""})
    assert r.status_code == 200, r.text
    (hit,) = recv.wait_hits(name, 1)
    assert hit["method"] == "GET" and body_of(hit) == b"test-body"
    assert "qstash_token" not in hit["url"] and not hit["headers"].get("content-type")


def test_binary_body_is_delivered_byte_exact(client, recv):
    name = unique("ok")
    payload = bytes(range(256))
    res = client.message.publish(url=recv.url(name), body=payload, content_type="application/octet-stream",
                                 delay="1s")
    assert client.message.get(res.message_id).body_base64 == base64.b64encode(payload).decode()
    (hit,) = recv.wait_hits(name, 1)
    assert body_of(hit) == payload


def test_flaky_destination_is_retried_until_delivered(client, recv):
    name = unique("flaky")
    res = client.message.publish(url=recv.url(name), body="b", retries=3, retry_delay="100")
    hits = recv.wait_hits(name, 3)
    assert [h["headers"]["upstash-retried"] for h in hits] == ["0", "1", "2"]
    wait_until(lambda: client.log.list(filter={"message_id": res.message_id, "state": LogState.DELIVERED}).logs)
    states = [e.state.value for e in client.log.list(filter={"message_id": res.message_id}).logs]
    assert states.count("ERROR") == 2 and states.count("RETRY") == 2 and states.count("DELIVERED") == 1
    assert all(e.retry_delay_expression == "100" for e in client.log.list(filter={"message_id": res.message_id}).logs)


def test_4xx_is_retried_then_dead_lettered(client, recv, stack):
    name = unique("nf")
    res = client.message.publish(url=recv.url(name), body="b", retries=2, retry_delay="100")
    recv.wait_hits(name, 3)
    entry = wait_until(lambda: client.dlq.list(filter={"message_id": res.message_id}).messages)[0]
    assert entry.response_status == 404 and entry.response_body == "404 Not Found"
    assert entry.retry_delay_expression == "100" and entry.dlq_id
    assert client.dlq.get(entry.dlq_id).message_id == res.message_id
    client.dlq.delete(entry.dlq_id)
    again = httpx.delete(f"{stack[0].url}/v2/dlq/{entry.dlq_id}", headers={"Authorization": f"Bearer {DEV_TOKEN}"})
    assert again.status_code == 404
    time.sleep(0.5)
    assert len(recv.hits(name)) == 3


def test_489_non_retryable_stops_at_once(client, recv):
    name = unique("nr")
    res = client.message.publish(url=recv.url(name), body="b", retries=5, retry_delay="100")
    entry = wait_until(lambda: client.dlq.list(filter={"message_id": res.message_id}).messages)[0]
    assert entry.response_status == 489
    time.sleep(0.5)
    assert len(recv.hits(name)) == 1


def test_retry_after_overrides_the_backoff(client, recv):
    name = unique("ra")
    client.message.publish(url=recv.url(name), body="b", retries=1)
    first, second = recv.wait_hits(name, 2)
    gap = second["started"] - first["started"]
    assert 0.9 <= gap < 10, gap


def test_dlq_retry_redelivers_and_bulk_delete(client, recv, stack):
    auth = {"Authorization": f"Bearer {DEV_TOKEN}"}
    name = unique("fail")
    ids = [client.message.publish(url=recv.url(name), body=str(i), retries=0).message_id for i in range(3)]
    entries = wait_until(lambda: len(e := [m for m in client.dlq.list().messages if m.message_id in ids]) == 3 and e)
    retried = httpx.post(f"{stack[0].url}/v2/dlq/retry?dlqIds={entries[0].dlq_id}", headers=auth).json()
    assert len(retried["responses"]) == 1 and retried["responses"][0]["messageId"] not in ids
    recv.wait_hits(name, 4)
    assert client.dlq.delete_many([e.dlq_id for e in entries[1:]]) == 2
    wait_until(lambda: len([m for m in client.dlq.list().messages if m.url == recv.url(name)]) == 1)
    page = client.dlq.list(count=1)
    assert len(page.messages) == 1 and (page.cursor is not None) == (len(client.dlq.list().messages) > 1)


def test_callbacks_after_each_attempt_and_failure_callback(client, recv):
    name, cb, fail, fcb = unique("flaky"), unique("ok"), unique("fail"), unique("ok")
    res = client.message.publish(url=recv.url(name), body="src", retries=3, retry_delay="100", callback=recv.url(cb),
                                 callback_headers={"Upstash-Callback-Forward-X-C": "1"})
    hits = recv.wait_hits(cb, 3)
    bodies = sorted((json.loads(body_of(h)) for h in hits), key=lambda b: b.get("retried", 0))
    assert [b["status"] for b in bodies] == [500, 500, 200]
    assert ["retried" in b for b in bodies] == [False, True, True]
    assert all(b["sourceMessageId"] == res.message_id and b["maxRetries"] == 3 for b in bodies)
    assert base64.b64decode(bodies[0]["sourceBody"]) == b"src"
    assert all(h["verified"] and h["headers"]["x-c"] == "1" for h in hits)

    failed = client.message.publish(url=recv.url(fail), body="x", retries=1, retry_delay="100",
                                    failure_callback=recv.url(fcb))
    (hit,) = recv.wait_hits(fcb, 1)
    payload = json.loads(body_of(hit))
    entry = wait_until(lambda: client.dlq.list(filter={"message_id": failed.message_id}).messages)[0]
    assert payload["status"] == 500 and base64.b64decode(payload["body"]) == b"boom"
    assert payload["dlqId"] == entry.dlq_id
    time.sleep(0.5)
    assert len(recv.hits(fcb)) == 1


def test_deduplication_by_id_and_by_content(client, recv, stack):
    name = unique("ok")
    first = client.message.publish(url=recv.url(name), body="d", deduplication_id="dd-" + name)
    r = httpx.post(f"{stack[0].url}/v2/publish/{recv.url(name)}", content=b"d",
                   headers={"Authorization": f"Bearer {DEV_TOKEN}", "Upstash-Deduplication-Id": "dd-" + name})
    assert r.status_code == 202 and r.json() == {"messageId": first.message_id, "deduplicated": True}
    a = client.message.publish_json(url=recv.url(name), body={"k": 1}, content_based_deduplication=True)
    b = client.message.publish_json(url=recv.url(name), body={"k": 1}, content_based_deduplication=True)
    c = client.message.publish_json(url=recv.url(name), body={"k": 1}, headers={"X-Other": "1"},
                                    content_based_deduplication=True)
    assert b.deduplicated and b.message_id == a.message_id and not c.deduplicated
    recv.wait_hits(name, 3)
    time.sleep(0.5)
    assert len(recv.hits(name)) == 3


def test_delay_and_not_before(client, recv):
    delayed, nb = unique("ok"), unique("ok")
    sent = time.time()
    res = client.message.publish(url=recv.url(delayed), body="x", delay=2)
    client.message.publish(url=recv.url(nb), body="x", delay="1h", not_before=int(time.time()) + 2)
    msg = client.message.get(res.message_id)
    assert abs(msg.not_before - msg.created_at - 2000) < 50
    (hit,) = recv.wait_hits(delayed, 1)
    assert hit["started"] - sent >= 1.9
    recv.wait_hits(nb, 1, timeout=10)


def test_cancel_one_many_and_all(client, recv, stack):
    client.message.cancel_all()
    name = unique("ok")
    ids = [client.message.publish(url=recv.url(name), body=str(i), delay="1h").message_id for i in range(3)]
    client.message.cancel(ids[0])
    assert client.message.cancel_many([ids[1]]) == 1
    assert client.message.cancel_all() == 1
    with pytest.raises(QStashError):
        client.message.cancel(ids[0])
    logs = client.log.list(filter={"message_id": ids[0]}).logs
    assert {"CANCEL_REQUESTED", "CANCELED"} <= {e.state.value for e in logs}
    r = httpx.delete(f"{stack[0].url}/v2/messages?labeel=x", headers={"Authorization": f"Bearer {DEV_TOKEN}"})
    assert r.status_code == 400


def test_cancel_in_flight_stops_retries(client, recv):
    name = unique("slowfail")
    res = client.message.publish(url=recv.url(name), body="x", retries=3, retry_delay="100")
    wait_until(lambda: client.log.list(filter={"message_id": res.message_id, "state": LogState.ACTIVE}).logs)
    time.sleep(0.3)
    client.message.cancel(res.message_id)  # the attempt is under way: it finishes, then nothing more
    wait_until(lambda: client.log.list(filter={"message_id": res.message_id, "state": LogState.CANCELED}).logs)
    time.sleep(0.5)
    assert len(recv.hits(name)) == 1


def test_queue_parallelism_fifo_and_pause(client, recv):
    queue = unique("q")
    client.queue.upsert(queue, parallelism=2)
    name = unique("slow")
    for i in range(6):
        client.message.enqueue(queue=queue, url=recv.url(name), body=str(i))
    hits = recv.wait_hits(name, 6, timeout=30)
    spans = [(h["started"], h["ended"]) for h in hits]
    overlap = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert overlap == 2

    fifo = unique("q")
    client.queue.upsert(fifo, parallelism=1)
    client.queue.pause(fifo)
    assert client.queue.get(fifo).paused is True
    seq = unique("slow")
    for i in range(3):
        client.message.enqueue(queue=fifo, url=recv.url(seq), body=str(i))
    time.sleep(1.5)
    assert recv.hits(seq) == [] and client.queue.get(fifo).lag == 3
    client.queue.resume(fifo)
    hits = recv.wait_hits(seq, 3, timeout=30)
    assert [body_of(h) for h in hits] == [b"0", b"1", b"2"]
    assert all(a["ended"] <= b["started"] for a, b in zip(hits, hits[1:]))


def test_queue_crud_and_auto_create(client, recv):
    name = unique("q")
    client.queue.upsert(name, parallelism=2)
    q = client.queue.get(name)
    assert (q.parallelism, q.paused, q.lag) == (2, False, 0) and q.created_at and q.updated_at
    client.queue.pause(name)
    client.queue.upsert(name)
    q = client.queue.get(name)
    assert (q.parallelism, q.paused) == (1, False)
    client.queue.delete(name)
    assert name not in [x.name for x in client.queue.list()]
    auto = unique("newq")
    client.message.enqueue(queue=auto, url=recv.url(unique("ok")), body="x")
    assert client.queue.get(auto).parallelism == 1


def test_url_group_fan_out_and_batch(client, recv):
    group = unique("g")
    client.url_group.delete(group)
    a, b = unique("ok"), unique("ok")
    client.url_group.upsert_endpoints(group, [{"url": recv.url(a)}, {"url": recv.url(b), "name": "two"}])
    res = client.message.publish(url_group=group, body="x")
    assert sorted(r.url for r in res) == sorted([recv.url(a), recv.url(b)])
    assert recv.wait_hits(a, 1)[0]["headers"]["upstash-topic-name"] == group
    recv.wait_hits(b, 1)
    later = client.message.publish(url_group=group, body="y", delay="1h")
    second = client.message.get([r for r in later if r.url == recv.url(b)][0].message_id)
    assert (second.url_group, second.endpoint, second.url) == (group, "two", recv.url(b))

    c, q = unique("ok"), unique("q")
    out = client.message.batch([
        {"url": recv.url(c), "body": "a", "retries": 0},
        {"url_group": group, "body": "b"},
        {"url": recv.url(c), "body": "c", "queue": q},
    ])
    assert len(out) == 3 and isinstance(out[1], list) and len(out[1]) == 2
    hits = recv.wait_hits(c, 2)
    assert sorted(body_of(h) for h in hits) == [b"a", b"c"]

    client.url_group.remove_endpoints(group, [{"name": "two"}])
    assert [e.url for e in client.url_group.get(group).endpoints] == [recv.url(a)]
    client.url_group.remove_endpoints(group, [{"url": recv.url(a)}])
    with pytest.raises(QStashError):
        client.url_group.get(group)


def test_message_get_shape(client, recv):
    res = client.message.publish(url=recv.url(unique("ok")), body="x", delay="1h", retries=5,
                                 retry_delay="7000 * retried", label="L",
                                 flow_control={"key": "k", "parallelism": 2})
    msg = client.message.get(res.message_id)
    assert msg.max_retries == 5 and msg.retry_delay_expression == "7000 * retried" and msg.label == "L"
    assert msg.flow_control.parallelism == 2 and msg.flow_control.rate is None and msg.flow_control.period == 1
    client.message.cancel(res.message_id)


def test_signing_key_rotation(client, recv):
    old = client.signing_key.get()
    try:
        new = client.signing_key.rotate()
        assert new.current == old.next and new.next not in (old.current, old.next)
        name = unique("ok")
        client.message.publish(url=recv.url(name), body="x")
        assert recv.wait_hits(name, 1)[0]["verified"]  # the receiver still has the old pair: next-key fallback
    finally:
        pass


def test_bad_input_is_refused_and_nothing_is_stored(client, stack, recv):
    auth = {"Authorization": f"Bearer {DEV_TOKEN}"}
    before = client.log.list(count=1000).logs
    cases = [
        ("ftp://x/y", {}, "invalid destination url"),
        ("http://", {}, "no host"),
        (recv.url("ok"), {"Upstash-Method": "TRACE"}, "Upstash-Method"),
        (recv.url("ok"), {"Upstash-Retries": "many"}, "Upstash-Retries"),
        (recv.url("ok"), {"Upstash-Delay": "soon"}, "Upstash-Delay"),
        (recv.url("ok"), {"Upstash-Retry-Delay": "__import__('os')"}, "retry delay"),
        (recv.url("ok"), {"Upstash-Flow-Control-Key": "k", "Upstash-Flow-Control-Value": ""}, "parallelism or rate"),
        (recv.url("ok"), {"Upstash-Callback": "not-a-url"}, "callback"),
        (recv.url("ok"), {"Upstash-Callback-Delay": "10s", "Upstash-Callback": recv.url("ok")}, "delayed callbacks"),
    ]
    for destination, headers, expected in cases:
        r = httpx.post(f"{stack[0].url}/v2/publish/{destination}", content=b"x", headers={**auth, **headers})
        assert r.status_code == 400, (destination, headers, r.text)
        assert expected in r.json()["error"], r.json()
    r = httpx.post(f"{stack[0].url}/v2/batch", json=[{"destination": recv.url("ok")}, {"destination": "ftp://x"}],
                   headers=auth)
    assert r.status_code == 400 and "element 1" in r.json()["error"]
    r = httpx.post(f"{stack[0].url}/v2/enqueue/bad name!/{recv.url('ok')}", content=b"x", headers=auth)
    assert r.status_code in (400, 404)
    with pytest.raises(QStashError, match="400"):
        client.schedule.create(destination=recv.url("ok"), cron="* * * * *", schedule_id="bad id!")
    with pytest.raises(QStashError, match="404"):
        client.message.get("nope")
    with pytest.raises(QStashError, match="404"):
        client.message.publish(url_group="no-such-group", body="x")
    after = client.log.list(count=1000).logs
    assert len(after) == len(before)


def test_schedule_crud(client, recv):
    sid = client.schedule.create_json(destination=recv.url("ok"), cron="1 1 1 1 1", body={"a": 1},
                                      retry_delay="5000 * retried", label="s")
    s = client.schedule.get(sid)
    assert (s.cron, s.retry_delay_expression, s.label, s.paused) == ("1 1 1 1 1", "5000 * retried", "s", False)
    client.schedule.pause(sid)
    assert client.schedule.get(sid).paused is True
    client.schedule.resume(sid)
    assert client.schedule.get(sid).paused is False
    assert sid in [x.schedule_id for x in client.schedule.list()]
    client.schedule.delete(sid)
    assert sid not in [x.schedule_id for x in client.schedule.list()]


def test_schedule_fires_every_minute_into_its_queue(client, recv):
    name, sid, queue = unique("ok"), unique("my.sched"), unique("sq")
    client.schedule.create(destination=recv.url(name), cron="* * * * *", schedule_id=sid, body="tick", queue=queue)
    client.schedule.create(destination=recv.url(name), cron="* * * * *", schedule_id=sid, body="tick", queue=queue)
    assert [x.schedule_id for x in client.schedule.list()].count(sid) == 1
    assert client.schedule.get(sid).queue == queue
    (hit,) = recv.wait_hits(name, 1, timeout=75)
    assert hit["headers"]["upstash-schedule-id"] == sid and body_of(hit) == b"tick"
    s = wait_until(lambda: (s := client.schedule.get(sid)).last_schedule_states and s)
    assert s.last_schedule_time and s.next_schedule_time > s.last_schedule_time
    assert {v.value for v in s.last_schedule_states.values()} <= {"IN_PROGRESS", "SUCCESS", "FAIL"}
    client.schedule.delete(sid)


def test_kill9_loses_no_accepted_message(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    server = LockgateProcess(args=["dev", "--no-discovery"], data_dir=data, port=port,
                             log_path=tmp_path / "lockgate.log", env=QSTASH_ENV).start()
    recv = Receiver(tmp_path / "ledger.jsonl")
    try:
        client = QStash(DEV_TOKEN, base_url=server.url)
        name = unique("ok")
        ids = {client.message.publish(url=recv.url(name), body=str(i), delay="3s").message_id for i in range(20)}
        server.kill9()
        time.sleep(3.5)
        server.start()  # same port, data dir and (on PostgreSQL) database
        hits = recv.wait_hits(name, 20, timeout=30)
        assert {h["headers"]["upstash-message-id"] for h in hits} == ids
        time.sleep(1)
        assert len(recv.hits(name)) == 20
    finally:
        recv.stop()
        server.stop()


def test_qstash_port_serves_the_same_api(tmp_path):
    extra = free_port()
    server = LockgateProcess(args=["dev", "--no-discovery", "--in-memory", "--qstash-port", str(extra)],
                             data_dir=None, log_path=tmp_path / "lockgate.log").start()
    try:
        client = QStash(DEV_TOKEN, base_url=f"http://127.0.0.1:{extra}")
        assert client.signing_key.get().current == DEV_CURRENT_KEY
        client.queue.upsert("shared")
        assert QStash(DEV_TOKEN, base_url=server.url).queue.get("shared").parallelism == 1
    finally:
        server.stop()


def test_flow_control_parallelism_and_rate(client, recv):
    key, name = unique("p"), unique("slow")
    for i in range(4):
        client.message.publish(url=recv.url(name), body=str(i), flow_control={"key": key, "parallelism": 1})
    wait_until(lambda: client.flow_control.get(key).wait_list_size > 0, timeout=5)
    hits = recv.wait_hits(name, 4, timeout=30)
    spans = sorted((h["started"], h["ended"]) for h in hits)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "two deliveries of one key overlapped"

    key, name = unique("r"), unique("ok")
    ids = [client.message.publish(url=recv.url(name), body=str(i), flow_control={"key": key, "rate": 2,
                                                                                   "period": "1s"}).message_id
           for i in range(5)]
    recv.wait_hits(name, 5, timeout=30)
    # Admission times from the server's log, grouped into fixed one-second windows as the server counts them:
    # a window opens at the first start at or after the previous window's end. Each admits at most 2, so
    # 5 messages need 3 windows. (Two windows side by side may hold 4 starts less than a second apart.)
    starts = sorted(e.time for i in ids for e in client.log.list(filter={"message_id": i, "state": LogState.ACTIVE}).logs)
    assert len(starts) == 5, starts
    windows: list[list[int]] = []
    for start in starts:
        if not windows or start >= windows[-1][0] + 1000:
            windows.append([start])
        else:
            windows[-1].append(start)
    assert all(len(w) <= 2 for w in windows) and len(windows) >= 3, windows


def test_flow_control_admin(client, recv):
    key = unique("k")
    client.message.publish(url=recv.url(unique("ok")), body="x", delay="1h",
                           flow_control={"key": key, "parallelism": 5})
    client.flow_control.pause(key)
    assert client.flow_control.get(key).is_paused is True
    client.flow_control.resume(key)
    assert client.flow_control.get(key).is_paused is False
    client.flow_control.pin(key, {"parallelism": 3, "rate": 20, "period": 120})
    info = client.flow_control.get(key)
    assert (info.is_pinned_parallelism, info.is_pinned_rate) == (True, True)
    assert (info.parallelism_max, info.rate_max, info.rate_period) == (3, 20, 120)
    client.flow_control.unpin(key, {"parallelism": True})
    info = client.flow_control.get(key)
    assert (info.is_pinned_parallelism, info.is_pinned_rate) == (False, True)
    client.flow_control.reset_rate(key)
    assert client.flow_control.get(key).rate_count == 0
    g = client.flow_control.get_global_parallelism()
    assert isinstance(g.parallelism_max, int) and isinstance(g.parallelism_count, int)
    with pytest.raises(QStashError, match="404"):
        client.flow_control.get(unique("none"))


def test_raw_forms_the_js_sdk_uses(client, recv, stack):
    http = httpx.Client(base_url=stack[0].url, headers={"Authorization": f"Bearer {DEV_TOKEN}"})
    name = unique("ok")
    ids = [client.message.publish(url=recv.url(name), body=str(i), delay="1h", label="L" + name).message_id
           for i in range(3)]
    assert http.delete(f"/v2/messages/{ids[0]}").json() == {"cancelled": 1}
    assert http.delete("/v2/messages", params=[("messageIds", ids[1]), ("messageIds", "nope")]).json() == {
        "cancelled": 1}
    other = client.message.publish(url=recv.url(name), body="o", delay="1h").message_id
    assert http.delete("/v2/messages", params={"label": "L" + name}).json() == {"cancelled": 1}
    assert client.message.get(other).message_id == other  # not labelled: left alone
    client.message.cancel(other)
    states = {e["state"] for e in http.get("/v2/events", params={"messageId": ids[0]}).json()["events"]}
    assert states <= {"CREATED", "ACTIVE", "RETRY", "ERROR", "DELIVERED", "FAILED", "CANCEL_REQUESTED", "CANCELED"}
    assert "CANCELED" in states

    sid = client.schedule.create(destination=recv.url(name), cron="1 1 1 1 1")
    assert http.post(f"/v2/schedules/{sid}/pause").status_code == 200
    assert client.schedule.get(sid).paused is True
    client.schedule.delete(sid)

    r1 = http.post(f"/v2/publish/{recv.url(name)}", content=b"same",
                   headers={"upstash-content-based-deduplication": "true", "upstash-delay": "1h"})
    r2 = http.post(f"/v2/publish/{recv.url(name)}", content=b"same",
                   headers={"Upstash-Content-Based-Deduplication": "True", "upstash-delay": "1h"})
    assert r2.status_code == 202 and r2.json()["messageId"] == r1.json()["messageId"]
    client.message.cancel(r1.json()["messageId"])

    assert http.delete("/v2/dlq", params={"labeel": "x"}).status_code == 400


def test_dlq_and_log_paging_end_with_no_cursor(client, recv, stack):
    http = httpx.Client(base_url=stack[0].url, headers={"Authorization": f"Bearer {DEV_TOKEN}"})
    name = unique("fail")
    ids = [client.message.publish(url=recv.url(name), body=str(i), retries=0, label=name).message_id
           for i in range(5)]
    wait_until(lambda: len(client.dlq.list(filter={"label": name}).messages) == 5)
    seen, cursor, pages = [], None, 0
    while True:
        page = client.dlq.list(cursor=cursor, count=2, filter={"label": name})
        seen += [m.message_id for m in page.messages]
        pages += 1
        cursor = page.cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and pages == 3
    assert [m.message_id for m in client.dlq.list(filter={"message_id": ids[0]}, count=1).messages] == [ids[0]]

    events, cursor = [], None
    while True:
        page = client.log.list(cursor=cursor, count=3, filter={"label": name})
        events += page.logs
        cursor = page.cursor
        if cursor is None:
            break
    assert {e.message_id for e in events} == set(ids)
    only = http.get("/v2/events", params=[("messageIds", ids[0]), ("messageIds", ids[1])]).json()["events"]
    assert {e["messageId"] for e in only} == {ids[0], ids[1]}

    entries = client.dlq.list(filter={"label": name}).messages
    r = http.delete("/v2/dlq", params=[("dlqIds", entries[0].dlq_id), ("dlqIds", entries[1].dlq_id)])
    assert r.json()["deleted"] == 2
    assert len(client.dlq.list(filter={"label": name}).messages) == 3


def test_webhook_mode_forwards_the_callers_headers(stack, recv):
    name = unique("ok")
    r = httpx.post(f"{stack[0].url}/v2/publish/{recv.url(name)}?qstash_token={DEV_TOKEN}&upstash-header-forward=true",
                   content=b"hook", headers={"X-Github-Event": "push", "Authorization": "Bearer secret"})
    assert r.status_code == 200, r.text
    (hit,) = recv.wait_hits(name, 1)
    assert hit["headers"]["x-github-event"] == "push" and "secret" not in hit["headers"].get("authorization", "")
    assert "upstash-header-forward" not in hit["url"]


def test_kill9_mid_delivery_keeps_the_queue_moving(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    args = ["dev", "--no-discovery"]
    server = LockgateProcess(args=args, data_dir=data, port=port, log_path=tmp_path / "lockgate.log",
                             env=QSTASH_ENV).start()
    recv = Receiver(tmp_path / "ledger.jsonl")
    try:
        client = QStash(DEV_TOKEN, base_url=server.url)
        queue, name = unique("q"), unique("slow")
        client.queue.upsert(queue, parallelism=1)
        ids = [client.message.enqueue(queue=queue, url=recv.url(name), body=str(i)).message_id for i in range(3)]
        wait_until(lambda: client.log.list(filter={"message_id": ids[0], "state": LogState.ACTIVE}).logs)
        server.kill9()  # the first delivery is in flight and holds the queue's only slot
        server.start()  # same port, data dir and (on PostgreSQL) database
        wait_until(lambda: {h["headers"]["upstash-message-id"] for h in recv.hits(name)} == set(ids), timeout=30)
        delivered = [h["headers"]["upstash-message-id"] for h in recv.hits(name)]
        assert [i for i in delivered if i != ids[0]] == ids[1:]  # FIFO kept; only the interrupted one may repeat
    finally:
        recv.stop()
        server.stop()


def test_redacted_fields_are_hidden_in_the_api_but_delivered(client, recv, stack):
    name = unique("ok")
    res = client.message.publish(url=recv.url(name), body="secret-body", delay="1s",
                                 headers={"Authorization": "Bearer t", "X-Keep": "1"},
                                 redact={"body": True, "header": ["Authorization"]})
    msg = client.message.get(res.message_id)
    assert msg.body.startswith("REDACTED:") and msg.headers["Authorization"][0].startswith("REDACTED:")
    assert msg.headers["X-Keep"] == ["1"]
    (hit,) = recv.wait_hits(name, 1)
    assert body_of(hit) == b"secret-body" and hit["headers"]["authorization"] == "Bearer t"
    events = httpx.get(f"{stack[0].url}/v2/events?messageId={res.message_id}",
                       headers={"Authorization": f"Bearer {DEV_TOKEN}"}).json()["events"]
    assert events and all(e["body"].startswith("REDACTED:") for e in events)
