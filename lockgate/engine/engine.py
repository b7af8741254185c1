"""The engine facade: what the interfaces call, and the loops that keep work moving."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from lockgate.engine import checkpoint, cron, interpreter, waits
from lockgate.engine.flow import admission
from lockgate.engine.dispatcher import LEASE_MS, Dispatcher, Timers
from lockgate.engine.executor import APP_KEEPALIVE_S, Executor, connection_reuse_trace
from lockgate.engine.ingest import Handoff, ingest_in_tx, parse_events
from lockgate.engine.registry import Registry
from lockgate.engine.resume import resume_sleeps
from lockgate.engine.replicas import Membership, default_replica_name, replica_owner
from lockgate.engine.sync import DISCOVERY_PATHS, DISCOVERY_PORTS, Registration, SyncError, parse_registration
from lockgate.protocol.jsoncanon import canonical_json
from lockgate.protocol.signing import sign_body
from lockgate.models import Job, JobKind, RunStatus, now_ms
from lockgate.store import operations as ops
from lockgate.store.base import Store, Tx

log = logging.getLogger("lockgate.engine")


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
    lease_ms: int = LEASE_MS
    single_node: bool = True  # SQLite: leases of a previous process lapse at start-up
    replica_name: str | None = None  # several replicas: stable across restarts (default host:port)


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
        self.executor: Executor | None = None
        name = self.options.replica_name or default_replica_name(self.options.own_port)
        self.dispatcher = Dispatcher(store, self._handle_job, workers=self.options.workers,
                                     lease_ms=self.options.lease_ms, owner=replica_owner(name),
                                     timers=Timers(TIMER_KINDS, self._apply_due_timers))
        self.membership = Membership(store, self.dispatcher, name=name, replicas=not self.options.single_node,
                                     lease_ms=self.options.lease_ms)
        self._background: list[asyncio.Task] = []
        self._reload_lock = asyncio.Lock()
        self.qstash: Any = None  # lockgate.qstash.service.QStash, attached by the server
        self._known_urls: list[str] = []
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
            connector=aiohttp.TCPConnector(limit=max(200, self.options.workers * 2), limit_per_host=0,
                                           keepalive_timeout=APP_KEEPALIVE_S),
            trace_configs=[connection_reuse_trace()],
        )
        self._fresh_session = aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(force_close=True, limit=0))
        self.executor = Executor(self.session, fresh_session=self._fresh_session, signing_key=self.options.signing_key,
                                 signing_key_fallback=self.options.signing_key_fallback,
                                 server_kind=self.options.server_kind)
        await self.reload_registry()
        if self.options.single_node:
            await self.store.write(ops.release_all_leases)
        await self.membership.start()
        self.store.listen({ops.JOBS_CHANNEL: self.dispatcher.wake, ops.FUNCTIONS_CHANNEL: self._functions_changed})
        await self.dispatcher.start()
        self._background.append(asyncio.create_task(self._sync_loop(), name="lockgate-sync"))
        if self.qstash is not None:
            self._background.append(asyncio.create_task(self.qstash.housekeeping(), name="lockgate-qstash"))

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
        await self.membership.stop()
        for session in (self.session, self._fresh_session):
            if session is not None:
                await session.close()

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

    async def ingest(self, body: Any, *, seed: str | None = None) -> list[str]:
        """Validate, commit and match events; returns their internal ids. Raises EventValidationError."""
        now = now_ms()
        events = parse_events(body, seed=seed, now=now)
        registry = self.registry
        handoff = Handoff(owner=self.dispatcher.owner, lease_ms=self.dispatcher.lease_ms, limit=self.dispatcher.free_slots)
        result = await self.store.write(lambda tx: ingest_in_tx(tx, events, registry, now=now, handoff=handoff))
        for job, run in result.leased:
            self.dispatcher.adopt(job, (run, {}))
        if len(result.run_ids) > len(result.leased) or result.resumed or result.deferred:
            self.dispatcher.wake()
        return [e.internal_id for e in events]

    async def cancel_run(self, run_id: str, *, reason: str = "cancelled through the API") -> Any:
        ctx = self.context
        run = await self.store.write(lambda tx: interpreter.cancel_run(tx, ctx, run_id, now=now_ms(), reason=reason))
        self.dispatcher.wake()
        return run

    async def checkpoint(self, run_id: str, body: Any) -> int:
        """Save steps a JS v4 SDK ran inside a call still in flight. Raises CheckpointError."""
        return await self.store.write(lambda tx: checkpoint.save_checkpoint(tx, run_id, body, now=now_ms()))

    # -- jobs ----------------------------------------------------------------------

    async def _handle_job(self, job: Job, state: Any = None) -> tuple[Job, Any] | None:
        """Do one due job; returns a follow-up call of the same run for this worker to make next."""
        ctx = self.context
        if job.kind == JobKind.CALL.value:
            return await self._call_once(job, ctx, state)
        if job.kind == JobKind.WAKE.value:  # one at a time only when the bulk path could not apply it
            settled = await self.store.write(lambda tx: interpreter.wake_sleep(tx, ctx, job, now=now_ms()))
            for next_job in settled.next_jobs:
                self.dispatcher.adopt(next_job, settled.next_state)
        elif job.kind in TIMER_KINDS:
            await self.store.write(lambda tx: _fire_timer(tx, ctx, job, now_ms()))
        elif job.kind in (JobKind.QSTASH_DELIVERY.value, JobKind.QSTASH_SCHEDULE.value) and self.qstash:
            await self.qstash.handle_job(job, self.session)
        else:
            log.error("unknown job kind %r (job %s); dropping it", job.kind, job.id)
            await self.store.write(ops.release_job, job)
        self.dispatcher.wake()
        return None

    def _apply_due_timers(self, tx: Tx, now: int, limit: int) -> int:
        """Apply up to `limit` due timers inside the dispatcher's leasing transaction; returns how many.

        Sleeps that are over (the bulk of a burst) take a few statements for the whole batch; the
        rarer kinds go one by one, each in a savepoint so one that fails leaves the others applied."""
        wakes = ops.select_due_jobs(tx, now=now, limit=limit, kinds=(JobKind.WAKE.value,))
        if wakes:
            resume_sleeps(tx, wakes, now=now)
        others = ops.lease_due_jobs(tx, owner=self.dispatcher.owner, now=now, limit=limit - len(wakes),
                                    lease_ms=self.dispatcher.lease_ms, kinds=OTHER_TIMER_KINDS) if limit > len(wakes) else []
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
        return len(wakes) + len(others)

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
            error = {"name": "Error", "message": f"function {run.function_slug} no longer exists"}
            await self.store.write(
                lambda tx: interpreter.finish_run(tx, ctx, run, RunStatus.FAILED, error=error, now=now_ms(), keep_job=None)
            )
            return
        started = now_ms()
        result = await self.executor.call(run, fn, job, memos)
        settled = await self.store.write(
            lambda tx: interpreter.settle_call(tx, ctx, job, fn, result, started_at=started, now=now_ms())
        )
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

    async def register(self, body: Any, *, remote_url_hint: str | None = None) -> SyncOutcome:
        now = now_ms()
        try:
            reg = parse_registration(body, now=now)
        except SyncError as exc:
            message = str(exc)
            url = body.get("url") if isinstance(body, dict) else None
            if isinstance(url, str):
                await self.store.write(lambda tx: ops.set_app_error(tx, url=url, error=message, at=now))
            return SyncOutcome(400, {"error": message, "status": 400})
        functions = await self.store.write(_store_registration, reg, now)
        modified = functions is not None
        if modified:
            # Loaded in the sync's own transaction: no window in which the API already lists the
            # new functions but events still match the old registry.
            async with self._reload_lock:
                self.registry = Registry.build(functions)
            self.dispatcher.wake()
        self._remember_url(reg.app.url)
        return SyncOutcome(
            200, {"ok": True, "modified": modified, "app_id": reg.app.name, "sync_id": reg.checksum[:32], "status": 200}
        )

    async def sync_url(self, url: str) -> str | None:
        """PUT the app so it registers; returns an error message when it could not be reached."""
        self._remember_url(url)
        assert self.session is not None
        body = canonical_json({"url": url})
        headers = {"X-Inngest-Server-Kind": self.options.server_kind, "Content-Type": "application/json"}
        if self.options.signing_key:  # cloud-mode SDKs refuse unsigned syncs
            headers["X-Inngest-Signature"] = sign_body(body, self.options.signing_key)
        try:
            async with self.session.put(
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=30, sock_connect=5),
            ) as response:
                status, text = response.status, (await response.text(errors="replace"))[:300]
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            message = f"could not reach the app at {url}: {exc.__class__.__name__}"
            await self.store.write(lambda tx: ops.set_app_error(tx, url=url, error=message, at=now_ms()))
            return message
        # The Python SDK answers 200 even when its register call failed, passing our error body through.
        status = max(status, _relayed_status(text))
        if status >= 400:
            message = f"the app at {url} refused the sync with HTTP {status}: {text}"
            await self.store.write(lambda tx: ops.set_app_error(tx, url=url, error=message, at=now_ms()))
            return message
        return None

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


def _relayed_status(text: str) -> int:
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return 0
    status = body.get("status") if isinstance(body, dict) else None
    return status if isinstance(status, int) and not isinstance(status, bool) else 0


# Jobs that need no call to an app; the dispatcher applies them in bulk (see _apply_due_timers).
OTHER_TIMER_KINDS = (JobKind.WAIT_TIMEOUT.value, JobKind.CRON.value, *admission.JOB_KINDS)
TIMER_KINDS = (JobKind.WAKE.value, *OTHER_TIMER_KINDS)


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
