"""Request signatures (server → SDK) and bearer checks (SDK → server). Spec §4.2–4.3."""

from __future__ import annotations

import hashlib
import hmac
import re
import time

_PREFIX = re.compile(r"^signkey-\w+-")


def strip_key_prefix(key: str) -> str:
    return _PREFIX.sub("", key.strip())


def validate_signing_key(key: str) -> None:
    """Raise ValueError saying in plain words what is wrong with a signing key."""
    bare = strip_key_prefix(key)
    if not bare:
        raise ValueError("the signing key is empty (expected hex, optionally prefixed 'signkey-<env>-')")
    if not re.fullmatch(r"[0-9a-fA-F]+", bare):
        raise ValueError("the signing key must be hexadecimal after its optional 'signkey-<env>-' prefix")
    if len(bare) % 2:
        raise ValueError(f"the signing key must have an even number of hex digits, it has {len(bare)}")


def sign_body(body: bytes, key: str, t: int | None = None) -> str:
    t = int(time.time()) if t is None else t
    mac = hmac.new(strip_key_prefix(key).encode(), body + str(t).encode(), hashlib.sha256).hexdigest()
    return f"t={t}&s={mac}"


def verify_signature(header: str | None, body: bytes, keys: list[str], max_age_s: int | None = None) -> bool:
    if not header:
        return False
    parts = dict(p.split("=", 1) for p in header.split("&") if "=" in p)
    try:
        t = int(parts["t"])
        given = parts["s"]
    except (KeyError, ValueError):
        return False
    if max_age_s is not None and abs(time.time() - t) > max_age_s:
        return False
    return any(hmac.compare_digest(sign_body(body, k, t).split("&s=", 1)[1], given) for k in keys if k)


def hashed_signing_key(key: str) -> str:
    return hashlib.sha256(bytes.fromhex(strip_key_prefix(key))).hexdigest()


def verify_bearer(authorization_header: str | None, keys: list[str]) -> bool:
    """Accept the key itself or its hash, with or without the 'signkey-…-' prefix."""
    if not authorization_header or not authorization_header.lower().startswith("bearer "):
        return False
    token = strip_key_prefix(authorization_header[7:].strip())
    ok = False
    for key in keys:
        if not key:
            continue
        bare = strip_key_prefix(key)
        try:
            hashed = hashed_signing_key(bare)
        except ValueError:
            hashed = ""
        # Compare against both forms every time: constant work whatever matches.
        ok |= hmac.compare_digest(token, bare) | hmac.compare_digest(token, hashed)
    return ok
