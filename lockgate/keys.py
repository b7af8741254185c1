"""Start-up checks of the keys production mode needs, with messages that say what to fix."""

from __future__ import annotations

import re

from lockgate.protocol.signing import validate_signing_key
from lockgate.settings import Settings

_EVENT_KEY = re.compile(r"[A-Za-z0-9_\-.]+")


class KeyProblem(ValueError):
    pass


def check_production_keys(settings: Settings) -> None:
    """`lockgate start` refuses to run open: a signing key and at least one event key are required."""
    if not settings.signing_key:
        raise KeyProblem(
            "lockgate start needs a signing key: pass --signing-key signkey-prod-<hex> or set INNGEST_SIGNING_KEY "
            "(the same key your apps use). Generate one with: echo signkey-prod-$(openssl rand -hex 32)"
        )
    for label, key in (("--signing-key", settings.signing_key), ("--signing-key-fallback", settings.signing_key_fallback)):
        if key is None:
            continue
        try:
            validate_signing_key(key)
        except ValueError as exc:
            raise KeyProblem(f"{label} is not valid: {exc}") from None
    if not settings.event_keys:
        raise KeyProblem(
            "lockgate start needs at least one event key: pass --event-key <key> (repeatable) or set "
            "INNGEST_EVENT_KEY (comma-separated for several)"
        )
    for key in settings.event_keys:
        if not _EVENT_KEY.fullmatch(key):
            raise KeyProblem(f"event key {key[:6]}… may only hold letters, digits, '_', '-' and '.'")
