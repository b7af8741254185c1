"""The dashboard: server-rendered pages at `/` on the API port, with htmx for live parts.

Pages read through the same store functions as REST v1 (`run_search`, `operations`, the health
snapshot) and act through the same engine calls as its POST endpoints, so a figure on a page and
in the API never disagree. Every page works with JavaScript off: actions are plain HTML forms
(POST, then a redirect), and htmx (vendored in static/) only adds live refresh and in-place swaps.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from lockgate.interfaces.dashboard import live
from lockgate.interfaces.dashboard.actions import Actions
from lockgate.interfaces.dashboard.pages import Pages
from lockgate.interfaces.dashboard.render import Renderer
from lockgate.interfaces.dashboard.session import CSRF_FIELD, DashboardAuth

STATIC = Path(__file__).parent / "static"
HTMX = "/ui/static/htmx-2.0.11.min.js"
HTMX_SSE = "/ui/static/htmx-ext-sse-2.2.4.min.js"


def routes(engine, auth: DashboardAuth, *, kind: str) -> list:
    def common(request: Request) -> dict:
        return {"csrf": auth.csrf_token(request), "csrf_field": CSRF_FIELD, "kind": kind,
                "login_required": auth.required, "signed_in": auth.signed_in(request),
                "htmx": HTMX, "htmx_sse": HTMX_SSE, "path": request.url.path}

    renderer = Renderer(common)
    pages = Pages(engine, renderer)
    actions = Actions(engine, renderer, auth)

    def guarded(handler):
        """Pages need a session in `start`; without one, go to the login page."""
        async def page(request: Request) -> Response:
            if not auth.signed_in(request):
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={target}", status_code=303)
            return await handler(request)
        return page

    async def home(request: Request) -> Response:
        return RedirectResponse("/runs", status_code=303)

    async def live_stream(request: Request) -> Response:
        if not auth.signed_in(request):
            return Response("sign in first", status_code=401)
        return live.stream(engine, request, request.query_params.get("run") or None)

    page_routes = [
        ("/", home),
        ("/runs", pages.runs),
        ("/runs/{run_id}", pages.run),
        ("/events", pages.events),
        ("/events/{event_id}", pages.event),
        ("/functions", pages.functions),
        ("/functions/{function_id}", pages.function),
        ("/apps", pages.apps),
        ("/qstash", pages.qstash),
        ("/status", pages.health),
    ]
    return [
        *[Route(path, guarded(handler), methods=["GET"]) for path, handler in page_routes],
        Route("/login", actions.login_page, methods=["GET"]),
        Route("/login", actions.login, methods=["POST"]),
        Route("/logout", actions.logout, methods=["POST"]),
        Route("/ui/live", live_stream, methods=["GET"]),
        *actions.routes(),
        Mount("/ui/static", app=StaticFiles(directory=STATIC), name="dashboard-static"),
    ]
