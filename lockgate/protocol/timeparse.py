"""Go-style durations, wake-up times and Retry-After values."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """'1h30m' → 5400.0 seconds. Raises ValueError naming the bad input."""
    s = str(text).strip()
    if not s:
        raise ValueError("empty duration")
    pos, total = 0, 0.0
    for match in _PART.finditer(s):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(s):
        raise ValueError(f"{text!r} is not a duration like '30s', '5m', '1h30m', '2d'")
    return total


def parse_datetime_ms(text: str) -> int | None:
    """An RFC 3339 / ISO 8601 time as ms, or None when the text is not a date."""
    s = text.strip()
    if not s or not s[0].isdigit() or "-" not in s:
        return None
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def parse_time_or_duration(text: str, now_ms: int) -> int:
    """A wake-up time: a date (past dates mean now) or a duration from now. '' means now."""
    if not text or not str(text).strip():
        return now_ms
    at = parse_datetime_ms(str(text))
    if at is not None:
        return max(at, now_ms)
    return now_ms + int(parse_duration(str(text)) * 1000)


MIN_RETRY_AFTER_MS = 1000
MAX_RETRY_AFTER_MS = 24 * 3600 * 1000


def parse_retry_after(value: str, now_ms: int) -> int | None:
    """When to retry, in ms: seconds (≤ 7 chars) or a date; clamped to 1 s … 24 h. None if unreadable."""
    v = value.strip()
    if not v:
        return None
    delay: int | None = None
    if len(v) <= 7:
        try:
            delay = int(float(v) * 1000)
        except ValueError:
            delay = None
    if delay is None:
        at = parse_datetime_ms(v)
        if at is None:
            try:
                at = int(parsedate_to_datetime(v).timestamp() * 1000)
            except (TypeError, ValueError):
                return None
        delay = at - now_ms
    return now_ms + min(max(delay, MIN_RETRY_AFTER_MS), MAX_RETRY_AFTER_MS)


def iso_ms(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
