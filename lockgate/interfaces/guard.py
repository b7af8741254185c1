"""The outermost layer of every request: refuse what no route can use, and never leak a crash.

- A NUL byte in the path or query (raw or `%00`) is refused with a 400: no id, name or URL
  holds one, and PostgreSQL text cannot store it.
- A declared `Content-Length` above the largest body any route accepts is refused with a 413
  before a byte of it is read (each route checks its own, smaller limit while streaming).
- Any exception a handler did not turn into an answer becomes a JSON 500 carrying a request
  id; the traceback goes to the log under that id, never to the client.
- Every response carries its `X-Request-Id` and the fixed `headers` given (the server kind).
"""

from __future__ import annotations

import logging
import os

import orjson

log = logging.getLogger("lockgate.http")


def _json_start(status: int, request_id: bytes, body: bytes, headers: list[tuple[bytes, bytes]]) -> dict:
    return {"type": "http.response.start", "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"x-request-id", request_id), *headers]}


def _has_nul(scope: dict) -> bool:
    raw_path = scope.get("raw_path") or scope.get("path", "").encode()
    for part in (raw_path, scope.get("query_string", b"")):
        if b"\x00" in part or b"%00" in part:
            return True
    return "\x00" in scope.get("path", "")


def _content_length(scope: dict) -> bytes | None:
    found = None
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            found = value  # the last one, if repeated
    return found


class EdgeGuard:
    def __init__(self, app, max_body_bytes: int, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.headers = list(headers or [])

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = os.urandom(8).hex()
        request_id_bytes = request_id.encode()
        started = False

        async def answer(status: int, message: str, **extra) -> None:
            body = orjson.dumps({"error": message, "status": status, "request_id": request_id, **extra})
            await send(_json_start(status, request_id_bytes, body, self.headers))
            await send({"type": "http.response.body", "body": body})

        if _has_nul(scope):
            return await answer(400, "the path or query holds a NUL byte (%00); ids, names and URLs never do")
        declared = _content_length(scope)
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await answer(413, f"request body is {int(declared)} bytes; the limit is {self.max_body_bytes} "
                                     "(LOCKGATE_MAX_REQUEST_BYTES and its siblings)")

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id_bytes), *self.headers]
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception:
            log.exception("request %s: %s %s failed with an unexpected error", request_id, scope.get("method"),
                          scope.get("path"))
            if not started:
                await answer(500, "internal error: the server log has the details under this request id")
