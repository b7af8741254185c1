"""Text from clients and apps: checks on identifiers and names (they must be printable), and
bodies cut to a line for messages."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control_chars(text: str) -> bool:
    """NUL (which PostgreSQL text cannot hold), newlines, escapes and the like."""
    return _CONTROL.search(text) is not None


def first_line(body: str, limit: int) -> str:
    """The first non-blank line of `body`, stripped and cut to `limit` characters ("" if none)."""
    return next((line.strip() for line in body.splitlines() if line.strip()), "")[:limit]
