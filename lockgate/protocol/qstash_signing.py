"""The `Upstash-Signature` JWT that QStash receivers verify (spec §4)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time

import jwt

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

# The QStash local dev server's preset users (spec §1.3): token, current key, next key.
DEV_USERS = (
    ("eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0=",
     "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r", "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs"),
)
DEV_TOKEN, DEV_CURRENT_KEY, DEV_NEXT_KEY = DEV_USERS[0]


def random_b58(n: int) -> str:
    return "".join(secrets.choice(_B58) for _ in range(n))


def new_signing_key() -> str:
    # 32 characters in all: shorter HMAC keys make PyJWT warn on the receiving side.
    return "sig_" + random_b58(28)


def body_hash(body: bytes) -> str:
    """base64url(sha256(body)) with padding, as third-party verifiers compare it exactly."""
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode()


def sign(key: str, *, url: str, body: bytes, now_s: int | None = None) -> str:
    # iat is floored: a receiver with zero clock tolerance rejects an iat in its future.
    iat = int(time.time()) if now_s is None else now_s
    claims = {
        "iss": "Upstash",
        "sub": url,
        "exp": iat + 300,
        "nbf": 0,  # the hosted service sends 0 so clock skew never fails a delivery
        "iat": iat,
        "jti": "jwt_" + random_b58(28),
        "body": body_hash(body),
    }
    # The HMAC key is the key string's bytes, not its base64 decoding.
    return jwt.encode(claims, key.encode(), algorithm="HS256", headers={"typ": "JWT"})
