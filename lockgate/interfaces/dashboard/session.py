"""Dashboard login, session cookie and CSRF tokens.

`lockgate start` asks for a login: the admin password (`--dashboard-password`) or a token derived
from the signing key (`lockgate dashboard-token` prints it), so every replica accepts the same
login and the same cookies without shared state. `lockgate dev` is open, as the Inngest dev server
is; its actions still carry a CSRF token, so another web page cannot drive them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from starlette.requests import Request

from lockgate.protocol.signing import strip_key_prefix

COOKIE = "lockgate_session"
SESSION_TTL_S = 12 * 3600
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


def dashboard_token(signing_key: str) -> str:
    """The login token of a server started with this signing key (stable across replicas and restarts)."""
    key = strip_key_prefix(signing_key).encode()
    return hmac.new(key, b"lockgate dashboard login", hashlib.sha256).hexdigest()[:40]


class DashboardAuth:
    def __init__(self, *, required: bool, signing_key: str | None = None, admin_password: str | None = None) -> None:
        self.required = required
        self.admin_password = admin_password
        self.token = dashboard_token(signing_key) if signing_key else None
        # Sessions and CSRF tokens are MACs under this secret: derived from the signing key in production
        # (replicas agree), random per process in dev.
        seed = strip_key_prefix(signing_key).encode() if signing_key else secrets.token_bytes(32)
        self._secret = hmac.new(seed, b"lockgate dashboard sessions", hashlib.sha256).digest()

    def _mac(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()[:43]

    def login_ok(self, secret: str) -> bool:
        given = secret.strip().encode()
        return any(hmac.compare_digest(given, expected.encode())
                   for expected in (self.admin_password, self.token) if expected)

    def new_session(self) -> str:
        body = f"{int(time.time()) + SESSION_TTL_S}.{secrets.token_hex(12)}"
        return f"{body}.{self._mac('session:' + body)}"

    def session(self, request: Request) -> str | None:
        """The request's valid, unexpired session cookie, or None."""
        value = request.cookies.get(COOKIE, "")
        body, _, mac = value.rpartition(".")
        expires, _, _ = body.partition(".")
        if not body or not expires.isdigit() or int(expires) < time.time():
            return None
        return value if hmac.compare_digest(mac, self._mac("session:" + body)) else None

    def signed_in(self, request: Request) -> bool:
        return not self.required or self.session(request) is not None

    def csrf_token(self, request: Request) -> str:
        return self._mac("csrf:" + (self.session(request) or "open"))

    def csrf_ok(self, request: Request, submitted: str | None) -> bool:
        submitted = submitted or request.headers.get(CSRF_HEADER) or ""
        return hmac.compare_digest(submitted, self.csrf_token(request))
