"""JSON encodings: RFC 8785 canonical bytes for what we sign and send, fast orjson elsewhere."""

from __future__ import annotations

import json
from typing import Any

import orjson
import rfc8785

# RFC 8785 numbers are IEEE doubles; integers beyond this cannot be written exactly.
_MAX_SAFE_INT = 2**53 - 1


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) bytes: SDKs canonicalise before verifying, so we send exactly these.

    Integers outside ±(2**53-1) are written as the nearest double. That is what the
    Python SDK's own canonicaliser (the `jcs` package) does with them, so the bytes
    we sign are the bytes it recomputes. Values that no double can hold (NaN,
    infinity, integers above ~1.8e308) raise ValueError.
    """
    if _orjson_is_canonical(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # e.g. a lone surrogate, which orjson refuses: let rfc8785 decide
            pass
    try:
        return rfc8785.dumps(value)
    except rfc8785.IntegerDomainError:
        pass
    except rfc8785.FloatDomainError as exc:
        raise ValueError(f"NaN and infinity cannot be written as JSON: {exc}") from None
    except rfc8785.CanonicalizationError as exc:
        raise ValueError(f"value cannot be written as canonical JSON: {exc}") from None
    try:
        return rfc8785.dumps(_big_ints_as_floats(value))
    except rfc8785.CanonicalizationError as exc:
        raise ValueError(f"value cannot be written as canonical JSON: {exc}") from None


def _orjson_is_canonical(value: Any) -> bool:
    """True when orjson with sorted keys writes exactly the RFC 8785 bytes (about 7x faster than
    rfc8785, which is pure Python and was a tenth of a signing server's CPU): no floats (RFC 8785
    writes them as JavaScript does, 1.0 as 1), integers within +-(2**53-1), and ASCII keys only
    (RFC 8785 orders keys by UTF-16 code units, orjson by code points). Both escape strings alike:
    quote, backslash and the short forms for backspace, tab, newline, form feed and carriage return,
    other control characters as lower-case u00xx escapes, everything else as plain UTF-8."""
    try:
        return _plain(value)
    except RecursionError:
        return False


def _plain(value: Any) -> bool:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT
    if kind is dict:
        return all(type(k) is str and k.isascii() and _plain(v) for k, v in value.items())
    if kind is list:
        return all(_plain(v) for v in value)
    return False


def _big_ints_as_floats(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) > _MAX_SAFE_INT:
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"the integer {str(value)[:20]}… is too large for a JSON number") from None
    if isinstance(value, dict):
        return {k: _big_ints_as_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_big_ints_as_floats(v) for v in value]
    return value


def dumps(value: Any) -> bytes:
    """Compact JSON. orjson stops at 64-bit integers; Python ints can be larger, so fall back."""
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        if "Integer exceeds 64-bit range" not in str(exc):
            raise
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON (orjson: strict, rejects NaN/Infinity, big integers become floats)."""
    return orjson.loads(data)
