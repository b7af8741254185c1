"""Session tokens: `/v0/connect/start` hands one out, the WebSocket handshake must present it.

A token is `<connection id>.<expiry ms>.<HMAC>` keyed with the signing key, so any replica sharing
that key accepts a token another replica issued. Without a signing key (dev) nothing is checked.
"""

from __future__ import annotations

import hashlib
import hmac

from lockgate.protocol.signing import strip_key_prefix

TOKEN_TTL_MS = 5 * 60_000  # the SDK dials the gateway right after /start


def issue(connection_id: str, key: str | None, now: int) -> str:
    expires = now + TOKEN_TTL_MS
    return f"{connection_id}.{expires}.{_mac(connection_id, expires, key)}" if key else ""


def check(token: str, connection_id: str, keys: list[str], now: int) -> str | None:
    """None when the token is good for this connection, else why not."""
    if not keys:
        return None
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != connection_id or not parts[1].isdigit():
        return "the session token does not belong to this connection: call /v0/connect/start again"
    if int(parts[1]) < now:
        return "the session token expired: call /v0/connect/start again"
    if not any(hmac.compare_digest(parts[2], _mac(connection_id, int(parts[1]), k)) for k in keys):
        return "the session token was not issued with this server's signing key"
    return None


def _mac(connection_id: str, expires: int, key: str) -> str:
    return hmac.new(strip_key_prefix(key).encode(), f"connect:{connection_id}:{expires}".encode(), hashlib.sha256).hexdigest()
