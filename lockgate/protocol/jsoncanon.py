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
