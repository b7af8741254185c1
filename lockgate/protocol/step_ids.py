"""Hashed step ids as SDKs compute them (spec §2.5)."""

from __future__ import annotations

import hashlib


def hash_step_id(user_id: str, index: int = 0) -> str:
    """SHA-1 of the user's id; the n-th repeat (n ≥ 1) within one execution hashes "<id>:<n>"."""
    if index < 0:
        raise ValueError("a step's repeat index cannot be negative")
    text = user_id if index == 0 else f"{user_id}:{index}"
    return hashlib.sha1(text.encode("utf-8")).hexdigest()
