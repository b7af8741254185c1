"""The Connect gateway: workers dial in over a WebSocket and take calls over it.

A call to a Connect app goes through `Gateway.call` (the executor's other transport, beside
HTTP). The gateway hands it to a ready worker of the app on this replica, or relays it through
the store to a replica that has one. Each call holds a lease the worker keeps extending; a call
whose lease lapses (the worker died or vanished) comes back to the engine as a transport error,
and the engine retries it like any failed HTTP call — on whichever worker is there then.

Protocol, as the official SDKs speak it: GATEWAY_HELLO → WORKER_CONNECT (app and function configs:
a sync) → GATEWAY_CONNECTION_READY → [WORKER_READY] → executor requests, each acknowledged
(WORKER_REQUEST_ACK), kept alive (WORKER_REQUEST_EXTEND_LEASE) and answered (WORKER_REPLY, which
we acknowledge with WORKER_REPLY_ACK). Heartbeats both ways; WORKER_PAUSE stops new work to a
worker that is shutting down; GATEWAY_CLOSING asks workers to reconnect (this replica drains).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from lockgate.connect import messages as pb
from lockgate.connect import tokens
from lockgate.connect.messages import Kind
from lockgate.models import now_ms
from lockgate.protocol.event_ids import new_ulid
from lockgate.protocol.sdk_response import TransportError
from lockgate.store import connect_operations as cops
from lockgate.store.base import Store

log = logging.getLogger("lockgate.connect")

SUBPROTOCOL = "v0.connect.inngest.com"
ACCOUNT_ID = "lockgate"
ENV_ID = "lockgate"
HANDSHAKE_TIMEOUT_S = 10.0
ACK_TIMEOUT_S = 10.0  # a worker that does not acknowledge a request in time never started it
BEAT_EVERY_S = 5.0  # this replica's and its workers' rows in the store
RELAY_ERROR = "error:"  # prefix of a relayed outcome that is a transport error (`error:<reason>:<message>`)


@dataclass(slots=True)
class ConnectOptions:
    heartbeat_interval_s: int = 10
    extend_lease_interval_s: int = 5
    worker_wait_s: float = 30.0  # how long a call waits for a worker of its app to (re)connect
    signing_keys: list[str] = field(default_factory=list)  # empty: dev, no session tokens
    single_node: bool = True  # no other replica can hold a worker or a reply
    endpoint: str = ""  # this replica's ws URL as other replicas hand it to workers
    drain_wait_s: float = 5.0  # on shutdown, how long workers get to move to another replica

    @property
    def lease_ttl_s(self) -> float:
        return 4.0 * self.extend_lease_interval_s  # three missed extensions and the call is lost

    @property
    def silence_limit_s(self) -> float:
        return 3.0 * self.heartbeat_interval_s


class Session:
    """One connected worker: the apps it serves and the calls it holds."""

    def __init__(self, ws: WebSocket, hello: Any, gateway_id: str) -> None:
        self.ws = ws
        self.id: str = hello.connection_id
        self.apps: list[str] = [a.app_name for a in hello.apps]
        self.app_versions = {a.app_name: a.app_version or None for a in hello.apps}
        self.instance_id: str = hello.instance_id
        self.sdk_language: str = hello.sdk_language
        self.sdk_version: str = hello.sdk_version
        self.max_concurrency: int | None = hello.max_worker_concurrency or None
        self.status = "connecting" if hello.worker_manual_readiness_ack else "ready"
        self.gateway_id = gateway_id
        self.connected_at = now_ms()
        self.inflight: set[str] = set()
        self.last_seen = time.monotonic()
        self._send_lock = asyncio.Lock()

    def label(self) -> str:
        return f"worker {self.instance_id or '?'} (connection {self.id})"

    async def send(self, data: bytes) -> None:
        async with self._send_lock:
            await self.ws.send_bytes(data)

    def can_take(self, app: str) -> bool:
        return (self.status == "ready" and app in self.apps
                and (self.max_concurrency is None or len(self.inflight) < self.max_concurrency))

    def rows(self) -> list[cops.WorkerRow]:
        return [cops.WorkerRow(self.id, app, self.gateway_id, self.instance_id, self.app_versions.get(app),
                               self.sdk_language, self.sdk_version, self.status, self.max_concurrency,
                               self.connected_at, now_ms()) for app in self.apps]


@dataclass(slots=True)
class Call:
    """A request handed to a worker and not answered yet."""

    request: Any  # GatewayExecutorRequestData
    session: Session
    reply: asyncio.Future
    acked: asyncio.Event
    lease_deadline: float  # monotonic


_NOT_TAKEN = object()  # the worker never acknowledged: try another


class Gateway:
    def __init__(self, store: Store, options: ConnectOptions,
                 sync_apps: Callable[[Any], Awaitable[str | None]]) -> None:
        self.store = store
        self.options = options
        self.sync_apps = sync_apps  # WORKER_CONNECT → the engine's app sync; returns an error or None
        self.id = f"gw-{uuid.uuid4().hex[:12]}"
        self.endpoint = options.endpoint
        self.draining = False
        self.sessions: dict[str, Session] = {}
        self.calls: dict[str, Call] = {}  # request id → call handed to a worker here
        self.relayed: dict[str, asyncio.Future] = {}  # request id → reply of a call relayed elsewhere
        self._capacity = asyncio.Event()  # set when a worker joins or frees a slot
        self.relayed_out = 0  # calls sent to a worker on another replica
        self.relayed_in = 0  # calls another replica sent to a worker here
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        await self._beat()
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="lockgate-connect-housekeeping"))

    async def drain(self) -> None:
        """Ask every worker to reconnect elsewhere; calls in flight keep going (replies may come back
        through another replica, which parks them in the store)."""
        if self.draining:
            return
        self.draining = True
        await self._beat()
        for session in list(self.sessions.values()):
            session.status = "draining"
            try:
                await session.send(pb.frame(Kind.GATEWAY_CLOSING))
            except Exception:
                pass
        if not self.sessions:
            return
        log.info("draining: asked %d Connect worker(s) to reconnect", len(self.sessions))
        # Keep answering /v0/connect/start for a moment: it points the workers at another replica.
        deadline = time.monotonic() + self.options.drain_wait_s
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        await self.drain()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for session in list(self.sessions.values()):
            try:
                await session.ws.close(code=1001)
            except Exception:
                pass
        try:
            await self.store.write(cops.remove_gateway, self.id)
        except Exception:
            log.exception("could not remove this gateway's rows; they expire on their own")

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- bootstrap (/v0/connect/start) -------------------------------------------------

    async def start_response(self, own_endpoint: str, exclude: list[str]) -> tuple[int, bytes | str]:
        endpoint, group = own_endpoint, self.id
        if self.draining or self.id in exclude:
            others = await self.store.read(cops.live_gateways, now_ms() - int(3 * BEAT_EVERY_S * 1000))
            choices = [(g, e) for g, e in others.items() if g != self.id and g not in exclude]
            if not choices:
                return 503, "this replica is draining and no other lockgate replica serves Connect: retry shortly"
            group, endpoint = random.choice(choices)
        connection_id = new_ulid()
        key = self.options.signing_keys[0] if self.options.signing_keys else None
        token = tokens.issue(connection_id, key, now_ms())
        return 200, pb.StartResponse(connection_id=connection_id, gateway_endpoint=endpoint, gateway_group=group,
                                     session_token=token, sync_token=token).SerializeToString()

    # -- one worker's WebSocket --------------------------------------------------------

    async def serve(self, ws: WebSocket) -> None:
        await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in ws.scope.get("subprotocols", []) else None)
        if self.draining:
            await ws.close(code=1013, reason="connect_gateway_closing")
            return
        try:
            session = await self._handshake(ws)
        except (WebSocketDisconnect, asyncio.TimeoutError):
            return
        if session is None:
            return
        self.sessions[session.id] = session
        self._capacity.set()
        await self.store.write(cops.upsert_workers, session.rows())
        log.info("%s connected for app(s) %s (%s %s)", session.label(), ", ".join(session.apps),
                 session.sdk_language, session.sdk_version)
        try:
            while True:
                data = await ws.receive_bytes()
                session.last_seen = time.monotonic()
                await self._on_message(session, pb.ConnectMessage.FromString(data))
        except (WebSocketDisconnect, RuntimeError):
            pass
        except Exception:
            log.exception("%s: dropping the connection after an unexpected error", session.label())
        finally:
            self.sessions.pop(session.id, None)
            if session.inflight:
                log.warning("%s disconnected holding %d call(s); they are retried unless the worker answers"
                            " before their leases lapse", session.label(), len(session.inflight))
            else:
                log.info("%s disconnected", session.label())
            try:
                await self.store.write(cops.remove_worker, session.id)
            except Exception:
                log.exception("could not remove %s from the store", session.label())

    async def _handshake(self, ws: WebSocket) -> Session | None:
        await ws.send_bytes(pb.frame(Kind.GATEWAY_HELLO))
        message = pb.ConnectMessage.FromString(await asyncio.wait_for(ws.receive_bytes(), HANDSHAKE_TIMEOUT_S))
        if message.kind != Kind.WORKER_CONNECT:
            await ws.close(code=4002, reason=f"expected WORKER_CONNECT, got message kind {message.kind}")
            return None
        hello = pb.WorkerConnectRequestData.FromString(message.payload)
        problem = tokens.check(hello.auth_data.session_token, hello.connection_id, self.options.signing_keys, now_ms())
        if problem is None and not hello.apps:
            problem = "the worker serves no apps"
        if problem is None:
            problem = await self.sync_apps(hello)
        if problem is not None:
            log.warning("refused a Connect worker (%s): %s", hello.instance_id or "?", problem)
            await ws.send_bytes(pb.frame(Kind.SYNC_FAILED, problem.encode()))
            await ws.close(code=4001, reason=problem[:120])
            return None
        ready = pb.GatewayConnectionReadyData(heartbeat_interval=f"{self.options.heartbeat_interval_s}s",
                                              extend_lease_interval=f"{self.options.extend_lease_interval_s}s")
        await ws.send_bytes(pb.frame(Kind.GATEWAY_CONNECTION_READY, ready))
        return Session(ws, hello, self.id)

    async def _on_message(self, session: Session, message: Any) -> None:
        kind = message.kind
        if kind == Kind.WORKER_HEARTBEAT:
            await session.send(pb.frame(Kind.GATEWAY_HEARTBEAT))
        elif kind == Kind.WORKER_REQUEST_ACK:
            ack = pb.WorkerRequestAckData.FromString(message.payload)
            call = self.calls.get(ack.request_id)
            if call is not None:
                call.acked.set()
                call.lease_deadline = time.monotonic() + self.options.lease_ttl_s
        elif kind == Kind.WORKER_REQUEST_EXTEND_LEASE:
            await self._extend_lease(session, pb.WorkerRequestExtendLeaseData.FromString(message.payload))
        elif kind == Kind.WORKER_REPLY:
            reply = pb.SDKResponse.FromString(message.payload)
            await self.deliver_reply(reply, message.payload)
            await session.send(pb.frame(Kind.WORKER_REPLY_ACK, pb.WorkerReplyAckData(request_id=reply.request_id)))
        elif kind == Kind.WORKER_READY:
            self._set_status(session, "ready")
        elif kind == Kind.WORKER_PAUSE:
            self._set_status(session, "paused")
            log.info("%s paused (shutting down): no new calls go to it", session.label())
        elif kind == Kind.WORKER_STATUS:
            pass  # JS v4 reports its in-flight work; our own bookkeeping already knows it
        else:
            log.warning("%s sent an unexpected message kind %d; ignored", session.label(), kind)

    def _set_status(self, session: Session, status: str) -> None:
        if session.status == "draining":
            return
        session.status = status
        if status == "ready":
            self._capacity.set()
        self._spawn(self.store.write(cops.upsert_workers, session.rows()))

    async def _extend_lease(self, session: Session, data: Any) -> None:
        call = self.calls.get(data.request_id)
        new_lease = ""
        if call is not None:
            if call.request.lease_id == data.lease_id:
                new_lease = new_ulid()
                call.request.lease_id = new_lease
                call.lease_deadline = time.monotonic() + self.options.lease_ttl_s
        elif not self.options.single_node:
            # The call was handed out by another replica (this worker reconnected here after a drain):
            # the store tells that replica the call is alive.
            new_lease = new_ulid()
            until = now_ms() + int(self.options.lease_ttl_s * 1000)
            self._spawn(self.store.write(cops.record_lease, data.request_id, until, now_ms()))
        ack = pb.WorkerRequestExtendLeaseAckData(request_id=data.request_id, account_id=ACCOUNT_ID, env_id=ENV_ID,
                                                 new_lease_id=new_lease)
        await session.send(pb.frame(Kind.WORKER_REQUEST_EXTEND_LEASE_ACK, ack))

    async def deliver_reply(self, reply: Any, raw: bytes) -> bool:
        """A worker's answer, over the WebSocket or flushed over HTTP. True when a waiting call took it."""
        call = self.calls.get(reply.request_id)
        if call is not None:
            call.acked.set()
            if not call.reply.done():
                call.reply.set_result(reply)
            return True
        waiter = self.relayed.get(reply.request_id)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(reply)
            return True
        if self.options.single_node:
            log.warning("a Connect reply for request %s came after its call was given up; dropped (the call"
                        " is retried)", reply.request_id)
            return False
        await self.store.write(cops.record_reply, reply.request_id, base64.b64encode(raw).decode(), now_ms())
        return False

    # -- calls ---------------------------------------------------------------------------

    async def call(self, request: Any, *, relay: bool = True) -> Any:
        """Run one request on a worker; returns its SDKResponse or a TransportError."""
        app = request.app_name
        deadline = time.monotonic() + self.options.worker_wait_s
        refused: set[str] = set()
        while True:
            session = self._pick(app, refused)
            if session is not None:
                outcome = await self._run_on(session, request)
                if outcome is not _NOT_TAKEN:
                    return outcome
                refused.add(session.id)
                continue
            if relay and not self.options.single_node:
                fresh = now_ms() - int(self.options.silence_limit_s * 1000)
                elsewhere = await self.store.read(cops.gateways_with_ready_worker, app, self.id, fresh)
                if elsewhere:
                    return await self._relay(random.choice(elsewhere), request)
            if time.monotonic() >= deadline:
                return TransportError(
                    f"no Connect worker of app {app!r} is ready to take the call (waited"
                    f" {self.options.worker_wait_s:.0f}s): start one with connect(), or check that it reaches this"
                    " server; the call is retried", reason="connect_no_worker")
            self._capacity.clear()
            try:
                await asyncio.wait_for(self._capacity.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass

    def _pick(self, app: str, refused: set[str]) -> Session | None:
        candidates = [s for s in self.sessions.values() if s.id not in refused and s.can_take(app)]
        if not candidates:
            return None
        fewest = min(len(s.inflight) for s in candidates)
        return random.choice([s for s in candidates if len(s.inflight) == fewest])

    async def _run_on(self, session: Session, request: Any) -> Any:
        rid = request.request_id
        call = Call(request, session, asyncio.get_running_loop().create_future(), asyncio.Event(),
                    time.monotonic() + ACK_TIMEOUT_S)
        self.calls[rid] = call
        session.inflight.add(rid)
        try:
            try:
                await session.send(pb.frame(Kind.GATEWAY_EXECUTOR_REQUEST, request))
            except Exception:
                return _NOT_TAKEN
            acked = asyncio.ensure_future(call.acked.wait())
            try:
                await asyncio.wait([acked, call.reply], timeout=ACK_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
            finally:
                acked.cancel()
            if not call.acked.is_set():
                log.warning("%s did not acknowledge request %s within %.0fs; trying another worker",
                            session.label(), rid, ACK_TIMEOUT_S)
                return _NOT_TAKEN
            return await self._await_reply(call)
        finally:
            self.calls.pop(rid, None)
            session.inflight.discard(rid)
            self._capacity.set()

    async def _await_reply(self, call: Call) -> Any:
        rid = call.request.request_id
        while True:
            remaining = call.lease_deadline - time.monotonic()
            if remaining > 0:
                try:
                    return await asyncio.wait_for(asyncio.shield(call.reply), remaining)
                except asyncio.TimeoutError:
                    continue  # the lease may have been extended meanwhile
            if not self.options.single_node:  # the worker may have moved to another replica
                reply, lease_until = (await self.store.read(cops.relayed_state, [rid])).get(rid, (None, None))
                if reply:
                    return _decode_outcome(reply)
                if lease_until and lease_until > now_ms():
                    call.lease_deadline = time.monotonic() + (lease_until - now_ms()) / 1000
                    continue
            log.warning("%s stopped extending the lease of request %s (run %s): it crashed or lost its"
                        " connection; the call is retried", call.session.label(), rid, call.request.run_id)
            return TransportError(
                f"the Connect {call.session.label()} stopped extending its lease on this call (it crashed or"
                " lost its connection); the call is retried on a connected worker", reason="connect_lease_lost")

    # -- relaying between replicas -------------------------------------------------------

    async def _relay(self, gateway_id: str, request: Any) -> Any:
        rid = request.request_id
        waiter = asyncio.get_running_loop().create_future()
        self.relayed[rid] = waiter
        self.relayed_out += 1
        try:
            await self.store.write(cops.relay_request, rid, self.id, gateway_id, request.app_name,
                                   base64.b64encode(request.SerializeToString()).decode(), now_ms())
            while True:
                try:
                    return await asyncio.wait_for(asyncio.shield(waiter), 2.0)
                except asyncio.TimeoutError:
                    pass
                reply, _ = (await self.store.read(cops.relayed_state, [rid])).get(rid, (None, None))
                if reply:
                    return _decode_outcome(reply)
                fresh = now_ms() - int(3 * BEAT_EVERY_S * 1000)
                if not await self.store.read(cops.gateway_alive, gateway_id, fresh):
                    return TransportError(f"the lockgate replica {gateway_id} that held the Connect worker for this"
                                          " call stopped; the call is retried", reason="connect_replica_lost")
        finally:
            self.relayed.pop(rid, None)
            self._spawn(self.store.write(cops.forget_requests, [rid]))

    async def _serve_relayed(self, rid: str, encoded: str) -> None:
        request = pb.GatewayExecutorRequestData.FromString(base64.b64decode(encoded))
        self.relayed_in += 1
        outcome = await self.call(request, relay=False)
        if isinstance(outcome, TransportError):
            text = f"{RELAY_ERROR}{outcome.reason}:{outcome.message}"
        else:
            text = base64.b64encode(outcome.SerializeToString()).decode()
        await self.store.write(cops.record_reply, rid, text, now_ms())

    def notified(self) -> None:
        """Another replica relayed a call here, or parked a reply someone here waits for."""
        self._spawn(self._check_store())

    async def _check_store(self) -> None:
        try:
            if not self.draining:
                for rid, encoded in await self.store.write(cops.claim_requests, self.id, now_ms()):
                    self._spawn(self._serve_relayed(rid, encoded))
            waiting = list(self.calls) + list(self.relayed)
            if not waiting:
                return
            for rid, (reply, _) in (await self.store.read(cops.relayed_state, waiting)).items():
                if not reply:
                    continue
                outcome = _decode_outcome(reply)
                target = self.calls[rid].reply if rid in self.calls else self.relayed.get(rid)
                if target is not None and not target.done():
                    if rid in self.calls:
                        self.calls[rid].acked.set()
                    target.set_result(outcome)
        except Exception:
            log.exception("checking relayed Connect calls failed")

    def stats(self) -> dict[str, Any]:
        return {"workers": len(self.sessions), "calls_in_flight": len(self.calls),
                "relayed_out": self.relayed_out, "relayed_in": self.relayed_in}

    # -- housekeeping --------------------------------------------------------------------

    async def _beat(self) -> None:
        if not self.endpoint:
            return
        try:
            await self.store.write(cops.beat_gateway, self.id, self.endpoint, self.draining, now_ms())
            sessions = list(self.sessions.values())
            if sessions:
                await self.store.write(cops.beat_workers, [s.id for s in sessions], [s.status for s in sessions],
                                       now_ms())
        except Exception:
            log.exception("recording Connect liveness failed")

    async def _housekeeping(self) -> None:
        last_beat = 0.0
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if now - session.last_seen > self.options.silence_limit_s:
                    log.warning("%s sent nothing for %.0fs; closing its connection", session.label(),
                                now - session.last_seen)
                    self._spawn(session.ws.close(code=4003, reason="consecutive heartbeats missed"))
            if now - last_beat >= BEAT_EVERY_S:
                last_beat = now
                await self._beat()
                if not self.options.single_node:
                    await self._check_store()
                    try:
                        await self.store.write(cops.prune_requests, now_ms() - 3_600_000)
                    except Exception:
                        log.exception("pruning relayed Connect calls failed")


def _decode_outcome(text: str) -> Any:
    if text.startswith(RELAY_ERROR):
        reason, _, message = text[len(RELAY_ERROR):].partition(":")
        return TransportError(message, reason=reason)
    return pb.SDKResponse.FromString(base64.b64decode(text))


def reply_as_http(reply: Any) -> tuple[int, dict[str, str], bytes]:
    """A worker's SDKResponse as the HTTP answer the same SDK would have given."""
    headers = {"X-Inngest-SDK": reply.sdk_version or "connect", "X-Inngest-No-Retry": "true" if reply.no_retry else "false"}
    if reply.request_version:
        headers["X-Inngest-Req-Version"] = str(reply.request_version)
    if reply.retry_after:
        headers["Retry-After"] = reply.retry_after
    return pb.ReplyStatus(reply.status).http_status, headers, bytes(reply.body)


def connect_request(*, app_name: str, function_id: str, function_slug: str, step_id: str, run_id: str, job_id: str,
                    request_id: str, body: bytes) -> Any:
    return pb.GatewayExecutorRequestData(
        request_id=request_id, account_id=ACCOUNT_ID, env_id=ENV_ID, app_id=app_name, app_name=app_name,
        function_id=function_id, function_slug=function_slug, step_id=step_id, request_payload=body, run_id=run_id,
        lease_id=new_ulid(), job_id=job_id)


def functions_of(app: Any) -> Any:
    """An AppConfiguration's function configs (JSON bytes) as Python values."""
    return orjson.loads(app.functions or b"[]")
