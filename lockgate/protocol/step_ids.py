"""Hashed step ids as SDKs compute them (spec §2.5)."""

from __future__ import annotations

import hashlib


def hash_step_id(user_id: str, index: int = 0) -> str:
    text = user_id if index == 0 else f"{user_id}:{index}"
    return hashlib.sha1(text.encode()).hexdigest()
