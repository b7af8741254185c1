"""The engine facade: what the interfaces call, and the loops that keep work moving."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from lockgate.engine import checkpoint, cron, endpoints, interpreter, operator, progress, signals, step_requests, waits
from lockgate.engine.flow import admission
from lockgate.engine.dispatcher import LEASE_MS, Dispatcher, Timers
from lockgate.engine.app_client import AppHttpClient
from lockgate.engine.executor import APP_KEEPALIVE_S, AppConnector, Executor
from lockgate.engine.health import (AppHealth, bad_call_text, refused_check_text, refused_functions_text,
                                    refused_sync_text, unreachable_text)
from lockgate.engine.ingest import Handoff, create_run_in_tx, ingest_in_tx, parse_events
from lockgate.engine.registry import Registry
from lockgate.engine.resume import resume_sleeps
from lockgate.engine.replicas import Membership, default_replica_name, replica_owner
from lockgate.engine.sync import (DISCOVERY_PATHS, DISCOVERY_PORTS, Registration, SyncError, is_app_url,
                                  parse_registration)
from lockgate.engine.retention import Housekeeping, Retention
from lockgate.protocol.jsoncanon import canonical_json
from lockgate.realtime import Broker
from lockgate.realtime.memory import InProcessBroker
from lockgate.protocol.event_ids import new_ulid
from lockgate.protocol.sdk_response import TransportError
from lockgate.protocol.signing import sign_body
from lockgate.limits import DEFAULT as DEFAULT_LIMITS, Limits
from lockgate.models import DISCOVERY_STEP, Event, Function, Job, JobKind, Run, RunStatus, now_ms
from lockgate.store import flow_operations as flow_ops
from lockgate.outbound import OutboundPolicy
from lockgate.store import operations as ops
from lockgate.store.base import Store, Tx

log = logging.getLogger("lockgate.engine")
run_log = logging.getLogger("lockgate.runs")
event_log = logging.getLogger("lockgate.events")
app_log = logging.getLogger("lockgate.apps")

INVOKED_EVENT = "inngest/function.invoked"  # the event name Inngest gives a run started by hand


@dataclass(slots=True)
class EngineOptions:
    server_kind: str = "dev"  # "dev" or "cloud"
    signing_key: str | None = None
    signing_key_fallback: str | None = None
    sdk_urls: list[str] = field(default_factory=list)
    discovery: bool = True
    poll: bool = True
    poll_interval_s: float = 5.0
    retry_interval_s: float | None = None  # fixed retry delay instead of the backoff table
    workers: int = 100
    request_timeout_s: float = 7200.0
    own_port: int | None = None
    own_url: str | None = None  # where apps reach this server, for the fixes we suggest
    lease_ms: int = LEASE_MS
    single_node: bool = True  # SQLite: leases of a previous process lapse at start-up
    replica_name: str | None = None  # several replicas: stable across restarts (default host:port)
    limits: Limits = DEFAULT_LIMITS  # sizes clients may send (event ids, functions per sync, ...)
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)  # where calls to apps may go
    retention: Retention = field(default_factory=lambda: Retention(seconds=0))


@dataclass(slots=True)
class InvokeOutcome:
    event_id: str  # the `inngest/function.invoked` event that carries the payload
    run_id: str | None
    skipped: str | None = None  # why flow control started no run (rate limit, singleton...)


class FunctionNotFound(LookupError):
    pass


@dataclass(slots=True)
class SyncOutcome:
    status: int
    body: dict[str, Any]


class Engine:
    def __init__(self, store: Store, options: EngineOptions | None = None) -> None:
        self.store = store
        self.options = options or EngineOptions()
        self.registry = Registry()
        # aiohttp: its connection pool stays fast with hundreds of calls in flight.
        self.session: aiohttp.ClientSession | None = None
        self._fresh_session: aiohttp.ClientSession | None = None  # one connection per request
        self.app_client: AppHttpClient | None = None  # calls to http:// apps
        self.executor: Executor | None = None
        name = self.options.replica_name or default_replica_name(self.options.own_port)
        self.dispatcher = Dispatcher(store, self._handle_job, workers=self.options.workers,
                                     lease_ms=self.options.lease_ms, owner=replica_owner(name),
                                     timers=Timers(TIMER_KINDS, self._apply_due_timers), write=self._write)
        self.membership = Membership(store, self.dispatcher, name=name, replicas=not self.options.single_node,
                                     lease_ms=self.options.lease_ms)
        self._background: list[asyncio.Task] = []
        self.housekeeping = Housekeeping(store, self.options.retention)
        self._reload_lock = asyncio.Lock()
        self.qstash: Any = None  # lockgate.qstash.service.QStash, attached by the server
        self.connect: Any = None  # lockgate.connect.gateway.Gateway, attached by the server
        self.realtime: Broker = InProcessBroker()  # the server attaches the configured backend
        self.progress = progress.ProgressPublisher(self.realtime, self._app_of)
        self._known_urls: list[str] = []
        self.health = AppHealth(store)
        self._app_urls: dict[str, str] = {}  # app name -> its URL, for health bookkeeping
        self.listeners: dict[str, Any] = {}  # more store notification channels (Connect relays)
        for url in self.options.sdk_urls:
            self._remember_url(url)

    @property
    def context(self) -> interpreter.EngineContext:
        return interpreter.EngineContext(
            registry=self.registry,
            retry_interval_s=self.options.retry_interval_s,
            handoff=Handoff(owner=self.dispatcher.owner, lease_ms=self.dispatcher.lease_ms, limit=8),
        )

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.options.request_timeout_s, sock_connect=10)
        self.session = aiohttp.ClientSession(
            timeout=timeout,
            connector=AppConnector(limit=max(200, self.options.workers * 2), limit_per_host=0,
                                   keepalive_timeout=APP_KEEPALIVE_S, socket_factory=self.options.outbound.socket_factory),
            cookie_jar=aiohttp.DummyCookieJar(),  # calls to apps carry no state between runs
        )
        self._fresh_session = aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(force_close=True, limit=0))
        self.app_client = AppHttpClient(keepalive_s=APP_KEEPALIVE_S, connect_timeout_s=10,
                                        limit=max(200, self.options.workers * 2),
                                        socket_factory=self.options.outbound.socket_factory)
        self.executor = Executor(self.session, fresh_session=self._fresh_session, signing_key=self.options.signing_key,
                                 signing_key_fallback=self.options.signing_key_fallback,
                                 server_kind=self.options.server_kind, app_client=self.app_client,
                                 timeout_s=self.options.request_timeout_s)
        self.executor.connect = self.connect
        await self.reload_registry()
        if self.options.single_node:
            await self.store.write(ops.release_all_leases)
        await self.membership.start()
        self.store.listen({ops.JOBS_CHANNEL: self.dispatcher.wake, ops.FUNCTIONS_CHANNEL: self._functions_changed,
                           **self.listeners})
        self.progress.broker = self.realtime
        self.progress.start()
        await self.dispatcher.start()
        self._background.append(asyncio.create_task(self._sync_loop(), name="lockgate-sync"))
        # Housekeeping also deletes finished QStash messages and old QStash logs.
        self._background.append(asyncio.create_task(self.housekeeping.run_forever(), name="lockgate-housekeeping"))

    async def stop(self) -> None:
        background = list(self._background)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await self.dispatcher.stop()
        try:  # calls cut short by the grace period go back to the queue now, not at lease expiry
            await self.store.write(ops.release_leases_of, self.dispatcher.owner)
        except Exception:
            log.exception("could not hand back leased jobs; they return when their leases lapse")
        await self.progress.stop()
        await self.membership.stop()
        for session in (self.session, self._fresh_session):
            if session is not None:
                await session.close()
        if self.app_client is not None:
            await self.app_client.close()

    def _functions_changed(self) -> None:
        """Another replica stored a sync: load its functions so events here trigger them too."""
        task = asyncio.create_task(self._reload_quietly(), name="lockgate-reload-functions")
        self._background.append(task)
        task.add_done_callback(self._background.remove)

    async def _reload_quietly(self) -> None:
        try:
            await self.reload_registry()
        except Exception:  # the sync loop reloads again soon
            log.exception("reloading functions failed")

    async def reload_registry(self) -> None:
        # One at a time: a reload that read before a sync committed must not land after the
        # reload that read after it, or the older set of functions would win.
        async with self._reload_lock:
            functions = await self.store.read(ops.load_functions)
            self.registry = Registry.build(functions)

    # -- events --------------------------------------------------------------------

    async def ingest(self, body: Any, *, seed: str | None = None, allow_internal: bool = False) -> list[str]:
        """Validate, commit and match events; returns their internal ids. Raises EventValidationError."""
        now = now_ms()
        events = parse_events(body, seed=seed, now=now, allow_internal=allow_internal,
                              max_id_length=self.options.limits.max_event_id_length)
        registry = self.registry
        handoff = Handoff(owner=self.dispatcher.owner, lease_ms=self.dispatcher.lease_ms, limit=self.dispatcher.free_slots)
        result = await self._write(lambda tx: ingest_in_tx(tx, events, registry, now=now, handoff=handoff))
        for job, run in result.leased:
            self.dispatcher.adopt(job, (run, {}))
        if len(result.run_ids) > len(result.leased) or result.resumed or result.deferred or result.cancelled:
            self.dispatcher.wake()
        for event in result.unmatched:
            event_log.info("event %s started nothing: %s", event.name, event.started_nothing,
                           extra={"event_id": event.internal_id})
        for run_id, event in result.resumed_runs:
            event_log.info("event %s resumed a waiting run", event.name,
                           extra={"run_id": run_id, "event_id": event.internal_id})
        return [e.internal_id for e in events]

    # -- functions -----------------------------------------------------------------

    async def list_functions(self) -> list[Function]:
        """Every active function, read from the store (the replicas' shared truth)."""
        return await self.store.read(ops.load_functions)

    async def find_function(self, ref: str) -> Function | None:
        """A function by internal id or slug."""
        for fn in await self.list_functions():
            if ref in (fn.id, fn.slug):
                return fn
        return None

    async def invoke(self, ref: str, data: dict[str, Any] | None = None, *,
                     user: dict[str, Any] | None = None) -> InvokeOutcome:
        """Start one run of a function now with `data` as its event data, whatever its triggers
        (cron functions too). Flow control applies as for any event. Raises FunctionNotFound."""
        fn = await self.find_function(ref)
        if fn is None:
            raise FunctionNotFound(f"no function {ref!r}: GET /v1/functions lists the synced ones")
        now = now_ms()
        event_id = new_ulid()
        event = Event(internal_id=event_id, id=event_id, name=INVOKED_EVENT, data=dict(data or {}),
                      user=dict(user or {}), ts=now, received_at=now)
        registry = self.registry

        def start(tx: Tx) -> tuple[str | None, str | None]:
            ops.insert_events(tx, [event])
            run = create_run_in_tx(tx, fn, [event], now=now, registry=registry)
            if run is not None:
                return run.run_id, None
            skips = flow_ops.skips_of_event(tx, event_id)
            return None, skips[0]["reason"] if skips else "a run for this event already exists"

        run_id, skipped = await self.store.write(start)
        self.dispatcher.wake()
        return InvokeOutcome(event_id=event_id, run_id=run_id, skipped=skipped)

    async def cancel_run(self, run_id: str, *, reason: str = "cancelled through the API") -> Any:
        ctx = self.context
        run = await self._write(lambda tx: interpreter.cancel_run(tx, ctx, run_id, now=now_ms(), reason=reason))
        self.dispatcher.wake()
        if run is not None and not RunStatus(run.status).is_final:
            run_log.info("run cancelled: %s", reason, extra={"run_id": run_id, "function": run.function_slug})
        return run

    async def fast_forward(self, run_id: str) -> list[Job] | None:
        """Dev only: the run's pending sleeps and wait timeouts fire now. None: no such run."""
        now = now_ms()

        def advance(tx: Tx) -> list[Job] | None:
            if ops.get_run(tx, run_id) is None:
                return None
            return ops.fast_forward_run(tx, run_id, now=now)

        advanced = await self.store.write(advance)
        if advanced:
            self.dispatcher.wake()
        return advanced

    # -- operator actions (dashboard and REST) ----------------------------------------

    async def rerun(self, run_id: str) -> Any:
        """A new run of the same function and events, from the start. Raises operator.OperatorError."""
        registry = self.registry
        run = await self._write(lambda tx: operator.rerun_in_tx(tx, registry, run_id, now=now_ms()))
        self.dispatcher.wake()
        return run

    async def cancel_runs(self, run_ids: list[str], *, reason: str) -> int:
        """Bulk cancel, 100 runs per transaction; returns how many were still running."""
        ctx, cancelled = self.context, 0
        for start in range(0, len(run_ids), 100):
            chunk = run_ids[start:start + 100]

            def cancel_chunk(tx: Tx) -> int:
                now = now_ms()
                done = 0
                for run_id in chunk:
                    before = interpreter.cancel_run(tx, ctx, run_id, now=now, reason=reason)
                    done += before is not None and not RunStatus(before.status).is_final
                return done

            cancelled += await self._write(cancel_chunk)
        self.dispatcher.wake()
        return cancelled

    async def rerun_runs(self, run_ids: list[str]) -> list[str]:
        """Bulk rerun, 100 runs per transaction; returns the new run ids (skipping runs that cannot rerun)."""
        registry, started = self.registry, []
        for start in range(0, len(run_ids), 100):
            chunk = run_ids[start:start + 100]

            def rerun_chunk(tx: Tx) -> list[str]:
                now, ids = now_ms(), []
                for run_id in chunk:
                    try:
                        ids.append(operator.rerun_in_tx(tx, registry, run_id, now=now).run_id)
                    except operator.OperatorError as exc:
                        log.warning("bulk rerun skipped run %s: %s", run_id, exc)
                return ids

            started += await self._write(rerun_chunk)
        self.dispatcher.wake()
        return started

    async def replay_event(self, internal_id: str) -> str:
        """Send a stored event again as a new event; returns the new event's internal id."""
        event = await self.store.read(ops.get_event, internal_id)
        if event is None:
            raise operator.OperatorError(404, f"event {internal_id} not found")
        body = {"name": event.name, "data": event.data, "user": event.user, "v": event.v}
        return (await self.ingest(body, allow_internal=True))[0]

    async def add_app(self, url: str) -> str | None:
        """Sync an app by URL now (and on every later sync round); returns the error, if any."""
        return await self.sync_url(url)

    async def remove_app(self, name: str) -> bool:
        app = await self.store.read(ops.get_app, name)
        if app is None:
            return False
        if app.url in self._known_urls:  # or the next sync round would bring it back
            self._known_urls.remove(app.url)
        removed = await self.store.write(lambda tx: operator.remove_app_in_tx(tx, name, now=now_ms()))
        await self.reload_registry()
        return removed

    async def send_signal(self, signal: str, data: Any) -> str | None:
        """Resume the run waiting for this signal; its run id, or None when no run waits for it."""
        run_id, jobs = await self.store.write(lambda tx: signals.deliver(tx, signal, data, now=now_ms()))
        if jobs:
            self.dispatcher.wake()
        return run_id

    async def checkpoint(self, run_id: str, body: Any) -> int:
        """Save steps a JS v4 SDK ran inside a call still in flight. Raises CheckpointError."""
        return await self._write(lambda tx: checkpoint.save_checkpoint(tx, run_id, body, now=now_ms()))

    async def checkpoint_new_run(self, body: Any) -> endpoints.Created:
        """A durable endpoint's run starts (JS v4 sync mode). Raises CheckpointError."""
        new = endpoints.parse_new_run(body)
        ctx = self.context
        created, changed = await self._write(lambda tx: endpoints.create_run(tx, ctx, new, now=now_ms()))
        if changed:
            await self.reload_registry()
        self._after_endpoint_report(created.settled)
        return created

    async def checkpoint_steps(self, run_id: str, body: Any) -> None:
        """More of a durable endpoint's steps, maybe its end or its hand-over. Raises CheckpointError."""
        ctx = self.context
        settled = await self._write(lambda tx: endpoints.save_steps(tx, ctx, run_id, body, now=now_ms()))
        self._after_endpoint_report(settled)

    def _after_endpoint_report(self, settled: interpreter.Settled | None) -> None:
        if settled is not None:  # the run was handed over (or ended): its queued work goes to the dispatcher
            self.dispatcher.wake()

    # -- run progress ----------------------------------------------------------------

    async def _write(self, fn: Any, *args: Any) -> Any:
        """A store write whose progress notes are published once it committed."""
        collected, notes = progress.collecting(fn)
        result = await self.store.write(collected, *args)
        if notes:
            self.progress.publish(notes)
        return result

    def _announce_call(self, run: Any, job: Job) -> None:
        if job.step_id != DISCOVERY_STEP:
            # A planned step (parallel or v4's one-step-per-call) is about to run.
            step = progress.step_info(job.step_id, None, "StepPlanned", job.attempt)
            self.progress.publish([("step.started", run.run_id, run.function_slug, RunStatus.RUNNING.value,
                                    {"step": step})])
        elif not run.stack and job.attempt == 0 and not run.pending_steps:
            self.progress.publish([("run.started", run.run_id, run.function_slug, RunStatus.RUNNING.value, {})])

    def _app_of(self, slug: str) -> str | None:
        fn = self.registry.by_slug.get(slug)
        return fn.app_name if fn else None

    # -- jobs ----------------------------------------------------------------------

    async def _handle_job(self, job: Job, state: Any = None) -> tuple[Job, Any] | None:
        """Do one due job; returns a follow-up call of the same run for this worker to make next."""
        ctx = self.context
        if job.kind == JobKind.CALL.value:
            return await self._call_once(job, ctx, state)
        if job.kind == JobKind.WAKE.value:  # one at a time only when the bulk path could not apply it
            settled = await self._write(lambda tx: interpreter.wake_sleep(tx, ctx, job, now=now_ms()))
            for next_job in settled.next_jobs:
                self.dispatcher.adopt(next_job, settled.next_state)
        elif job.kind == JobKind.STEP_REQUEST.value:
            await self._handle_step_request(job, ctx)
        elif job.kind in TIMER_KINDS:
            await self._write(lambda tx: _fire_timer(tx, ctx, job, now_ms()))
        elif job.kind in (JobKind.QSTASH_DELIVERY.value, JobKind.QSTASH_SCHEDULE.value) and self.qstash:
            await self.qstash.handle_job(job, self.session)
        else:
            log.error("unknown job kind %r (job %s); dropping it", job.kind, job.id)
            await self.store.write(ops.release_job, job)
        self.dispatcher.wake()
        return None

    async def _handle_step_request(self, job: Job, ctx: interpreter.EngineContext) -> None:
        """Make the request a step asked the server to make (step.ai.infer, step.fetch), then resume the run."""
        run = await self.store.read(ops.get_run, job.run_id)
        fn = None if run is None else (ctx.registry.by_id.get(run.function_id)
                                       or await self.store.read(ops.get_function, run.function_id))
        if run is None or fn is None or RunStatus(run.status).is_final:
            await self.store.write(ops.release_job, job)
            return
        payload = job.payload or {}
        result = await step_requests.perform(self.session, payload.get("op", ""), payload.get("opts"))
        if result.error is not None:
            log.warning("step %s of run %s: %s", payload.get("display_name") or job.step_id, job.run_id,
                        result.error["message"])
        settled = await self.store.write(
            lambda tx: interpreter.settle_step_request(tx, ctx, job, fn, result, now=now_ms()))
        for next_job in settled.next_jobs:
            self.dispatcher.adopt(next_job, settled.next_state)

    def _apply_due_timers(self, tx: Tx, due: list[Job], now: int) -> None:
        """Apply due timers (selected FOR UPDATE by the dispatcher) inside its leasing transaction.

        Sleeps that are over (the bulk of a burst) take a few statements for the whole batch; the
        rarer kinds go one by one, each in a savepoint so one that fails leaves the others applied."""
        wakes = [job for job in due if job.kind == JobKind.WAKE.value]
        if wakes:
            resume_sleeps(tx, wakes, now=now)
        others = [job for job in due if job.kind != JobKind.WAKE.value]
        ops.take_leases(tx, others, owner=self.dispatcher.owner, until=now + self.dispatcher.lease_ms)
        ctx = self.context
        ctx.handoff = None  # calls these timers queue are leased by the dispatcher right after
        for job in others:
            tx.execute("SAVEPOINT one_timer")
            try:
                _fire_timer(tx, ctx, job, now)
            except Exception:
                log.exception("timer job %s (%s) failed; it is retried when its lease lapses", job.id, job.kind)
                tx.execute("ROLLBACK TO SAVEPOINT one_timer")
            tx.execute("RELEASE SAVEPOINT one_timer")

    async def _call_once(self, job: Job, ctx: interpreter.EngineContext, state: Any) -> Any:
        if state is None:
            state = await self.store.read(_load_call_state, job.run_id)
        if state is None:
            await self.store.write(ops.release_job, job)
            return
        run, memos = state
        if RunStatus(run.status).is_final:
            await self.store.write(ops.release_job, job)
            return
        fn = ctx.registry.by_id.get(run.function_id)
        if fn is None:
            fn = await self.store.read(ops.get_function, run.function_id)
        if fn is None:
            error = interpreter.server_error(f"function {run.function_slug} no longer exists")
            await self._write(
                lambda tx: interpreter.finish_run(tx, ctx, run, RunStatus.FAILED, error=error, now=now_ms(), keep_job=None)
            )
            return
        self._announce_call(run, job)
        started = now_ms()
        if job.step_id == DISCOVERY_STEP and job.attempt == 0 and not run.stack:
            run_log.info("run started", extra={"run_id": run.run_id, "function": fn.slug})
        result = await self.executor.call(run, fn, job, memos)
        await self._note_app_health(fn, result)
        settled = await self._write(
            lambda tx: interpreter.settle_call(tx, ctx, job, fn, result, started_at=started, now=now_ms(),
                                               sent=(run.stack, memos))
        )
        _log_settled(run, fn, job, settled)
        if not settled.next_jobs:
            return None
        first, *others = settled.next_jobs
        for other in others:
            self.dispatcher.adopt(other, settled.next_state)
        return first, settled.next_state

    # -- app sync ------------------------------------------------------------------

    def _remember_url(self, url: str) -> None:
        if "://" not in url:
            url = "http://" + url
        if url not in self._known_urls:
            self._known_urls.append(url)

    async def register(self, body: Any, *, remote_url_hint: str | None = None, connect: bool = False) -> SyncOutcome:
        now = now_ms()
        try:
            reg = parse_registration(body, now=now, max_functions=self.options.limits.max_functions_per_sync,
                                     connect=connect)
        except SyncError as exc:
            message = str(exc)
            url = body.get("url") if isinstance(body, dict) else None
            if is_app_url(url):  # remember why this app's sync failed (never for a malformed URL)
                stored = refused_functions_text(url, message)  # the same words the sync's own check records
                await self.store.write(lambda tx: ops.set_app_error(tx, url=url, error=stored, at=now))
            return SyncOutcome(400, {"error": message, "status": 400})
        if self.executor is not None and self.executor.verify_keys and not connect and _offers_trust_probe(body):
            # Cloud mode: an app that would not check our signatures, or would sign its answers with
            # another key, is refused now rather than failing every call of every run later.
            # (A Connect worker is authenticated by its WebSocket handshake instead.)
            problem = await self.executor.check_trust(reg.app.url)
            if problem:
                message = f"sync refused: {problem}"
                log.warning("%s", message)
                await self.store.write(lambda tx: ops.set_app_error(tx, url=reg.app.url, error=message, at=now))
                return SyncOutcome(400, {"error": message, "status": 400})
        functions = await self.store.write(_store_registration, reg, now)
        modified = functions is not None
        if modified:
            # Loaded in the sync's own transaction. The API lists them from the commit on, a moment
            # before this swap: an event matching nothing meanwhile re-checks the stored functions
            # (ingest._fresher_registry), as on a replica that has not reloaded yet.
            async with self._reload_lock:
                self.registry = Registry.build(functions)
            self.dispatcher.wake()
        if not connect:  # a Connect app has no URL to re-sync: its workers sync as they connect
            self._remember_url(reg.app.url)
        if modified:
            app_log.info("app %s synced: %d function(s) at %s", reg.app.name, len(reg.functions), reg.app.url,
                         extra={"app": reg.app.name})
        return SyncOutcome(
            200, {"ok": True, "modified": modified, "app_id": reg.app.name, "sync_id": reg.checksum[:32], "status": 200}
        )

    def _app_request_headers(self, body: bytes) -> dict[str, str]:
        """Headers of a sync or health check sent to an app. Cloud-mode SDKs refuse unsigned ones
        (401, and the Python SDK logs an error for each)."""
        headers = {"X-Inngest-Server-Kind": self.options.server_kind}
        if self.options.signing_key:
            headers["X-Inngest-Signature"] = sign_body(body, self.options.signing_key)
        return headers

    async def sync_url(self, url: str) -> str | None:
        """PUT the app so it registers; returns an error message when it could not be reached."""
        self._remember_url(url)
        assert self.session is not None
        body = canonical_json({"url": url})
        headers = {**self._app_request_headers(body), "Content-Type": "application/json"}
        try:
            async with self.session.put(
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=30, sock_connect=5),
            ) as response:
                status, text = response.status, (await response.text(errors="replace"))[:300]
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            message = unreachable_text(url, exc)
            await self.health.failed(url, message)
            return message
        # The Python SDK answers 200 even when its register call failed, passing our error body through.
        status = max(status, _relayed_status(text))
        if status >= 400:
            message = refused_sync_text(url, status, text, own_url=self.options.own_url,
                                        signed=bool(self.options.signing_key))
            await self.health.failed(url, message)
            return message
        await self.health.recovered(url, record=False)  # the registration cleared the error
        return None

    async def check_app(self, url: str) -> None:
        """The periodic check of an app we do not re-sync: is it still there?"""
        try:
            async with self.session.get(url, headers=self._app_request_headers(b""),
                                        timeout=aiohttp.ClientTimeout(total=10, sock_connect=5)) as response:
                status, text = response.status, (await response.text(errors="replace"))[:2000]
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            await self.health.failed(url, unreachable_text(url, exc))
            return
        if status >= 300:
            await self.health.failed(url, refused_check_text(url, status, text, signed=bool(self.options.signing_key)))
        else:
            await self.health.recovered(url)

    async def _note_app_health(self, fn: Function, result: Any) -> None:
        """Failed calls mark the function's app in /v1/apps; the next good call clears it."""
        app = await self._app_url(fn)
        if app is None:
            return
        if isinstance(result, TransportError):
            await self.health.failed(app, bad_call_text(app, result.message), app=fn.app_name)
        elif self.health.is_failing(app):
            await self.health.recovered(app, app=fn.app_name)

    async def _app_url(self, fn: Function) -> str | None:
        url = self._app_urls.get(fn.app_name)
        if url is None:
            found = await self.store.read(ops.get_app, fn.app_name)
            if found is None:
                return None
            url = self._app_urls[fn.app_name] = found.url
        return url

    async def _sync_loop(self) -> None:
        first = True
        while True:
            try:
                if not self.options.single_node:  # safety net beside the replicas' notifications
                    await self.reload_registry()
                apps = await self.store.read(ops.list_apps)
                if self.options.discovery and not apps and not self._known_urls:
                    for url in await self._discover():
                        self._remember_url(url)
                errored = {a.url for a in apps if a.error}
                for url in list(self._known_urls):
                    if first or self.options.poll or url in errored:
                        await self.sync_url(url)
                    else:
                        await self.check_app(url)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("app sync round failed")
            first = False
            await asyncio.sleep(self.options.poll_interval_s)

    async def _discover(self) -> list[str]:
        ports = [p for p in DISCOVERY_PORTS if p != self.options.own_port]

        async def probe(port: int) -> list[str]:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout=0.3)
                writer.close()
            except (OSError, asyncio.TimeoutError):
                return []
            found = []
            for path in DISCOVERY_PATHS:
                url = f"http://127.0.0.1:{port}{path}"
                try:
                    async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        is_sdk = "x-inngest-sdk" in resp.headers
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    continue
                if is_sdk:
                    found.append(url)
                    break
            return found

        results = await asyncio.gather(*(probe(p) for p in ports))
        return [url for urls in results for url in urls]


def _offers_trust_probe(body: Any) -> bool:
    capabilities = body.get("capabilities") if isinstance(body, dict) else None
    return isinstance(capabilities, dict) and capabilities.get("trust_probe") == "v1"


def _log_settled(run: Run, fn: Function, job: Job, settled: interpreter.Settled) -> None:
    """One line per run that ended or will retry, with its run id."""
    fields = {"run_id": run.run_id, "function": fn.slug}
    if settled.retry_reason:
        run_log.warning("retrying: %s", settled.retry_reason, extra={**fields, "attempt": job.attempt + 1})
    if settled.run_finished:
        took = _duration(now_ms() - (run.started_at or run.created_at))
        if settled.run_finished == RunStatus.COMPLETED.value:
            run_log.info("run completed in %s", took, extra=fields)
        else:
            run_log.warning("run %s after %s: %s", settled.run_finished.lower(), took, settled.reason, extra=fields)


def _duration(ms: int) -> str:
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def _relayed_status(text: str) -> int:
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return 0
    status = body.get("status") if isinstance(body, dict) else None
    return status if isinstance(status, int) and not isinstance(status, bool) else 0


# Jobs that need no call to an app; the dispatcher applies them in bulk (see _apply_due_timers).
TIMER_KINDS = (JobKind.WAKE.value, JobKind.WAIT_TIMEOUT.value, JobKind.CRON.value, *admission.JOB_KINDS)


def _fire_timer(tx: Tx, ctx: interpreter.EngineContext, job: Job, now: int) -> None:
    """Apply one leased timer job other than a sleep's wake-up."""
    if job.kind == JobKind.WAIT_TIMEOUT.value:
        waits.expire_wait(tx, job, now=now)
    elif job.kind == JobKind.CRON.value:
        cron.fire_cron(tx, ctx.registry, job, now=now)
    else:  # debounce/batch windows, start/finish timeouts
        admission.fire_timer(tx, ctx.registry, job, now=now)


def _load_call_state(tx: Tx, run_id: str) -> tuple[Any, dict[str, Any]] | None:
    run = ops.get_run(tx, run_id)
    if run is None:
        return None
    return run, ops.completed_memos(tx, run_id)


def _store_registration(tx: Tx, reg: Registration, now: int) -> list | None:
    """Store a sync; returns every function when something changed, else None."""
    existing = ops.get_app(tx, reg.app.name)
    if existing and existing.checksum == reg.checksum and not existing.error:
        tx.execute("UPDATE apps SET synced_at = ? WHERE name = ?", (now, reg.app.name))
        return None
    if existing:
        reg.app.created_at = existing.created_at
    ops.delete_placeholder_app(tx, reg.app.url)
    ops.upsert_app(tx, reg.app)
    before = {f.slug: f.version for f in ops.load_functions(tx, include_archived=True)}
    archived = ops.replace_app_functions(tx, reg.app.name, reg.functions, now)
    for fid in archived:
        ops.delete_jobs_by_prefix(tx, cron.cron_job_prefix(fid))
    for fn in reg.functions:
        if before.get(fn.slug) != fn.version or fn.slug not in before:
            cron.rearm_crons(tx, fn, now)
    ops.notify_replicas(tx, ops.FUNCTIONS_CHANNEL)
    return ops.load_functions(tx)
