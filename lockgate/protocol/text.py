"""Checks on identifiers and names that clients send: they must be printable text."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control_chars(text: str) -> bool:
    """NUL (which PostgreSQL text cannot hold), newlines, escapes and the like."""
    return _CONTROL.search(text) is not None
