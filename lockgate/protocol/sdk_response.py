"""What an SDK answered, parsed into typed results (spec §2.3, §2.4, §2.13)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import orjson

from lockgate.protocol.timeparse import parse_retry_after

MAX_ERROR_TEXT = 2000  # non-JSON error bodies (proxy pages, tracebacks) are cut to this many characters

NOT_AN_SDK = "The response did not come from an Inngest SDK"
SIGNING_KEY_MISMATCH = "signing key mismatch"

# Ops that need no step id (JS v4 checkpointing).
_OPS_WITHOUT_ID = frozenset({"RunComplete", "DiscoveryRequest"})


@dataclass(slots=True)
class Op:
    id: str
    op: str
    name: str | None = None
    display_name: str | None = None
    opts: dict[str, Any] = field(default_factory=dict)
    data: Any = None
    error: Any = None
    has_data: bool = False  # tells `"data": null` apart from no data at all
    userland: dict[str, Any] | None = None
    no_retry: bool = False  # the response carried X-Inngest-No-Retry: true (applies to StepError)


@dataclass(slots=True)
class FunctionCompleted:
    output: Any
    request_version: int | None = None


@dataclass(slots=True)
class OpsReturned:
    ops: list[Op]
    request_version: int | None = None


@dataclass(slots=True)
class FunctionErrored:
    error: dict[str, Any]
    retriable: bool
    retry_at_ms: int | None = None
    request_version: int | None = None
    status: int | None = None  # the HTTP status the app answered with


@dataclass(slots=True)
class TransportError:
    message: str
    retriable: bool = True
    request_version: int | None = None
    # Why the call failed, for logs and /v1/stats (see lockgate.engine.executor.FAILURE_REASONS).
    reason: str = "bad_response"


SdkResult = FunctionCompleted | OpsReturned | FunctionErrored | TransportError


def _lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    # HTTP header names are case-insensitive; the streamed wrapper uses lower case, JS may not.
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _request_version(headers: dict[str, str]) -> int | None:
    raw = headers.get("x-inngest-req-version")
    try:
        return int(raw.strip()) if raw is not None else None
    except ValueError:
        return None


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT] + "…"


def _error_body(body: bytes, status: int) -> dict[str, Any]:
    """Keep a JSON object whole; wrap anything else as {name, message}."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", errors="replace").strip()
        return {"name": "Error", "message": _short(text) or f"the app answered HTTP {status} with an empty body"}
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        return {"name": "Error", "message": _short(value)}
    return {"name": "Error", "message": _short(orjson.dumps(value).decode())}


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return str(value)


def to_error_memo(err: Any) -> dict[str, str]:
    """Error memos must be exactly {name, message, stack?} with string values (spec §2.2).

    Anything else would be read by the Python SDK as step *data*, not as an error.
    """
    if not isinstance(err, dict):
        return {"name": "Error", "message": "" if err is None else _text(err)}
    name = err.get("name")
    message = err.get("message")
    if message is None:
        message = err.get("error")  # JS "step not found" bodies put the text under "error"
    memo = {
        "name": _text(name) if name not in (None, "") else "Error",
        "message": "" if message is None else _text(message),
    }
    if err.get("stack") is not None:
        memo["stack"] = _text(err["stack"])
    return memo


def parse_op(raw: Any, no_retry: bool = False) -> Op:
    """One op object of a 206 array or of a JS v4 checkpoint; raises ValueError."""
    if not isinstance(raw, dict):
        raise ValueError(f"an op must be a JSON object, got {type(raw).__name__}")
    kind = raw.get("op")
    if not isinstance(kind, str) or not kind:
        raise ValueError("an op has no 'op' name")
    op_id = raw.get("id")
    if op_id is None and kind in _OPS_WITHOUT_ID:
        op_id = ""
    if not isinstance(op_id, str) or (not op_id and kind not in _OPS_WITHOUT_ID):
        raise ValueError(f"the {kind} op has no step 'id'")
    name = raw.get("name")
    display = raw.get("displayName")
    opts = raw.get("opts")
    userland = raw.get("userland")
    return Op(
        id=op_id,
        op=kind,
        name=name if isinstance(name, str) else None,
        # JS v0/v1 ops carry the display name only in `name`.
        display_name=display if isinstance(display, str) else (name if isinstance(name, str) else None),
        opts=opts if isinstance(opts, dict) else {},
        data=raw.get("data"),
        error=raw.get("error"),
        has_data="data" in raw,
        userland=userland if isinstance(userland, dict) else None,
        no_retry=no_retry,
    )


def parse_sdk_response(status: int, headers: Mapping[str, str], body: bytes, now_ms: int) -> SdkResult:
    """Interpret one HTTP answer from an SDK endpoint. Never raises on bad input."""
    h = _lower_keys(headers)
    body = bytes(body or b"")
    if status == 201:
        return _unwrap_stream(h, body, now_ms)
    version = _request_version(h)
    is_sdk = "x-inngest-sdk" in h
    if status == 401 and not is_sdk:
        return TransportError(
            f"{SIGNING_KEY_MISMATCH}: the app rejected the request signature (HTTP 401); "
            "check that the app and this server use the same signing key",
            request_version=version,
            reason="bad_signature",
        )
    if 200 <= status < 300:
        if not is_sdk:
            return TransportError(f"{NOT_AN_SDK} (HTTP {status} without an X-Inngest-SDK header)")
        if status == 200:
            try:
                output = orjson.loads(body) if body.strip() else None
            except orjson.JSONDecodeError as exc:
                return TransportError(f"the SDK answered 200 with a body that is not JSON: {exc}", request_version=version)
            return FunctionCompleted(output, version)
        if status == 206:
            return _ops(h, body, version)
        return TransportError(f"the SDK answered with unexpected status {status}", request_version=version)

    no_retry = _no_retry(h)
    retry_after = h.get("retry-after")
    retry_at = parse_retry_after(retry_after, now_ms) if retry_after else None
    # A Retry-After always means "retry then"; otherwise only X-Inngest-No-Retry: true stops retries.
    retriable = retry_at is not None or not no_retry
    return FunctionErrored(_error_body(body, status), retriable=retriable, retry_at_ms=retry_at, request_version=version,
                           status=status)


def _no_retry(headers: dict[str, str]) -> bool:
    value = headers.get("x-inngest-no-retry")
    return value is not None and value.strip().lower() == "true"


def _ops(headers: dict[str, str], body: bytes, version: int | None) -> SdkResult:
    no_retry = _no_retry(headers)
    try:
        value = orjson.loads(body)
        items = value if isinstance(value, list) else [value]  # a bare op object is legacy but legal
        return OpsReturned([parse_op(item, no_retry) for item in items], version)
    except (orjson.JSONDecodeError, ValueError) as exc:
        return TransportError(f"the SDK answered 206 with an unreadable op list: {exc}", request_version=version)


def _unwrap_stream(outer: dict[str, str], body: bytes, now_ms: int) -> SdkResult:
    """A streamed answer: keep-alive spaces, then {"status", "headers", "body"} (spec §2.13)."""
    try:
        wrapper = orjson.loads(body.lstrip())
        status = int(wrapper["status"])
        inner_headers = wrapper.get("headers") or {}
        if not isinstance(inner_headers, dict):
            raise TypeError("headers is not an object")
        inner = wrapper.get("body")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        if "x-inngest-sdk" not in outer:
            return TransportError(f"{NOT_AN_SDK} (HTTP 201 without an X-Inngest-SDK header)")
        return TransportError("the SDK streamed a response that could not be read (connection cut before the end?)")
    if status == 201:
        return TransportError("the SDK streamed a response that was itself a stream")
    # Python writes the body as a JSON string holding JSON: decode it once more.
    if isinstance(inner, str):
        try:
            orjson.loads(inner)
            raw = inner.encode()
        except orjson.JSONDecodeError:
            raw = orjson.dumps(inner)
    else:
        raw = orjson.dumps(inner)
    # Inner headers win; the outer ones fill gaps (an SDK error wrapper may lack X-Inngest-SDK).
    # A body that parses as the wrapper is itself proof it came from an SDK.
    merged = {**outer, **_lower_keys(inner_headers)}
    merged.setdefault("x-inngest-sdk", "streamed")
    return parse_sdk_response(status, merged, raw, now_ms)
