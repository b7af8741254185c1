"""Internal event ids: ULIDs, deterministic when the SDK sends a seed (spec §3.4)."""

from __future__ import annotations

import base64

from ulid import ULID


def new_ulid() -> str:
    return str(ULID())


def ulid_from_seed(seed_header: str | None, index: int) -> str | None:
    """`<millis>,<base64 of 10 bytes>` → the index-th id; None when the seed is unusable."""
    if not seed_header:
        return None
    try:
        millis_text, entropy_b64 = seed_header.split(",", 1)
        millis = int(millis_text)
        entropy = bytearray(base64.b64decode(entropy_b64, validate=True))
    except (ValueError, TypeError):
        return None
    if len(entropy) != 10 or not 0 <= millis < 2**48:
        return None
    counter = (int.from_bytes(entropy[6:10], "big") + index) % 2**32
    entropy[6:10] = counter.to_bytes(4, "big")
    return str(ULID.from_bytes(millis.to_bytes(6, "big") + bytes(entropy)))
