"""The server's router finds the same route as Starlette's in-order lookup, for every route it has."""

from __future__ import annotations

import re

import pytest
from starlette.routing import Match, Mount

from lockgate.interfaces.routing import IndexedRouter, first_segment
from lockgate.server import build_app
from lockgate.settings import Settings

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def starlette_lookup(routes, scope):
    """Starlette's Router: every route in order, the first full match, else the first partial one."""
    partial = None
    for route in routes:
        match, child_scope = route.matches(scope)
        if match is Match.FULL:
            return route, child_scope
        if match is Match.PARTIAL and partial is None:
            partial = route, child_scope
    return partial


def scope_for(path: str, method: str = "GET", kind: str = "http") -> dict:
    scope = {"type": kind, "path": path, "root_path": "", "headers": [], "query_string": b""}
    if kind == "http":
        scope["method"] = method
    return scope


@pytest.fixture(scope="module")
def router() -> IndexedRouter:
    settings = Settings.load()
    settings.in_memory = True
    lifecycle, _ = build_app(settings, kind="dev")
    app = lifecycle.app
    while not hasattr(app, "router"):
        app = app.app
    assert isinstance(app.router, IndexedRouter)
    return app.router


def sample_paths(router: IndexedRouter) -> list[str]:
    paths = ["/", "/nope", "/e", "/e/", "/e/dev", "/e/dev/", "/v1", "/v1/", "/v1/runs/x/", "/ui/static/app.css",
             "/ui/static", "/runs/", "/%00", "/v1/nope/deeper"]
    for route in router.routes:
        path = getattr(route, "path", None)
        if path is None:
            continue
        concrete = re.sub(r"\{[^}:]+(:path)?\}", lambda m: "a/b" if m.group(1) else "x1", path)
        if isinstance(route, Mount):
            concrete += "/file.txt"
        paths += [concrete, concrete.rstrip("/") + "/"]
    return paths


def test_every_route_is_found_as_starlette_finds_it(router):
    checked = 0
    for path in sample_paths(router):
        for method in METHODS:
            scope = scope_for(path, method)
            expected = starlette_lookup(router.routes, scope)
            found = router.lookup(scope_for(path, method))
            assert (found and found[0]) is (expected and expected[0]), (method, path)
            assert (found and found[1]) == (expected and expected[1]), (method, path)
            checked += 1
        expected = starlette_lookup(router.routes, scope_for(path, kind="websocket"))
        found = router.lookup(scope_for(path, kind="websocket"))
        assert (found and found[0]) is (expected and expected[0]), ("websocket", path)
    assert checked > 500


def test_the_hot_apis_try_only_their_own_routes(router):
    assert len(router._candidates("/e/dev")) <= 5
    assert all(first_segment(r.path) == "e" for r in router._candidates("/e/dev"))
    assert len(router._candidates("/v1/events/x/runs")) < len(router.routes) // 2


def test_first_segment():
    assert first_segment("/") == ""
    assert first_segment("/e") == "e"
    assert first_segment("/e/dev/x") == "e"
    assert first_segment("") == ""
