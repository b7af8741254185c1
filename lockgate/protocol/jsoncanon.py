"""JSON encodings: RFC 8785 canonical bytes for what we sign and send, fast orjson elsewhere."""

from __future__ import annotations

from typing import Any

import orjson
import rfc8785


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) bytes: SDKs canonicalise before verifying, so we send exactly these."""
    try:
        return rfc8785.dumps(value)
    except rfc8785.IntegerDomainError:
        # Integers beyond 2**53 cannot round-trip through JSON numbers; send them as floats.
        return rfc8785.dumps(_floatify_big_ints(value))


def _floatify_big_ints(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) > 2**53 - 1:
        return float(value)
    if isinstance(value, dict):
        return {k: _floatify_big_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floatify_big_ints(v) for v in value]
    return value


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)
