"""Route lookup by the path's first segment.

Starlette tries every route's regular expression in order until one matches. With the dashboard's
routes first, an event sent to `/e/<key>` tried about thirty and a QStash publish over a hundred,
on every request. A route whose path starts with a literal segment can only match paths starting
with that segment, so `IndexedRouter` tries just those (and the few routes that could match
anything), in their original order: the same route wins as before, and 404, 405 and the
trailing-slash redirect are left to Starlette.
"""

from __future__ import annotations

from typing import Any

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, Mount, Route, Router, WebSocketRoute
from starlette.types import Receive, Scope, Send


def first_segment(path: str) -> str:
    """The first segment of a path: "/e/dev" -> "e", "/" -> ""."""
    return path[1:].split("/", 1)[0] if path.startswith("/") else path.split("/", 1)[0]


def _literal_first_segment(route: BaseRoute) -> str | None:
    """The first segment every path this route matches starts with, or None when it may match any path."""
    if isinstance(route, (Route, WebSocketRoute)):
        path = route.path
    elif isinstance(route, Mount) and route.path:
        path = route.path
    else:  # a Host, a Mount at the root, anything else: may match any path
        return None
    segment = first_segment(path)
    return None if "{" in segment else segment


class IndexedRouter(Router):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._index: dict[str, list[BaseRoute]] | None = None
        self._indexed_routes: list[BaseRoute] | None = None
        self._anywhere: list[BaseRoute] = []

    def _candidates(self, path: str) -> list[BaseRoute]:
        if self._index is None or self._indexed_routes is not self.routes or len(self._indexed_routes) != self._count:
            self._build_index()
        assert self._index is not None
        return self._index.get(first_segment(path), self._anywhere)

    def _build_index(self) -> None:
        keys = {_literal_first_segment(route) for route in self.routes} - {None}
        self._index = {key: [r for r in self.routes if _literal_first_segment(r) in (key, None)] for key in keys}
        self._anywhere = [r for r in self.routes if _literal_first_segment(r) is None]
        self._indexed_routes, self._count = self.routes, len(self.routes)

    def lookup(self, scope: Scope) -> tuple[BaseRoute, Scope] | None:
        """The route Starlette would hand this request to: the first full match, else the first
        partial one (the path is known but not for this method: its 405); None when neither."""
        partial = None
        for route in self._candidates(get_route_path(scope)):
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                return route, child_scope
            if match is Match.PARTIAL and partial is None:
                partial = route, child_scope
        return partial

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await super().app(scope, receive, send)
        found = self.lookup(scope)
        if found is None:  # Starlette's own lookup gives the trailing-slash redirect or the 404
            return await super().app(scope, receive, send)
        route, child_scope = found
        if "router" not in scope:
            scope["router"] = self
        scope["route"] = route
        scope.update(child_scope)
        await route.handle(scope, receive, send)
