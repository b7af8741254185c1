"""Internal event ids: ULIDs, deterministic when the SDK sends a seed (spec §3.4)."""

from __future__ import annotations

import base64
import binascii
import random
import re
import time

from ulid import ULID

_MAX_MILLIS = 2**48 - 1  # a ULID timestamp is 48 bits
_SEED = re.compile(r"([0-9]{1,15}),([A-Za-z0-9+/=_-]+)")


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # every 10-bit value as two characters


def new_ulid() -> str:
    """A random ULID, encoded here because it is on the hot path (several per run): about
    3x faster than str(ULID()); the unit tests check that python-ulid reads it back."""
    # Ids need uniqueness, not secrecy: `random` reseeds itself in forked children, and avoids a
    # getrandom() system call per id.
    value = (time.time_ns() // 1_000_000) << 80 | random.getrandbits(80)
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in range(120, -10, -10)])


def ulid_from_seed(seed_header: str | None, index: int) -> str | None:
    """The `index`-th id for an `X-Inngest-Event-Id-Seed: <millis>,<base64 of 10 bytes>` header.

    A retried send carries the same seed, so it gets the same ids. Returns None when the seed is
    missing or unusable (the caller then makes a random ULID).
    """
    if not seed_header or index < 0:
        return None
    match = _SEED.fullmatch(seed_header.strip())
    if not match:
        return None
    millis = int(match.group(1))
    text = match.group(2)
    try:
        # The Python SDK uses standard base64; accept the URL-safe alphabet too.
        entropy = bytearray(base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True))
    except (binascii.Error, ValueError):
        return None
    if len(entropy) != 10 or millis > _MAX_MILLIS:
        return None
    # Bytes 6..9 are a big-endian counter bumped by the event's position in the request (wraps at 2**32).
    counter = (int.from_bytes(entropy[6:10], "big") + index) % 2**32
    entropy[6:10] = counter.to_bytes(4, "big")
    return str(ULID.from_bytes(millis.to_bytes(6, "big") + bytes(entropy)))
