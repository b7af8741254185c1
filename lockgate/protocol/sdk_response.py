"""What an SDK answered, parsed into typed results (spec §2.3, §2.4, §2.13)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import orjson

from lockgate.protocol.timeparse import parse_retry_after

MAX_ERROR_TEXT = 2000


@dataclass(slots=True)
class Op:
    id: str
    op: str
    name: str | None = None
    display_name: str | None = None
    opts: dict[str, Any] = field(default_factory=dict)
    data: Any = None
    error: Any = None
    has_data: bool = False
    userland: dict[str, Any] | None = None
    no_retry: bool = False  # the response carried X-Inngest-No-Retry: true


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


@dataclass(slots=True)
class TransportError:
    message: str
    retriable: bool = True
    request_version: int | None = None


SdkResult = FunctionCompleted | OpsReturned | FunctionErrored | TransportError


class _Headers:
    def __init__(self, headers: Mapping[str, str]) -> None:
        self._h = {k.lower(): v for k, v in headers.items()}

    def get(self, name: str) -> str | None:
        return self._h.get(name.lower())


def _request_version(headers: _Headers) -> int | None:
    raw = headers.get("x-inngest-req-version")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _error_body(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode(errors="replace").strip()
        return {"name": "Error", "message": text[:MAX_ERROR_TEXT] or "the app answered with an empty error body"}
    if isinstance(value, dict):
        return value
    return {"name": "Error", "message": str(value)[:MAX_ERROR_TEXT]}


def to_error_memo(err: Any) -> dict[str, str]:
    """Error memos must be exactly {name, message, stack?} with string values (spec §2.2)."""
    if not isinstance(err, dict):
        return {"name": "Error", "message": str(err)}
    memo = {"name": str(err.get("name") or "Error"), "message": str(err.get("message") or "")}
    if err.get("stack") is not None:
        memo["stack"] = str(err["stack"])
    return memo


def _op(raw: Any, no_retry: bool) -> Op:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not isinstance(raw.get("op"), str):
        raise ValueError("each op needs string 'id' and 'op'")
    opts = raw.get("opts")
    return Op(
        id=raw["id"],
        op=raw["op"],
        name=raw.get("name"),
        display_name=raw.get("displayName") or raw.get("name"),
        opts=opts if isinstance(opts, dict) else {},
        data=raw.get("data"),
        error=raw.get("error"),
        has_data="data" in raw,
        userland=raw.get("userland"),
        no_retry=no_retry,
    )


def parse_sdk_response(status: int, headers: Mapping[str, str], body: bytes, now_ms: int) -> SdkResult:
    h = _Headers(headers)
    if status == 201:
        return _unwrap_stream(body, now_ms)
    version = _request_version(h)
    is_sdk = h.get("x-inngest-sdk") is not None
    if 200 <= status < 300 and not is_sdk:
        return TransportError("The response did not come from an Inngest SDK (no X-Inngest-SDK header)")
    if status == 401 and not is_sdk:
        return TransportError("the app rejected the request signature: check that both sides share the signing key")
    no_retry_header = h.get("x-inngest-no-retry")
    no_retry = no_retry_header is not None and no_retry_header.strip().lower() == "true"
    if status == 206:
        try:
            value = orjson.loads(body)
            items = value if isinstance(value, list) else [value]
            return OpsReturned([_op(item, no_retry) for item in items], version)
        except (orjson.JSONDecodeError, ValueError) as exc:
            return TransportError(f"the SDK answered 206 with an unreadable op list: {exc}")
    if status == 200:
        try:
            output = orjson.loads(body) if body.strip() else None
        except orjson.JSONDecodeError:
            return TransportError("the SDK answered 200 with a body that is not JSON")
        return FunctionCompleted(output, version)
    retry_after = h.get("retry-after")
    retry_at = parse_retry_after(retry_after, now_ms) if retry_after else None
    retriable = retry_at is not None or not no_retry
    return FunctionErrored(_error_body(body), retriable=retriable, retry_at_ms=retry_at, request_version=version)


def _unwrap_stream(body: bytes, now_ms: int) -> SdkResult:
    """A streamed answer: keep-alive spaces, then {"status", "headers", "body"}."""
    try:
        wrapper = orjson.loads(body.strip())
        status = int(wrapper["status"])
        inner_headers = {str(k): str(v) for k, v in (wrapper.get("headers") or {}).items()}
        inner = wrapper.get("body")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return TransportError("the SDK streamed a response that could not be read")
    if isinstance(inner, str):
        try:
            orjson.loads(inner)
            raw = inner.encode()
        except orjson.JSONDecodeError:
            raw = orjson.dumps(inner)
    else:
        raw = orjson.dumps(inner)
    inner_headers.setdefault("X-Inngest-SDK", "streamed")
    if status == 201:
        return TransportError("nested streaming responses are not allowed")
    return parse_sdk_response(status, inner_headers, raw, now_ms)
