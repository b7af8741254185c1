"""Who may call what: event keys on /e, the signing key on the SDK-facing APIs."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request

from lockgate.interfaces.errors import ApiError
from lockgate.protocol.signing import verify_bearer


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
