"""Standard CEL functions and Inngest's custom ones (lowercase, b64decode, date, now_plus, …).

Every function takes already-evaluated arguments; a method call `x.f(y)` arrives as f(x, y).
The compiler handles missing arguments before calling (size → 0, anything else → false).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable

from lockgate.expressions.syntax import ExpressionError
from lockgate.expressions.values import format_float, format_timestamp, format_duration, type_name, to_text

_INT64 = (-(2**63), 2**63 - 1)
_UINT64 = (0, 2**64 - 1)


def _fail(name: str, *args: Any) -> ExpressionError:
    kinds = ", ".join(type_name(a) for a in args)
    return ExpressionError(f"no overload {name}({kinds})")


def size(x: Any) -> int:
    if x is None:
        return 0  # like missing: size of nothing is 0
    if isinstance(x, (str, bytes, list, dict)):
        return len(x)
    raise _fail("size", x)


def _strings(name: str, fn: Callable[[str, str], Any]) -> Callable[[Any, Any], Any]:
    def call(s: Any, arg: Any) -> Any:
        if type(s) is not str or type(arg) is not str:
            raise _fail(name, s, arg)
        return fn(s, arg)
    return call


def matches(s: Any, pattern: Any) -> bool:
    if type(s) is not str or type(pattern) is not str:
        raise _fail("matches", s, pattern)
    try:
        return re.search(pattern, s) is not None  # re caches compiled patterns
    except re.error as exc:
        raise ExpressionError(f"bad regular expression {pattern!r}: {exc}") from None


def _in_range(name: str, value: int, bounds: tuple[int, int]) -> int:
    if not bounds[0] <= value <= bounds[1]:
        raise ExpressionError(f"{name}() out of range: {value}")
    return value


def _integer(name: str, bounds: tuple[int, int]) -> Callable[[Any], int]:
    def call(x: Any) -> int:
        t = type(x)
        if t is int:
            return _in_range(name, x, bounds)
        if t is float:
            if not math.isfinite(x):
                raise ExpressionError(f"{name}() of {x}")
            return _in_range(name, int(x), bounds)
        if t is str:
            try:
                return _in_range(name, int(x.strip(), 10), bounds)
            except ValueError:
                raise ExpressionError(f"{name}() cannot parse {x!r}") from None
        if t is datetime:
            return int(x.timestamp())
        if t is bool and name == "int":  # not in CEL, harmless and what users expect
            return int(x)
        raise _fail(name, x)
    return call


def double(x: Any) -> float:
    t = type(x)
    if t is int or t is float:
        return float(x)
    if t is str:
        try:
            return float(x)
        except ValueError:
            raise ExpressionError(f"double() cannot parse {x!r}") from None
    raise _fail("double", x)


def string(x: Any) -> str:
    t = type(x)
    if t is str:
        return x
    if t is bytes:
        try:
            return x.decode("utf-8")
        except UnicodeDecodeError:
            raise ExpressionError("string() of bytes that are not UTF-8") from None
    if t is datetime:
        return format_timestamp(x)
    if t is timedelta:
        return format_duration(x)
    if t is float:
        return format_float(x)
    if t in (int, bool):
        return to_text(x)
    raise _fail("string", x)


def to_bool(x: Any) -> bool:
    if type(x) is bool:
        return x
    if type(x) is str and x in ("true", "True", "TRUE", "t", "1", "false", "False", "FALSE", "f", "0"):
        return x in ("true", "True", "TRUE", "t", "1")
    raise _fail("bool", x)


def to_bytes(x: Any) -> bytes:
    if type(x) is bytes:
        return x
    if type(x) is str:
        return x.encode("utf-8")
    raise _fail("bytes", x)


def timestamp(x: Any) -> datetime:
    t = type(x)
    if t is datetime:
        return x
    if t is int:
        return _from_unix(x)
    if t is str:
        parsed = _parse_iso(x)
        if parsed is None:
            raise ExpressionError(f"timestamp() needs RFC 3339 text, got {x!r}")
        return parsed
    raise _fail("timestamp", x)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600,
                 "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """Go durations ("1h30m", "-1.5s") plus Inngest's days and weeks ("7d", "2w")."""
    s = text.strip()
    sign = -1 if s.startswith("-") else 1
    body = s.lstrip("+-")
    if body == "0":
        return timedelta(0)
    pos, seconds = 0, 0.0
    for match in _DURATION_PART.finditer(body):
        if match.start() != pos:
            break
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise ExpressionError(f"{text!r} is not a duration like '30s', '1h30m' or '7d'")
    return timedelta(seconds=sign * seconds)


def duration(x: Any) -> timedelta:
    if type(x) is timedelta:
        return x
    if type(x) is str:
        return parse_duration(x)
    raise _fail("duration", x)


def _from_unix(n: float) -> datetime:
    # Integers from events are seconds or milliseconds; 1e11 s is the year 5138.
    seconds = n / 1000 if abs(n) >= 1e11 else n
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise ExpressionError(f"time out of range: {n}") from None


def _parse_iso(text: str) -> datetime | None:
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(s)
    except ValueError:
        return None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed


_DATE_FORMATS = ("%Y/%m/%d %H:%M:%S", "%Y/%m/%d", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y", "%d %B %Y", "%B %d, %Y",
                 "%b %d, %Y", "%d %b %Y", "%Y%m%dT%H%M%SZ")


def date(x: Any) -> datetime:
    """A timestamp from unix seconds/ms or from text in the usual date formats."""
    t = type(x)
    if t is datetime:
        return x
    if t is int or t is float:
        return _from_unix(x)
    if t is not str:
        raise _fail("date", x)
    s = x.strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", s):
        return _from_unix(float(s))
    parsed = _parse_iso(s)
    if parsed is not None:
        return parsed
    try:
        parsed = parsedate_to_datetime(s)  # RFC 1123 / 2822
        return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed
    except (TypeError, ValueError, IndexError):
        pass
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(s, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    raise ExpressionError(f"date() cannot read {x!r}")


def now() -> datetime:
    return datetime.now(timezone.utc)


def now_plus(d: Any) -> datetime:
    return now() + duration(d)


def now_minus(d: Any) -> datetime:
    return now() - duration(d)


def _text(name: str, fn: Callable[[str], Any]) -> Callable[[Any], Any]:
    def call(s: Any) -> Any:
        if type(s) is not str:
            raise _fail(name, s)
        return fn(s)
    return call


def _b64decode(s: str) -> str:
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise ExpressionError(f"b64decode(): {s[:40]!r} is not standard base64") from None
    return raw.decode("utf-8", "replace")


def _json_parse(s: str) -> Any:
    try:
        return json.loads(s)
    except ValueError as exc:
        raise ExpressionError(f"json_parse(): {exc}") from None


# name → (callable, argument counts accepted; the receiver of a method call counts).
FUNCTIONS: dict[str, tuple[Callable[..., Any], tuple[int, ...]]] = {
    "size": (size, (1,)),
    "contains": (_strings("contains", lambda s, sub: sub in s), (2,)),
    "startsWith": (_strings("startsWith", str.startswith), (2,)),
    "endsWith": (_strings("endsWith", str.endswith), (2,)),
    "matches": (matches, (2,)),
    "int": (_integer("int", _INT64), (1,)),
    "uint": (_integer("uint", _UINT64), (1,)),
    "double": (double, (1,)),
    "string": (string, (1,)),
    "bool": (to_bool, (1,)),
    "bytes": (to_bytes, (1,)),
    "dyn": (lambda x: x, (1,)),
    "timestamp": (timestamp, (1,)),
    "duration": (duration, (1,)),
    "lowercase": (_text("lowercase", str.lower), (1,)),
    "uppercase": (_text("uppercase", str.upper), (1,)),
    "b64decode": (_text("b64decode", _b64decode), (1,)),
    "json_parse": (_text("json_parse", _json_parse), (1,)),
    "date": (date, (1,)),
    "now": (now, (0,)),
    "now_plus": (now_plus, (1,)),
    "now_minus": (now_minus, (1,)),
}

# Functions whose result depends on the clock: never folded into constants at compile time.
IMPURE = frozenset({"now", "now_plus", "now_minus"})

MACROS = frozenset({"has", "all", "exists", "exists_one", "map", "filter"})
