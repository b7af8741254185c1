"""Go-style durations, wake-up times and Retry-After values (spec §0.3, §2.3, §2.4)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)

# Go's time.ParseDuration units, plus d (24h) and w (7d) which Inngest time strings use.
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600,
           "d": 86400, "w": 604800}
# A number is digits with an optional fraction, as in Go: "1", "1.5", ".5", "5."; ASCII digits only.
_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """'1h30m' → 5400.0 seconds. A leading sign is allowed as in Go; '0' alone is zero."""
    s = str(text).strip()
    if not s:
        raise ValueError("empty duration: expected something like '30s', '5m', '1h30m' or '2d'")
    sign = 1.0
    body = s
    if body[0] in "+-":
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    for match in _PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(body):
        raise ValueError(f"{text!r} is not a duration like '500ms', '30s', '5m', '1h30m', '2d' or '1w'")
    return sign * total


def _utc_ms(dt: datetime) -> int:
    if dt.tzinfo is None:  # a date without a zone is read as UTC
        dt = dt.replace(tzinfo=timezone.utc)
    return (dt - _EPOCH) // _MS  # exact integer arithmetic; float timestamps can lose the last ms


def parse_datetime_ms(text: str) -> int | None:
    """An RFC 3339 / ISO 8601 time as ms, or None when the text is not a date."""
    s = text.strip()
    # Require a date-looking start so that durations such as "10s" are never tried as dates.
    if not re.match(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", s):
        return None
    s = s.replace("t", "T", 1) if "T" not in s else s
    if s.endswith(("z", "Z")):
        s = s[:-1] + "+00:00"
    try:
        return _utc_ms(datetime.fromisoformat(s))
    except ValueError:
        return None


def parse_time_or_duration(text: str, now_ms: int) -> int:
    """A wake-up time in ms: a date (a past date means now) or a duration from now. '' means now.

    Used for the Sleep op's `name` (Python sends an ISO time, JS a time string) and wait timeouts.
    """
    s = "" if text is None else str(text).strip()
    if not s:
        return now_ms
    at = parse_datetime_ms(s)
    if at is None:
        try:
            at = now_ms + int(parse_duration(s) * 1000)
        except ValueError:
            raise ValueError(f"{text!r} is neither a date (RFC 3339) nor a duration like '30s' or '1h30m'") from None
    return max(at, now_ms)


MIN_RETRY_AFTER_MS = 1000
MAX_RETRY_AFTER_MS = 24 * 3600 * 1000


def parse_retry_after(value: str, now_ms: int) -> int | None:
    """When to retry, in ms: whole seconds (≤ 7 chars) or a date; the delay is clamped to 1 s … 24 h.

    Returns None when the value cannot be read (the caller then uses its normal backoff).
    """
    v = (value or "").strip()
    if not v:
        return None
    if len(v) <= 7:  # Go's rule: short values are a number of seconds
        if not re.fullmatch(r"[+-]?[0-9]+", v):
            return None
        delay = int(v) * 1000
    else:
        at = parse_datetime_ms(v)
        if at is None:
            try:
                at = _utc_ms(parsedate_to_datetime(v))  # RFC 1123, as in HTTP
            except (TypeError, ValueError, IndexError, OverflowError):
                return None
        delay = at - now_ms
    return now_ms + min(max(delay, MIN_RETRY_AFTER_MS), MAX_RETRY_AFTER_MS)


def iso_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds and 'Z', the form the Python SDK writes."""
    dt = _EPOCH + timedelta(milliseconds=int(ms))
    return (f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
            f".{dt.microsecond // 1000:03d}Z")
