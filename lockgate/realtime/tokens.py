"""Subscription tokens: short JWTs naming one channel and the topics a holder may read.

Minted by `POST /v1/realtime/token` (authenticated like the SDK's other API calls) and handed
to browsers. The HMAC secret derives from the signing key, so every replica verifies every
other's tokens; the dev server without a signing key uses a fixed dev secret (it is open anyway).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

import jwt

DEV_SECRET = hashlib.sha256(b"lockgate dev realtime tokens").digest()
_AUDIENCE = "lockgate-realtime"


class TokenError(ValueError):
    """Why a token was refused, in words a developer can act on."""


@dataclass(frozen=True, slots=True)
class Grant:
    channel: str
    topics: frozenset[str]
    expires_at: float


def token_secret(signing_key: str | None) -> bytes:
    if not signing_key:
        return DEV_SECRET
    return hmac.new(signing_key.encode(), b"lockgate realtime subscription tokens", hashlib.sha256).digest()


def mint(secret: bytes, channel: str, topics: list[str], ttl_s: float) -> str:
    now = int(time.time())
    claims = {"aud": _AUDIENCE, "iat": now, "exp": now + int(ttl_s), "channel": channel, "topics": sorted(set(topics))}
    return jwt.encode(claims, secret, algorithm="HS256")


def verify(secrets: list[bytes], token: str | None) -> Grant:
    if not token:
        raise TokenError("no subscription token: pass ?token=<jwt> from POST /v1/realtime/token")
    for secret in secrets:
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"], audience=_AUDIENCE)
        except jwt.ExpiredSignatureError:
            raise TokenError("the subscription token has expired: mint a new one with POST /v1/realtime/token") from None
        except jwt.InvalidSignatureError:
            continue  # maybe signed with the fallback key
        except jwt.PyJWTError as exc:
            raise TokenError(f"the subscription token is malformed ({exc}): use the jwt from POST /v1/realtime/token") from None
        channel, topics = claims.get("channel"), claims.get("topics")
        if not isinstance(channel, str) or not isinstance(topics, list):
            raise TokenError("the subscription token names no channel and topics: use one from POST /v1/realtime/token")
        return Grant(channel, frozenset(str(t) for t in topics), float(claims["exp"]))
    raise TokenError("the subscription token was not signed by this server's signing key"
                     f"{' (or its fallback)' if len(secrets) > 1 else ''}: mint it with POST /v1/realtime/token")
