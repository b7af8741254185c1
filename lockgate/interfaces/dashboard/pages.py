"""The dashboard's GET pages. Each reads through the store functions REST v1 uses."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from lockgate.engine import health_snapshot, run_search
from lockgate.engine.cron import next_fire_times
from lockgate.engine.flow.explain import explained
from lockgate.engine.registry import why_nothing_started
from lockgate.interfaces.errors import ApiError
from lockgate.interfaces.rest_v1 import find_runs
from lockgate.interfaces.run_filters import RunFilterInput, parse_run_filter
from lockgate.models import FINAL_STATUSES, JobKind, RunStatus, now_ms
from lockgate.protocol.qstash_signing import DEV_TOKEN
from lockgate.qstash.render import group_json, message_json, queue_json, schedule_json
from lockgate.store import flow_operations as flow_ops
from lockgate.store import health_operations as hops
from lockgate.store import operations as ops
from lockgate.store import qstash_operations as qops

PAGE = 50
INTERNAL_EVENT_PREFIX = "inngest/"  # events the server sends itself (function.finished, function.failed, ...)
MAX_EVENT_BATCHES = 20  # how far one page looks past internal events for user events
FLOW_KEYS = ("concurrency", "throttle", "rateLimit", "debounce", "batchEvents", "priority", "timeouts", "singleton",
             "idempotency", "cancel")
QSTASH_TABS = ("messages", "logs", "dlq", "schedules", "queues", "groups")


def function_view(fn: Any, counts: dict[str, int], now: int) -> dict[str, Any]:
    triggers = []
    for trig in fn.triggers:
        if trig.get("cron"):
            triggers.append({"cron": trig["cron"]})
        elif trig.get("event"):
            triggers.append({"event": trig["event"], "expression": trig.get("expression")})
    flow = {k: fn.config[k] for k in FLOW_KEYS if fn.config.get(k) not in (None, [], {})}
    return {"fn": fn, "triggers": triggers, "flow": flow, "retries": fn.retries, "counts": counts,
            "total": sum(counts.values()), "next_fires": next_fire_times(fn, now, count=3)}


class Pages:
    def __init__(self, engine: Any, renderer: Any) -> None:
        self.engine = engine
        self.store = engine.store
        self.render = renderer

    # -- runs ------------------------------------------------------------------------

    async def runs(self, request: Request) -> Response:
        try:
            wanted = parse_run_filter(request.query_params)
        except ApiError as exc:
            return await self.runs_page(request, parse_run_filter({}), error=exc.message, status=400)
        return await self.runs_page(request, wanted)

    async def runs_page(self, request: Request, wanted: RunFilterInput, *, error: str | None = None,
                        status: int = 200) -> Response:
        cursor = request.query_params.get("cursor")

        def read(tx):
            page = find_runs(tx, wanted, cursor, PAGE)
            counts = run_search.count_runs(tx, wanted.query(tx))
            functions = ops.load_functions(tx, include_archived=True)
            apps = ops.list_apps(tx)
            return page, counts, functions, apps

        try:
            page, counts, functions, apps = await self.store.read(read)
        except ApiError as exc:  # a bad cursor
            return await self.runs_page(request, parse_run_filter({}), error=exc.message, status=400)
        template = "_runs_table.html" if request.query_params.get("fragment") else "runs.html"
        return self.render.page(request, template, status=status, page=page, counts=counts, wanted=wanted,
                                functions=functions, apps=apps, error=error, cursor=cursor,
                                statuses=[s.value for s in RunStatus], final=FINAL_STATUSES,
                                slugs={f.id: f.slug for f in functions})

    async def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]

        def read(tx):
            run = explained(ops.get_run)(tx, run_id)
            if run is None:
                return None
            return {"run": run, "steps": ops.get_steps(tx, run_id), "jobs": ops.jobs_of_run(tx, run_id),
                    "waits": flow_ops.waits_of_run(tx, run_id), "children": ops.child_runs(tx, run_id),
                    "function": ops.get_function(tx, run.function_id)}

        found = await self.store.read(read)
        if found is None:
            return self.render.page(request, "message.html", status=404, title="Run not found",
                                    message=f"No run with id {run_id}.")
        run = found["run"]
        now = now_ms()
        start = run.created_at
        end = run.ended_at or now
        steps = found["steps"]
        span = max(1, max([end] + [s.ended_at or now for s in steps]) - start)
        rows = []
        for step in steps:
            began = step.started_at if step.started_at is not None else start
            finished = step.ended_at if step.ended_at is not None else (now if step.position is None else began)
            status = step.status
            if run.ended_at is not None and step.ended_at is None and status not in ("completed", "failed"):
                # The run ended (cancelled, timed out, failed elsewhere) while this step slept or waited.
                status, finished = "stopped", max(began, run.ended_at)
            rows.append({"step": step, "status": status, "offset": 100 * (began - start) / span,
                         "width": max(0.6, 100 * (finished - began) / span),
                         "duration": (finished - began) if step.ended_at is not None or status == "stopped" else None,
                         "error": step.memo.get("error") if isinstance(step.memo, dict) and step.status in
                         ("failed", "retrying") else None,
                         "output": step.memo.get("data", step.memo) if isinstance(step.memo, dict) else step.memo})
        sleeps = [j for j in found["jobs"] if j.kind == JobKind.WAKE.value]
        parent = run.correlation_id.split(".", 1)[0] if run.correlation_id else None
        template = "_run_body.html" if request.query_params.get("fragment") else "run.html"
        return self.render.page(request, template, run=run, rows=rows, jobs=found["jobs"], waits=found["waits"],
                                sleeps=sleeps, children=found["children"], function=found["function"],
                                parent=parent, final=run.status in FINAL_STATUSES, now=now, span=span)

    # -- events ----------------------------------------------------------------------

    async def events(self, request: Request, *, form_error: str | None = None, form_text: str | None = None,
                     status: int = 200) -> Response:
        name = request.query_params.get("name") or None
        search = request.query_params.get("search") or None
        cursor = request.query_params.get("cursor")
        before = int(cursor) if cursor and cursor.isdigit() else None
        # On by default: the form sends internal=show always and internal=hide while the box is ticked.
        shown = request.query_params.getlist("internal")
        hide_internal = not shown or "hide" in shown
        if name and name.startswith(INTERNAL_EVENT_PREFIX):
            hide_internal = False  # asked for by name

        def read(tx):
            return _page_of_events(tx, name=name, search=search, before=before, hide_internal=hide_internal)

        events, next_cursor, hidden = await self.store.read(read)
        query = {"name": name or "", "search": search or ""}
        if not hide_internal:
            query["internal"] = "show"
        template = "_events_table.html" if request.query_params.get("fragment") else "events.html"
        # path: also when a refused send (POST /ui/events/send) shows this page again, Events is the current page.
        return self.render.page(request, template, status=status, path="/events", events=events, name=name,
                                search=search, next_cursor=next_cursor, cursor=cursor, form_error=form_error,
                                hide_internal=hide_internal, hidden_internal=hidden,
                                filter_query=urlencode(query),
                                form_text=form_text or '{\n  "name": "app/user.signup",\n  "data": {}\n}')

    async def event(self, request: Request) -> Response:
        event_id = request.path_params["event_id"]

        def read(tx):
            event = ops.get_event(tx, event_id)
            if event is None:
                return None
            return event, explained(ops.runs_of_event)(tx, event_id), flow_ops.skips_of_event(tx, event_id)

        found = await self.store.read(read)
        if found is None:
            return self.render.page(request, "message.html", status=404, title="Event not found",
                                    message=f"No event with id {event_id}.")
        event, runs, skipped = found
        why_nothing = None
        if not runs and not skipped and not event.name.startswith("inngest/"):
            registry = self.engine.registry
            if not registry.match(event.payload()):  # as GET /v1/events/{id} says it
                why_nothing = why_nothing_started(registry, event.name)
        return self.render.page(request, "event.html", event=event, runs=runs, skipped=skipped,
                                why_nothing=why_nothing)

    # -- functions and apps ----------------------------------------------------------

    async def functions(self, request: Request) -> Response:
        functions, counts = await self.store.read(lambda tx: (ops.load_functions(tx), hops.runs_by_function(tx)))
        now = now_ms()
        views = [function_view(fn, counts.get(fn.id, {}), now) for fn in functions]
        return self.render.page(request, "functions.html", views=views, statuses=[s.value for s in RunStatus])

    async def function(self, request: Request, *, invoke_error: str | None = None, invoke_text: str | None = None,
                       status: int = 200) -> Response:
        ref = request.path_params["function_id"]

        def read(tx):
            ids = ops.function_ids_of(tx, slug_or_id=ref)
            if not ids:
                return None
            fn = ops.get_function(tx, ids[0])
            wanted = parse_run_filter({"function": fn.id})
            query = wanted.query(tx)
            recent = run_search.search_runs(tx, query, cursor=None, limit=20).runs
            return fn, recent, run_search.count_runs(tx, query)

        found = await self.store.read(read)
        if found is None:
            return self.render.page(request, "message.html", status=404, title="Function not found",
                                    message=f"No function {ref}.")
        fn, recent, counts = found
        return self.render.page(request, "function.html", status=status,
                                view=function_view(fn, counts.by_status, now_ms()), recent=recent, config=fn.config,
                                invoke_error=invoke_error, invoke_text=invoke_text or '{\n  "data": {}\n}')

    async def apps(self, request: Request, *, error: str | None = None, notice: str | None = None,
                   status: int = 200) -> Response:
        apps, functions = await self.store.read(lambda tx: (ops.list_apps(tx), ops.load_functions(tx)))
        counts: dict[str, int] = {}
        for fn in functions:
            counts[fn.app_name] = counts.get(fn.app_name, 0) + 1
        return self.render.page(request, "apps.html", status=status, apps=apps, counts=counts, error=error,
                                notice=notice)

    # -- QStash ----------------------------------------------------------------------

    async def qstash(self, request: Request) -> Response:
        tab = request.query_params.get("tab", "messages")
        if tab not in QSTASH_TABS:
            tab = "messages"

        def read(tx) -> dict[str, Any]:
            if tab == "messages":
                return {"messages": [dict(message_json(m), state=m.state, retried=m.retried)
                                     for m in qops.recent_messages(tx, PAGE)]}
            if tab == "logs":
                return {"logs": [data for _, data in qops.list_events(tx, {}, from_ms=None, to_ms=None,
                                                                          before_seq=None, count=100)]}
            if tab == "dlq":
                return {"dlq": [data for _, _, data in qops.list_dlq(tx, {}, from_ms=None, to_ms=None, after=None,
                                                                        count=100, newest_first=True)]}
            if tab == "schedules":
                return {"schedules": [schedule_json(s) for s in qops.list_schedules(tx)]}
            if tab == "queues":
                return {"queues": [queue_json(q) for q in qops.list_queues(tx)]}
            return {"groups": [group_json(g) for g in qops.list_url_groups(tx)]}

        data = await self.store.read(read)
        origin = f"{request.url.scheme}://{request.url.netloc}"
        return self.render.page(request, "qstash.html", tab=tab, tabs=QSTASH_TABS, origin=origin,
                                qstash_dev_token=DEV_TOKEN, **data)

    # -- health ----------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        snap = await health_snapshot.snapshot(self.engine)
        points = snap["throughput"]
        peak = max([p["completed"] + p["failed"] + p["cancelled"] for p in points] + [1])
        peak_latency = max([p["mean_ms"] for p in points] + [1.0])
        template = "_health_body.html" if request.query_params.get("fragment") else "health.html"
        return self.render.page(request, template, snap=snap, points=points, peak=peak, peak_latency=peak_latency)


def _page_of_events(tx, *, name: str | None, search: str | None, before: int | None,
                    hide_internal: bool) -> tuple[list, str | None, int]:
    """One page of events, newest first, skipping internal ones when asked; returns the events, the cursor of
    the next page (None at the end) and how many internal events were skipped."""
    events: list = []
    hidden = 0
    for _ in range(MAX_EVENT_BATCHES):
        batch = ops.list_events(tx, name=name, data_contains=search, limit=PAGE, before_seq=before)
        for seq, event in batch:
            before = seq
            if hide_internal and event.name.startswith(INTERNAL_EVENT_PREFIX):
                hidden += 1
                continue
            events.append(event)
            if len(events) == PAGE:
                return events, str(seq), hidden
        if len(batch) < PAGE:
            return events, None, hidden
    return events, (str(before) if before is not None else None), hidden
