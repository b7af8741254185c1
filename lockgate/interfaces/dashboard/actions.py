"""The dashboard's POST actions: login, and every button. Each checks the session and the CSRF token,
then calls the same engine function as its REST twin, then redirects (POST/redirect/GET)."""

from __future__ import annotations

from typing import Any, Awaitable, Callable
from urllib.parse import quote, urlencode

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from lockgate.engine import endpoints, run_search
from lockgate.engine.engine import FunctionNotFound
from lockgate.engine.ingest import EventValidationError
from lockgate.engine.operator import OperatorError
from lockgate.interfaces.dashboard.pages import Pages
from lockgate.interfaces.dashboard.session import COOKIE, CSRF_FIELD, SESSION_TTL_S, DashboardAuth
from lockgate.interfaces.errors import ApiError
from lockgate.interfaces.run_filters import FILTER_PARAMS, parse_run_filter
from lockgate.models import now_ms
from lockgate.qstash import admin
from lockgate.qstash.config import ConfigError
from lockgate.qstash.publish import NotFound
from lockgate.store import operations as ops
from lockgate.store import qstash_operations as qops

MAX_FORM = 3 * 1024 * 1024 + 65536  # an event may be 3 MiB


def redirect(request: Request, url: str) -> Response:
    """After an action: htmx follows HX-Redirect with a page load; a plain form follows the 303."""
    if request.headers.get("hx-request"):
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def with_notice(url: str, notice: str) -> str:
    return url + ("&" if "?" in url else "?") + urlencode({"notice": notice})


def local_path(target: str | None, default: str = "/runs") -> str:
    """Only same-site paths (no //host or scheme) may be redirect targets."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


class Actions:
    def __init__(self, engine: Any, renderer: Any, auth: DashboardAuth) -> None:
        self.engine = engine
        self.store = engine.store
        self.render = renderer
        self.auth = auth

    def routes(self) -> list[Route]:
        post = [
            ("/ui/events/send", self.send_event),
            ("/ui/events/{event_id}/replay", self.replay_event),
            ("/ui/runs/bulk", self.bulk),
            ("/ui/functions/{function_id}/invoke", self.invoke),
            ("/ui/runs/{run_id}/cancel", self.cancel_run),
            ("/ui/runs/{run_id}/rerun", self.rerun_run),
            ("/ui/apps/add", self.add_app),
            ("/ui/apps/{name:path}/resync", self.resync_app),
            ("/ui/apps/{name:path}/remove", self.remove_app),
            ("/ui/qstash/dlq", self.dlq),
            ("/ui/qstash/schedules/{schedule_id}/{action}", self.schedule),
            ("/ui/qstash/queues/{name}/{action}", self.queue),
        ]
        return [Route(path, self._guard(handler), methods=["POST"]) for path, handler in post]

    def _guard(self, handler: Callable[[Request, Any], Awaitable[Response]]):
        async def action(request: Request) -> Response:
            if not self.auth.signed_in(request):
                return self.render.page(request, "message.html", status=401, title="Sign in first",
                                        message="Your session has expired or you are not signed in.")
            form = await request.form(max_part_size=MAX_FORM)
            if not self.auth.csrf_ok(request, form.get(CSRF_FIELD)):
                return self.render.page(request, "message.html", status=403, title="Refused",
                                        message="This action carried no valid CSRF token. Reload the page and try"
                                                " again.")
            return await handler(request, form)
        return action

    # -- login -----------------------------------------------------------------------

    async def login_page(self, request: Request, *, error: str | None = None, status: int = 200) -> Response:
        target = local_path(request.query_params.get("next"))
        if not self.auth.required:
            return RedirectResponse(target, status_code=303)
        return self.render.page(request, "login.html", status=status, next=target, error=error)

    async def login(self, request: Request) -> Response:
        form = await request.form()
        target = local_path(form.get("next"))
        if not self.auth.required:
            return RedirectResponse(target, status_code=303)
        if not self.auth.login_ok(str(form.get("secret") or "")):
            return self.render.page(request, "login.html", status=401, next=target,
                                    error="That is neither the admin password nor the dashboard token.")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, self.auth.new_session(), max_age=SESSION_TTL_S, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
        return response

    async def logout(self, request: Request) -> Response:
        form = await request.form()
        if not self.auth.csrf_ok(request, form.get(CSRF_FIELD)):
            return Response("missing CSRF token", status_code=403)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- events ----------------------------------------------------------------------

    async def send_event(self, request: Request, form: Any) -> Response:
        text = str(form.get("event") or "")
        try:
            body = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            error = f"The payload is not valid JSON: {exc}"
        else:
            try:
                ids = await self.engine.ingest(body)
            except EventValidationError as exc:
                error = f"The event was refused: {exc}"
            else:
                target = f"/events/{ids[0]}" if len(ids) == 1 else "/events"
                return redirect(request, with_notice(target, f"sent {len(ids)} event(s)"))
        page = Pages(self.engine, self.render)
        return await page.events(request, form_error=error, form_text=text, status=400)

    async def replay_event(self, request: Request, form: Any) -> Response:
        try:
            new_id = await self.engine.replay_event(request.path_params["event_id"])
        except OperatorError as exc:
            return self._failed(request, exc.status, "Cannot replay", str(exc))
        return redirect(request, with_notice(f"/events/{new_id}", "replayed as a new event"))

    # -- runs ------------------------------------------------------------------------

    async def cancel_run(self, request: Request, form: Any) -> Response:
        run_id = request.path_params["run_id"]
        if await self.engine.cancel_run(run_id, reason="cancelled from the dashboard") is None:
            return self._failed(request, 404, "Run not found", f"No run with id {run_id}.")
        return redirect(request, with_notice(f"/runs/{quote(run_id)}", "cancelled"))

    async def rerun_run(self, request: Request, form: Any) -> Response:
        try:
            run = await self.engine.rerun(request.path_params["run_id"])
        except OperatorError as exc:
            return self._failed(request, exc.status, "Cannot rerun", str(exc))
        return redirect(request, with_notice(f"/runs/{run.run_id}", f"rerun of {request.path_params['run_id']}"))

    async def bulk(self, request: Request, form: Any) -> Response:
        action = form.get("action")
        if action not in ("cancel", "rerun"):
            return self._failed(request, 400, "Unknown action", "Bulk actions are cancel and rerun.")
        filters = {name: form.get(name) for name in FILTER_PARAMS if form.get(name)}
        if form.getlist("status"):
            filters["status"] = form.getlist("status")
        try:
            wanted = parse_run_filter(filters)
        except ApiError as exc:
            return self._failed(request, 400, "Bad filter", exc.message)
        cancelling = action == "cancel"
        ids = await self.store.read(lambda tx: run_search.select_run_ids(tx, wanted.query(tx),
                                                                         unfinished_only=cancelling))
        back = "/runs" + (f"?{wanted.query_string()}" if not wanted.empty else "")
        if form.get("confirm") != "yes":
            return self.render.page(request, "confirm.html", action=action, count=len(ids), wanted=wanted,
                                    back=back, limit=run_search.BULK_LIMIT)
        if cancelling:
            done = await self.engine.cancel_runs(ids, reason="cancelled in bulk from the dashboard")
            notice = f"cancelled {done} run(s)"
        else:
            notice = f"started {len(await self.engine.rerun_runs(ids))} rerun(s)"
        return redirect(request, with_notice(back, notice))

    # -- functions -------------------------------------------------------------------

    async def invoke(self, request: Request, form: Any) -> Response:
        """Start a run now with a JSON payload ({"data": ..., "user": ...}), as POST /v1/functions/{id}/invoke."""
        ref, text = request.path_params["function_id"], str(form.get("payload") or "")
        try:
            body = orjson.loads(text) if text.strip() else {}
        except orjson.JSONDecodeError as exc:
            error = f"The payload is not valid JSON: {exc}"
        else:
            if not isinstance(body, dict) or not set(body) <= {"data", "user"} or not all(
                    isinstance(body.get(k) or {}, dict) for k in ("data", "user")):
                error = 'The payload must be a JSON object {"data": {...}, "user": {...}} (both optional).'
            else:
                try:
                    outcome = await self.engine.invoke(ref, body.get("data"), user=body.get("user"))
                except FunctionNotFound as exc:
                    return self._failed(request, 404, "Function not found", str(exc))
                if outcome.run_id:
                    return redirect(request, with_notice(f"/runs/{outcome.run_id}", "invoked"))
                error = f"No run was started: {outcome.skipped}"
        return await Pages(self.engine, self.render).function(request, invoke_error=error, invoke_text=text,
                                                              status=400)

    # -- apps ------------------------------------------------------------------------

    async def add_app(self, request: Request, form: Any) -> Response:
        url = str(form.get("url") or "").strip()
        if not url.startswith(("http://", "https://")):
            error = "Enter the app's serve URL, such as http://127.0.0.1:8000/api/inngest."
        else:
            error = await self.engine.add_app(url)
        if error:
            return await Pages(self.engine, self.render).apps(request, error=error, status=400)
        return redirect(request, with_notice("/apps", f"synced {url}"))

    async def resync_app(self, request: Request, form: Any) -> Response:
        app = await self.store.read(ops.get_app, request.path_params["name"])
        if app is None:
            return self._failed(request, 404, "App not found", f"No app named {request.path_params['name']}.")
        error = endpoints.NOT_SYNCED if endpoints.is_endpoint_app(app) else await self.engine.add_app(app.url)
        return redirect(request, with_notice("/apps", f"sync failed: {error}" if error else f"re-synced {app.name}"))

    async def remove_app(self, request: Request, form: Any) -> Response:
        name = request.path_params["name"]
        if not await self.engine.remove_app(name):
            return self._failed(request, 404, "App not found", f"No app named {name}.")
        return redirect(request, with_notice("/apps", f"removed {name}; its functions are archived"))

    # -- QStash ----------------------------------------------------------------------

    async def dlq(self, request: Request, form: Any) -> Response:
        only = request.query_params.get("only")  # a row's own Retry button
        ids = [only] if only else [str(i) for i in form.getlist("dlq_id")]
        if not ids:
            return redirect(request, with_notice("/qstash?tab=dlq", "select at least one message"))
        if form.get("action") == "delete":
            n = await self.store.write(qops.delete_dlq, ids)
            return redirect(request, with_notice("/qstash?tab=dlq", f"deleted {n} message(s)"))
        try:
            done = await self.engine.qstash.retry_dlq(ids, [])
        except ConfigError as exc:
            return self._failed(request, 400, "Cannot retry", str(exc))
        return redirect(request, with_notice("/qstash?tab=dlq", f"retried {len(done)} message(s) as new messages"))

    async def schedule(self, request: Request, form: Any) -> Response:
        schedule_id, action = request.path_params["schedule_id"], request.path_params["action"]
        if action == "delete":
            await self.engine.qstash.delete_schedule(schedule_id)
        elif action in ("pause", "resume"):
            if not await self.store.write(qops.set_schedule_paused, schedule_id, action == "pause"):
                return self._failed(request, 404, "Schedule not found", f"No schedule {schedule_id}.")
        else:
            return self._failed(request, 404, "Unknown action", "Schedules can be paused, resumed or deleted.")
        return redirect(request, with_notice("/qstash?tab=schedules", f"{action}d {schedule_id}"))

    async def queue(self, request: Request, form: Any) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        if action not in ("pause", "resume"):
            return self._failed(request, 404, "Unknown action", "Queues can be paused or resumed.")
        try:
            await self.store.write(admin.set_queue_paused, name, action == "pause", now_ms())
        except NotFound as exc:
            return self._failed(request, 404, "Queue not found", str(exc))
        self.engine.qstash.wake()
        return redirect(request, with_notice("/qstash?tab=queues", f"{action}d queue {name}"))

    def _failed(self, request: Request, status: int, title: str, message: str) -> Response:
        return self.render.page(request, "message.html", status=status, title=title, message=message)
