"""Jinja2 environment and the small formatting helpers the templates use."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse

from lockgate.protocol.timeparse import iso_ms

LARGE_JSON = 600  # characters: larger values start collapsed


def when(ms: int | None) -> str:
    if ms is None:
        return "—"
    return iso_ms(ms).replace("T", " ").rstrip("Z") + " UTC"


def duration(ms: int | float | None) -> str:
    if ms is None:
        return "—"
    ms = int(ms)
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    if ms < 3_600_000:
        return f"{ms // 60_000} min {ms % 60_000 // 1000} s"
    return f"{ms // 3_600_000} h {ms % 3_600_000 // 60_000} min"


def pretty(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return repr(value)


def local_input(ms: int | None) -> str:
    """A value for <input type=datetime-local> (UTC)."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M")


def size(text: str) -> str:
    n = len(text.encode())
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB"


def build_environment() -> Environment:
    env = Environment(loader=PackageLoader("lockgate.interfaces.dashboard", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=when, duration=duration, pretty=pretty, size=size, local_input=local_input)
    env.globals["LARGE_JSON"] = LARGE_JSON
    return env


class Renderer:
    def __init__(self, common: Any) -> None:
        self.env = build_environment()
        self.common = common  # request -> dict of values every page needs (csrf token, mode, ...)

    def page(self, request: Any, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(request=request, **{**self.common(request), **values})
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})
