"""Clear JSON errors at the edge: every bad input gets a 4xx body saying what is wrong."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from lockgate.limits import DEFAULT as DEFAULT_LIMITS, json_depth_exceeds


class ApiError(Exception):
    def __init__(self, status: int, message: str, /, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def error_response(status: int, message: str, /, **extra: Any) -> Response:
    return json_response({"error": message, "status": status, **extra}, status=status)


async def read_body(request: Request, *, limit: int) -> bytes:
    """Read the request body, refusing anything larger than `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_large = int(declared) > limit
        except ValueError:
            raise ApiError(400, "invalid Content-Length header") from None
        if too_large:
            raise ApiError(413, f"request body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, *, limit: int, empty_ok: bool = False,
                    max_depth: int = DEFAULT_LIMITS.max_json_depth) -> Any:
    body = await read_body(request, limit=limit)
    if not body.strip():
        if empty_ok:
            return None
        raise ApiError(400, "the request body is empty; expected JSON")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if json_depth_exceeds(value, max_depth):
        raise ApiError(400, f"the JSON body nests objects or arrays deeper than {max_depth} levels "
                            "(LOCKGATE_MAX_JSON_DEPTH)")
    return value
