"""App sync: validate what an SDK registers, store it, and find apps to sync.

A sync always starts with a PUT to the app; the SDK answers it by POSTing its
function list to /fn/register while our PUT is still open, so the register handler
records success or failure, never the PUT's status (Python SDKs answer 200 either way).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from lockgate.engine import cancellation
from lockgate.engine.flow.config import FlowConfigError, parse_flow
from lockgate.expressions import ExpressionError, compile_expression
from lockgate.models import App, Function
from lockgate.protocol.cron import parse_cron
from lockgate.protocol.jsoncanon import canonical_json
from lockgate.outbound import credentials_problem
from lockgate.protocol.text import has_control_chars
from lockgate.protocol.timeparse import parse_duration

MAX_TRIGGERS = 10
MAX_FUNCTIONS = 500  # the default of LOCKGATE_MAX_FUNCTIONS_PER_SYNC
MAX_TEXT = 255  # names, ids, SDK and framework labels
MAX_URL = 2048

# Where the Inngest dev server looks for apps on this machine (and so do we).
DISCOVERY_PORTS = [80, 443, *range(3000, 3011), 4321, 5000, 5173, 8000, 8080, 8081, 8888, *range(8910, 8916), 8787]
DISCOVERY_PATHS = ["/api/inngest", "/x/inngest", "/.netlify/functions/inngest", "/.redwood/functions/inngest"]


class SyncError(ValueError):
    """A registration that cannot be accepted; the message says what to fix."""


@dataclass(slots=True)
class Registration:
    app: App
    functions: list[Function]
    checksum: str


def _get_ci(body: dict, *names: str) -> Any:
    """SDKs spell keys differently (Python `appname`, JS `appName`): match case-insensitively."""
    lowered = {k.lower(): v for k, v in body.items()}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


# Connect apps have no URL: their workers dial in (lockgate/connect/). Their functions carry the
# SDK's `wss://connect?...` step URL, and the app is stored under this scheme.
CONNECT_APP_SCHEME = "connect://"
CONNECT_STEP_SCHEMES = ("ws://", "wss://")
HTTP_SCHEMES = ("http://", "https://")


def _text(value: Any, what: str, *, required: bool = True, limit: int = MAX_TEXT) -> str | None:
    """A printable string of at most `limit` characters (None allowed unless required)."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise SyncError(f"{what} must be a{' non-empty' if required else ''} string")
    if len(value) > limit or has_control_chars(value):
        raise SyncError(f"{what} must be at most {limit} printable characters")
    return value


def _url(value: Any, what: str, schemes: tuple[str, ...] = HTTP_SCHEMES) -> str:
    url = _text(value, what, limit=MAX_URL)
    assert url is not None
    if not url.startswith(schemes):
        kind = "http(s)" if schemes == HTTP_SCHEMES else " or ".join(s.rstrip("/:") for s in schemes)
        raise SyncError(f"{what} must be an absolute {kind} URL")
    problem = credentials_problem(url)
    if problem:
        raise SyncError(f"{what}: {problem}")
    return url


def is_app_url(value: Any) -> bool:
    try:
        _url(value, "url")
    except SyncError:
        return False
    return True


def parse_registration(body: Any, *, now: int, max_functions: int = MAX_FUNCTIONS,
                       connect: bool = False) -> Registration:
    """`connect`: the sync came over a Connect worker's handshake rather than /fn/register."""
    if not isinstance(body, dict):
        raise SyncError("the register body must be a JSON object")
    app_name = _text(_get_ci(body, "appName"), "'appName'")
    url = _url(body.get("url"), "'url'", (CONNECT_APP_SCHEME,) if connect else HTTP_SCHEMES)
    raw_functions = body.get("functions") or []
    if not isinstance(raw_functions, list):
        raise SyncError("'functions' must be a list")
    if len(raw_functions) > max_functions:
        raise SyncError(f"an app may register at most {max_functions} functions, got {len(raw_functions)} "
                        "(LOCKGATE_MAX_FUNCTIONS_PER_SYNC)")
    functions = []
    seen: set[str] = set()
    for raw in raw_functions:
        fn = _parse_function(raw, app_name, now, connect)
        if fn.slug in seen:
            raise SyncError(f"function id {fn.slug!r} appears twice")
        seen.add(fn.slug)
        functions.append(fn)
    checksum = hashlib.sha256(
        canonical_json({"app": app_name, "url": url, "functions": raw_functions})
    ).hexdigest()
    app = App(
        name=app_name,
        url=url,
        sdk=_text(body.get("sdk"), "'sdk'", required=False),
        framework=_text(body.get("framework"), "'framework'", required=False),
        checksum=checksum,
        synced_at=now,
        created_at=now,
    )
    return Registration(app=app, functions=functions, checksum=checksum)


def _parse_function(raw: Any, app_name: str, now: int, connect: bool = False) -> Function:
    if not isinstance(raw, dict):
        raise SyncError("each function must be a JSON object")
    slug = raw.get("id")
    if not isinstance(slug, str) or not slug:
        raise SyncError("a function has no 'id'")
    _text(slug, "a function 'id'")
    where = f"function {slug!r}"
    name = _text(raw.get("name") or slug, f"{where}: 'name'")
    steps = raw.get("steps")
    if not isinstance(steps, dict) or len(steps) != 1:
        raise SyncError(f"{where}: 'steps' must hold exactly one entry")
    step = next(iter(steps.values()))
    if not isinstance(step, dict) or not isinstance(step.get("runtime"), dict):
        raise SyncError(f"{where}: each step must be an object with a 'runtime' object")
    url = _url(step["runtime"].get("url"), f"{where}: the step runtime's url",
               CONNECT_STEP_SCHEMES if connect else HTTP_SCHEMES)
    triggers = raw.get("triggers") or []
    if not isinstance(triggers, list):
        raise SyncError(f"{where}: 'triggers' must be a list")
    if len(triggers) > MAX_TRIGGERS:
        raise SyncError(f"{where}: at most {MAX_TRIGGERS} triggers")
    for trig in triggers:
        _check_trigger(trig, where)
    _check_flow_control(raw, where)
    return Function(id=str(uuid.uuid4()), slug=slug, app_name=app_name, name=name, url=url, config=raw)


def _check_trigger(trig: Any, where: str) -> None:
    if not isinstance(trig, dict):
        raise SyncError(f"{where}: a trigger must be an object")
    if "event" in trig and trig["event"] is not None:
        name = trig["event"]
        if not isinstance(name, str) or not name or len(name) > 255:
            raise SyncError(f"{where}: trigger event names must be 1-255 characters")
        if "*" in name and not (name.endswith("/*") or name.endswith(".*")):
            raise SyncError(f"{where}: a wildcard must follow '/' or '.' at the end of {name!r}")
        expr = trig.get("expression")
        if expr:
            try:
                compile_expression(expr)
            except ExpressionError as exc:
                raise SyncError(f"{where}: trigger expression does not compile: {exc}") from None
    elif "cron" in trig and trig["cron"] is not None:
        try:
            parse_cron(trig["cron"])
        except ValueError as exc:
            raise SyncError(f"{where}: bad cron {trig['cron']!r}: {exc}") from None
        jitter = trig.get("jitter")
        if jitter:
            try:
                seconds = parse_duration(jitter)
            except ValueError as exc:
                raise SyncError(f"{where}: bad cron jitter: {exc}") from None
            if not 1 <= seconds <= 300:
                raise SyncError(f"{where}: cron jitter must lie between 1s and 5m")
    else:
        raise SyncError(f"{where}: a trigger needs 'event' or 'cron'")


def _check_flow_control(raw: dict, where: str) -> None:
    batch = raw.get("batchEvents")
    if batch:
        conflicts = [k for k in ("cancel", "debounce", "singleton") if raw.get(k)]
        if (raw.get("priority") or {}).get("run"):
            conflicts.append("priority")
        if conflicts:
            raise SyncError(f"{where}: batchEvents cannot be combined with {', '.join(conflicts)}")
    problems = cancellation.check_config(raw)
    if problems:
        raise SyncError(f"{where}: " + "; ".join(problems))
    try:
        parse_flow(raw)
    except FlowConfigError as exc:
        raise SyncError(f"{where}: {exc}") from None
