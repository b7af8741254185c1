"""Request signatures (server → SDK), answer signatures (SDK → server) and bearer checks. Spec §4.2–4.3.

How the official SDKs sign their answers in cloud mode (JS v3/v4 `getResponseSignature`, Python
`sign_response`): `X-Inngest-Signature: t=<unix seconds>&s=<hex HMAC-SHA256>`, keyed with the ASCII
text of the key that verified our request (prefix `signkey-<env>-` removed, not hex-decoded), over
the exact body bytes followed by the decimal timestamp. The body is signed as sent, never
canonicalised. A streamed answer (HTTP 201) carries the signature inside its final JSON wrapper,
over the wrapper's `body` string. An SDK in dev mode signs nothing, even when it holds a key.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import time
from typing import Mapping

import orjson

# Same pattern the SDKs use (ASCII word characters between "signkey-" and "-").
_PREFIX = re.compile(r"^signkey-[A-Za-z0-9_]+-")
_HEX = re.compile(r"[0-9a-fA-F]+")


def strip_key_prefix(key: str) -> str:
    return _PREFIX.sub("", key.strip())


def validate_signing_key(key: str) -> None:
    """Raise ValueError saying in plain words what is wrong with a signing key."""
    if not isinstance(key, str):
        raise ValueError("the signing key must be text")
    bare = strip_key_prefix(key)
    if not bare:
        raise ValueError("the signing key is empty (expected hex digits, optionally prefixed 'signkey-<env>-')")
    if not _HEX.fullmatch(bare):
        raise ValueError("the signing key must be hexadecimal after its optional 'signkey-<env>-' prefix")
    if len(bare) % 2:
        raise ValueError(f"the signing key must have an even number of hex digits, it has {len(bare)}")


@functools.lru_cache(maxsize=64)
def _mac_key(key: str) -> bytes:
    # The key is used as its ASCII text, not hex-decoded (spec §4.2).
    return strip_key_prefix(key).encode()


def _mac(body: bytes, key: str, t: int) -> str:
    return hmac.new(_mac_key(key), body + str(t).encode(), hashlib.sha256).hexdigest()


def sign_body(body: bytes, key: str, t: int | None = None) -> str:
    """X-Inngest-Signature value for `body` (sign the exact canonical bytes you send)."""
    t = int(time.time()) if t is None else int(t)
    return f"t={t}&s={_mac(body, key, t)}"


def verify_signature(header: str | None, body: bytes, keys: list[str], max_age_s: int | None = None) -> bool:
    """Check a `t=…&s=…` header against any of `keys` (current and fallback key)."""
    if not header:
        return False
    parts = dict(p.split("=", 1) for p in header.split("&") if "=" in p)
    try:
        t = int(parts["t"])
        given = parts["s"].encode()
    except (KeyError, ValueError, UnicodeEncodeError):
        return False
    if max_age_s is not None and abs(time.time() - t) > max_age_s:
        return False
    ok = False
    for key in keys:
        if key:
            ok |= hmac.compare_digest(_mac(body, key, t).encode(), given)
    return ok


def signed_part(status: int, headers: Mapping[str, str], body: bytes) -> tuple[str | None, bytes]:
    """The signature header of an SDK answer and the bytes it signs (a streamed answer's inner body)."""
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    if status == 201:
        try:
            wrapper = orjson.loads(body.lstrip())
            inner_headers = {str(k).lower(): str(v) for k, v in (wrapper.get("headers") or {}).items()}
            inner = wrapper.get("body")
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            return None, b""
        if not isinstance(inner, str):  # the SDKs sign the body as the string they put in the wrapper
            inner = "" if inner is None else orjson.dumps(inner).decode()
        return inner_headers.get("x-inngest-signature"), inner.encode()
    return lowered.get("x-inngest-signature"), body


def answer_signature_problem(status: int, headers: Mapping[str, str], body: bytes, keys: list[str]) -> str | None:
    """None when the answer is signed with one of `keys`; else "unsigned" or "wrong key".

    No age limit: the SDK stamps the time it answered, and a long call (or clock drift between the
    hosts) must not turn a genuine answer into a refused one.
    """
    header, signed = signed_part(status, headers, body)
    if not header:
        return "unsigned"
    return None if verify_signature(header, signed, keys) else "wrong key"


def hashed_signing_key(key: str) -> str:
    """sha256 hex of the hex-decoded key: what SDKs send as `Authorization: Bearer …`."""
    bare = strip_key_prefix(key)
    try:
        raw = bytes.fromhex(bare)
    except ValueError:
        raise ValueError("the signing key must be hexadecimal after its optional 'signkey-<env>-' prefix") from None
    return hashlib.sha256(raw).hexdigest()


def verify_bearer(authorization_header: str | None, keys: list[str]) -> bool:
    """Accept the key itself or its hash, with or without the 'signkey-…-' prefix (spec §4.3)."""
    if not authorization_header:
        return False
    scheme, _, token_text = authorization_header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    token = strip_key_prefix(token_text).encode("utf-8", "replace")
    if not token:
        return False
    ok = False
    for key in keys:
        if not key:
            continue
        bare = strip_key_prefix(key)
        try:
            hashed = hashed_signing_key(bare)
        except ValueError:
            hashed = ""
        # Compare against both forms every time: the work does not depend on which one matches.
        ok |= hmac.compare_digest(token, bare.encode()) | hmac.compare_digest(token, hashed.encode())
    return ok
