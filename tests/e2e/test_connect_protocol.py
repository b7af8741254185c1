"""Connect at the message level, with the official SDK's own protobuf classes (`connect_pb2`) and a
scripted worker: what the SDKs rely on but rarely exercise — a reply sent over `/v0/connect/flush`
instead of the WebSocket, a request the worker never acknowledges (handed to another worker), and
refused handshakes."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
import websockets
from inngest.connect._internal import connect_pb2 as pb

from tests.conftest import Api, LockgateProcess, wait_until

APP = "scripted"
K = pb.GatewayMessageType


@pytest.fixture(scope="module")
def server(tmp_path_factory, backend):
    tmp = tmp_path_factory.mktemp("connect-protocol")
    server = LockgateProcess(args=["dev", "--no-discovery", "--in-memory", "--retry-interval", "0.2"], data_dir=None,
                             log_path=tmp / "lockgate.log", env={"LOCKGATE_CONNECT_LEASE_INTERVAL": "1"}).start()
    yield server
    server.stop()


def function_config(fn: str) -> dict:
    slug = f"{APP}-{fn}"
    return {"id": slug, "name": fn, "triggers": [{"event": f"scripted/{fn}"}],
            "steps": {"step": {"id": "step", "name": "step",
                               "runtime": {"type": "ws", "url": f"wss://connect?fnId={slug}&stepId=step"}}}}


class ScriptedWorker:
    """Speaks the protocol by hand: start, handshake, then whatever the test scripts."""

    def __init__(self, base: str, name: str) -> None:
        self.base, self.name = base, name

    async def __aenter__(self) -> "ScriptedWorker":
        start = pb.StartResponse()
        start.ParseFromString(httpx.post(self.base + "/v0/connect/start",
                                         content=pb.StartRequest().SerializeToString()).content)
        self.ws = await websockets.connect(start.gateway_endpoint, subprotocols=["v0.connect.inngest.com"])
        assert (await self.receive()).kind == K.GATEWAY_HELLO
        hello = pb.WorkerConnectRequestData(
            connection_id=start.connection_id, instance_id=self.name, sdk_language="scripted", sdk_version="0",
            auth_data=pb.AuthData(session_token=start.session_token, sync_token=start.sync_token),
            apps=[pb.AppConfiguration(app_name=APP, functions=json.dumps([function_config("echo")]).encode())])
        await self.send(K.WORKER_CONNECT, hello)
        assert (await self.receive()).kind == K.GATEWAY_CONNECTION_READY
        return self

    async def __aexit__(self, *exc) -> None:
        await self.ws.close()

    async def send(self, kind, payload=None) -> None:
        await self.ws.send(pb.ConnectMessage(kind=kind, payload=payload.SerializeToString() if payload else b"")
                           .SerializeToString())

    async def receive(self, kind=None, timeout: float = 20.0) -> pb.ConnectMessage:
        while True:
            message = pb.ConnectMessage()
            message.ParseFromString(await asyncio.wait_for(self.ws.recv(), timeout))
            if kind is None or message.kind == kind:
                return message

    async def next_request(self) -> pb.GatewayExecutorRequestData:
        request = pb.GatewayExecutorRequestData()
        request.ParseFromString((await self.receive(K.GATEWAY_EXECUTOR_REQUEST)).payload)
        return request


def reply(request: pb.GatewayExecutorRequestData, output) -> pb.SDKResponse:
    return pb.SDKResponse(request_id=request.request_id, status=pb.SDKResponseStatus.DONE,
                          body=json.dumps(output).encode(), sdk_version="scripted:0", request_version=1)


def wait_connected(api: Api, name: str) -> None:
    def ready() -> bool:
        apps = api.http.get("/v1/apps").json()["data"]
        return any(w["instance_id"] == name for a in apps if a["name"] == APP and a["connect"]
                   for w in a["connect"]["workers"])
    wait_until(ready, what=f"scripted worker {name}")


async def test_a_reply_flushed_over_http_finishes_the_call(server):
    api = Api(server.url)
    async with ScriptedWorker(server.url, "flusher") as worker:
        wait_connected(api, "flusher")
        tag = uuid.uuid4().hex
        event_id = api.send({"name": "scripted/echo", "data": {"tag": tag}}).json()["ids"][0]
        request = await worker.next_request()
        body = json.loads(request.request_payload)
        assert body["event"]["data"] == {"tag": tag} and request.function_slug == f"{APP}-echo"
        await worker.send(K.WORKER_REQUEST_ACK, pb.WorkerRequestAckData(request_id=request.request_id))
        # the reply goes over HTTP, as the SDKs do when their WebSocket reply was never acknowledged
        flushed = httpx.post(server.url + "/v0/connect/flush",
                             content=reply(request, {"flushed": tag}).SerializeToString())
        assert flushed.status_code == 200
        ack = pb.FlushResponse()
        ack.ParseFromString(flushed.content)
        assert ack.request_id == request.request_id
        run = api.wait_for_runs(event_id)[0]
        assert api.wait_for_end(run["run_id"])["output"] == {"flushed": tag}


async def test_unacknowledged_request_goes_to_another_worker(server):
    # `mute` takes the request and never acknowledges it; after the acknowledgement timeout (10 s) the
    # gateway hands the same request to `talker`, and the run finishes there.
    api = Api(server.url)
    async with ScriptedWorker(server.url, "mute") as mute:
        wait_connected(api, "mute")
        event_id = api.send({"name": "scripted/echo", "data": {}}).json()["ids"][0]
        ignored = await mute.next_request()
        async with ScriptedWorker(server.url, "talker") as talker:
            request = await talker.next_request()
            assert request.request_id == ignored.request_id and request.run_id == ignored.run_id
            await talker.send(K.WORKER_REQUEST_ACK, pb.WorkerRequestAckData(request_id=request.request_id))
            await talker.send(K.WORKER_REPLY, reply(request, "from talker"))
            assert (await talker.receive(K.WORKER_REPLY_ACK)).kind == K.WORKER_REPLY_ACK
            run = api.wait_for_runs(event_id)[0]
            done = api.wait_for_end(run["run_id"])
            assert done["output"] == "from talker"


async def test_refused_handshakes(server):
    start = pb.StartResponse()
    start.ParseFromString(httpx.post(server.url + "/v0/connect/start", content=b"").content)
    async with websockets.connect(start.gateway_endpoint, subprotocols=["v0.connect.inngest.com"]) as ws:
        await ws.recv()  # hello
        await ws.send(pb.ConnectMessage(kind=K.WORKER_HEARTBEAT).SerializeToString())
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert "expected WORKER_CONNECT" in closed.value.rcvd.reason
    async with websockets.connect(start.gateway_endpoint, subprotocols=["v0.connect.inngest.com"]) as ws:
        await ws.recv()
        bad = pb.WorkerConnectRequestData(connection_id="c", apps=[pb.AppConfiguration(app_name="x",
                                                                                       functions=b"not json")])
        await ws.send(pb.ConnectMessage(kind=K.WORKER_CONNECT, payload=bad.SerializeToString()).SerializeToString())
        failed = pb.ConnectMessage()
        failed.ParseFromString(await asyncio.wait_for(ws.recv(), 10))
        assert failed.kind == K.SYNC_FAILED and b"not JSON" in failed.payload
