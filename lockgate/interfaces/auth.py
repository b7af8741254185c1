"""Who may call what: event keys on /e, the signing key on the SDK-facing APIs."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from starlette.requests import Request

from lockgate.interfaces.errors import ApiError
from lockgate.protocol.signing import verify_bearer

log = logging.getLogger("lockgate.events")


@dataclass(slots=True)
class AccessPolicy:
    signing_keys: list[str] = field(default_factory=list)  # empty: dev mode, no checks
    event_keys: list[str] = field(default_factory=list)  # empty: any key is accepted

    def check_event_key(self, key: str) -> None:
        if self.event_keys and key not in self.event_keys:
            # The error text is the Inngest server's; `message` says what to do about it.
            raise ApiError(401, "Event key not found", message="send events to /e/<event key> with one of the keys"
                           " this server was started with (--event-key or INNGEST_EVENT_KEY)")

    def allows_api(self, request: Request) -> bool:
        return not self.signing_keys or verify_bearer(request.headers.get("authorization"), self.signing_keys)

    def check_api(self, request: Request) -> None:
        if not self.allows_api(request):
            raise ApiError(401, "Authentication failed: send 'Authorization: Bearer <signing key or its hash>'")


class RefusedEventLog:
    """One warning per refused event request, at most one per source and reason every `window` seconds:
    a misconfigured client sending thousands must not flood the terminal. The next line that gets
    through counts the ones held back."""

    def __init__(self, window: float = 10.0, max_sources: int = 1000) -> None:
        self.window = window
        self.max_sources = max_sources
        self._last: dict[tuple[str, str], tuple[float, int]] = {}  # (source, reason) -> (logged at, held back)

    def should_log(self, source: str, reason: str) -> int | None:
        """How many were held back since the last line, or None when this one is held back too."""
        now = time.monotonic()
        key = (source, reason)
        last = self._last.get(key)
        if last is not None and now - last[0] < self.window:
            self._last[key] = (last[0], last[1] + 1)
            return None
        if last is None and len(self._last) >= self.max_sources:
            self._last = {k: v for k, v in self._last.items() if now - v[0] < self.window}
        self._last[key] = (now, 0)
        return last[1] if last else 0

    def emit(self, source: str, reason: str, held_back: int, *, event_name: str | None, key: str | None,
             status: int) -> None:
        what = f"event {event_name!r}" if event_name else "an event"
        shown = f" (key {key_hint(key)})" if key else ""
        more = f"; {held_back} more refused from {source} for this reason in the last {self.window:g}s not logged" \
            if held_back else ""
        log.warning("refused %s from %s with HTTP %d: %s%s%s", what, source, status, reason, shown, more,
                    extra={"source": source, "reason": reason, "event": event_name, "held_back": held_back})


def key_hint(key: str) -> str:
    """Enough of a key to tell which one a client holds, never the key itself."""
    if len(key) < 12:
        return f"of {len(key)} characters"
    return f"{key[:4]}… of {len(key)} characters"


def event_name_of(body: object) -> str | None:
    """The event's name from a parsed /e body (an event or a list of them), if there is one."""
    first = body[0] if isinstance(body, list) and body else body
    name = first.get("name") if isinstance(first, dict) else None
    if not isinstance(name, str) or not name:
        return None
    name = name[:200]
    return f"{name} (+{len(body) - 1} more)" if isinstance(body, list) and len(body) > 1 else name
