"""Value semantics of Inngest's CEL dialect over plain JSON-ish Python values.

Values are None, bool, int, float, str, bytes, list, dict, datetime (timestamps, always UTC-aware)
and timedelta (durations), plus MISSING for a path that does not exist.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

from lockgate.expressions.syntax import ExpressionError


class _Missing:
    """A field that does not exist. Go's server treats it as an unknown that never raises."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "missing"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()
_NUMBERS = (int, float)


def type_name(value: Any) -> str:
    if value is MISSING:
        return "missing"
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "double", str: "string", bytes: "bytes", list: "list",
            dict: "map", datetime: "timestamp", timedelta: "duration"}.get(type(value), type(value).__name__)


def truthy(value: Any) -> bool:
    """JavaScript truthiness as Inngest applies it to && || ?: (empty lists and maps are truthy)."""
    if value is True:
        return True
    if value is False or value is None or value is MISSING:
        return False
    t = type(value)
    if t is str:
        return value != ""
    if t is int or t is float:
        return value != 0
    return True


def equals(a: Any, b: Any) -> bool:
    if a is MISSING or b is MISSING:
        return a is None or b is None  # missing equals only null (not even another missing)
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is list:
            return len(a) == len(b) and all(equals(x, y) for x, y in zip(a, b))
        if ta is dict:
            return a.keys() == b.keys() and all(equals(v, b[k]) for k, v in a.items())
        return a == b
    # Numbers compare across int/double (JSON has one number type); bool is not a number.
    return (ta is int or ta is float) and (tb is int or tb is float) and a == b


_ZERO = {int: 0, float: 0.0, str: ""}


def compare(op: str, a: Any, b: Any) -> bool:
    """<, <=, >, >= with Inngest's rules for missing (unknown) and null operands."""
    if a is MISSING:
        return op == "<" or op == "<="
    if b is MISSING:
        return op == ">" or op == ">="
    ta, tb = type(a), type(b)
    if a is None and b is not None:
        a, ta = _zero(b, op), tb
    elif b is None and a is not None:
        b, tb = _zero(a, op), ta
    if not (ta is tb or (ta in _NUMBERS and tb in _NUMBERS)) or ta is list or ta is dict or a is None:
        raise ExpressionError(f"cannot compare {type_name(a)} {op} {type_name(b)}")
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


def _zero(other: Any, op: str) -> Any:
    # Go compares null against the other side's zero value, for numbers and strings only.
    try:
        return _ZERO[type(other)]
    except KeyError:
        raise ExpressionError(f"cannot compare null {op} {type_name(other)}") from None


def contained(item: Any, container: Any) -> bool:
    """`item in container`: list membership or map key; missing on either side is false."""
    if item is MISSING or container is MISSING:
        return False
    t = type(container)
    if t is list:
        return any(equals(item, x) for x in container)
    if t is dict:
        try:
            return item in container
        except TypeError:  # unhashable key (a list or map) is never a key
            return False
    raise ExpressionError(f"'in' needs a list or map on the right, got {type_name(container)}")


# --- arithmetic ---------------------------------------------------------------------------

def add(a: Any, b: Any) -> Any:
    if a is MISSING:
        return b
    if b is MISSING:
        return a
    ta, tb = type(a), type(b)
    if ta in _NUMBERS and tb in _NUMBERS:
        return a + b
    if ta is tb and (ta is str or ta is list or ta is bytes or ta is timedelta):
        return a + b
    if (ta is datetime and tb is timedelta) or (ta is timedelta and tb is datetime):
        return a + b
    # Mixed types concatenate their string forms ("id-" + 5.0 → "id-5").
    return to_text(a) + to_text(b)


def arith(op: str, a: Any, b: Any) -> Any:
    """- * / % on numbers (and timestamp/duration differences)."""
    if a is MISSING or b is MISSING:
        return False  # any call on a missing value is false
    ta, tb = type(a), type(b)
    if ta in _NUMBERS and tb in _NUMBERS:
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if ta is int and tb is int:
            if b == 0:
                raise ExpressionError("division by zero" if op == "/" else "modulus by zero")
            # CEL truncates toward zero (Python floors).
            q = abs(a) // abs(b)
            q = q if (a < 0) == (b < 0) else -q
            return q if op == "/" else a - b * q
        if op == "/":
            if b == 0:
                return math.copysign(math.inf, a) * math.copysign(1, b) if a else math.nan
            return a / b
        return math.fmod(a, b) if b else math.nan
    if op == "-" and (tb is timedelta and ta in (datetime, timedelta) or ta is datetime and tb is datetime):
        return a - b
    raise ExpressionError(f"no operator {type_name(a)} {op} {type_name(b)}")


def negate(a: Any) -> Any:
    if a is MISSING:
        return False
    t = type(a)
    if t is int or t is float or t is timedelta:
        return -a
    raise ExpressionError(f"cannot negate {type_name(a)}")


def logical_not(a: Any) -> bool:
    if a is True or a is False:
        return not a
    if a is MISSING:
        return False  # any call on a missing value is false (as in Go)
    raise ExpressionError(f"'!' needs a bool, got {type_name(a)}")


# --- Go %v text ---------------------------------------------------------------------------

def to_text(value: Any) -> str:
    """Go's %v of a value: 5.0 → "5", true → "true", null/missing → "", maps/lists → JSON."""
    t = type(value)
    if t is str:
        return value
    if t is bool:
        return "true" if value else "false"
    if t is int:
        return str(value)
    if t is float:
        return format_float(value)
    if value is None or value is MISSING:
        return ""
    if t is bytes:
        return value.decode("utf-8", "replace")
    if t is datetime:
        return format_timestamp(value)
    if t is timedelta:
        return format_duration(value)
    return json.dumps(_jsonable(value), separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _jsonable(value: Any) -> Any:
    t = type(value)
    if t is dict:
        return {str(k): _jsonable(v) for k, v in value.items()}
    if t is list or t is tuple:
        return [_jsonable(v) for v in value]
    if t is float:
        return int(value) if value.is_integer() and abs(value) < 1e21 else value
    if value is MISSING:
        return None
    if t in (bytes, datetime, timedelta):
        return to_text(value)
    return value


def format_float(x: float) -> str:
    """Go's %v for float64 (strconv 'g', shortest), except that integral values below 1e21 print
    as integers: a JSON 1234567 may reach us as int or float and must render the same either way."""
    if x != x:
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x.is_integer() and abs(x) < 1e21:
        return str(int(x))
    sign = "-" if x < 0 else ""
    mantissa, _, exponent = repr(abs(x)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    point = len(whole) + int(exponent or 0) - (len(whole + fraction) - len(digits))
    digits = digits.rstrip("0") or "0"
    exp = point - 1
    if exp < -4 or exp >= 6:  # Go's shortest %g switches to %e from 1e6 (integral values returned above)
        body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{body}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def format_timestamp(value: datetime) -> str:
    text = value.astimezone(timezone.utc).isoformat()
    return text.replace("+00:00", "Z")


def format_duration(value: timedelta) -> str:
    return f"{format_float(value.total_seconds())}s"


# --- CEL literal text ---------------------------------------------------------------------

_CEL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def to_literal(value: Any) -> str:
    """CEL source that evaluates to `value` (used to substitute event fields into expressions)."""
    t = type(value)
    if value is None or value is MISSING:
        return "null"
    if t is bool:
        return "true" if value else "false"
    if t is int:
        return f"({value})" if value < 0 else str(value)
    if t is float:
        if not math.isfinite(value):
            return f'double("{value}")'
        text = repr(value)
        return f"({text})" if value < 0 or text.startswith("-") else text
    if t is str:
        return '"' + "".join(_escape_char(c) for c in value) + '"'
    if t is list or t is tuple:
        return "[" + ", ".join(to_literal(v) for v in value) + "]"
    if t is dict:
        return "{" + ", ".join(f"{to_literal(k)}: {to_literal(v)}" for k, v in value.items()) + "}"
    if t is bytes:
        return 'b"' + "".join(f"\\x{b:02x}" for b in value) + '"'
    if t is datetime:
        return f'timestamp("{format_timestamp(value)}")'
    if t is timedelta:
        return f'duration("{format_duration(value)}")'
    raise ExpressionError(f"cannot write a {type_name(value)} as a CEL literal")


def _escape_char(c: str) -> str:
    escaped = _CEL_ESCAPES.get(c)
    if escaped is not None:
        return escaped
    if c < " " or c == "\x7f" or "\ud800" <= c <= "\udfff":
        return f"\\u{ord(c):04x}"
    return c
